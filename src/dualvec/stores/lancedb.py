"""LanceDB: one Lance table per collection, in the folder the URL names.

- Upsert is one `merge_insert` on the id column, which is declared the table's unenforced
  primary key: without that, two processes inserting the same new id both commit and the id
  appears twice (lancedb #3377); with it Lance sees the conflict and retries the merge.
- The connection re-reads the latest version on every call (`read_consistency_interval=0`),
  so a store sees what other processes committed without being reopened.
- Filters, gets and deletes are `lancedb.expr` trees: user values stay typed literals and are
  never pasted into SQL text.
- The spec is kept in the id column's field metadata, so it travels with the table. A table
  made without dualvec (wrapped through the spec's `*_source` names) has its columns checked
  and is bound on first open.
- Search is exact until the vector column gets an ANN index in the spec's metric (an index in
  another metric is ignored by LanceDB, which then scans); from then on `exact` is False.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from datetime import timedelta
from functools import reduce
from pathlib import Path
from typing import cast

import lancedb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
from lancedb.expr import Expr, col, lit
from lancedb.table import LanceTable

from dualvec.errors import ConfigError, StoreError
from dualvec.filters import Condition
from dualvec.records import Hit, Metadata, Record, Vector
from dualvec.spec import CollectionSpec, FieldType, Metric, check_same_spec
from dualvec.stores.base import BaseStore

__all__ = ["LanceDBStore"]

_SPEC_KEY = "dualvec.spec"
# Lance's field-metadata flag for an unenforced primary key (what set_unenforced_primary_key writes).
_PRIMARY_KEY = "lance-schema:unenforced-primary-key"
# PQ and SQ indexes rank by compressed vectors. Re-ranking k x _REFINE_FACTOR candidates on the
# full vectors keeps recall high and makes `_distance` exact, as the one distance scale needs.
_REFINE_FACTOR = 10
# Columns LanceDB adds to results: a source with one of these names would be shadowed.
_LANCE_COLUMNS = frozenset({"_distance", "_rowid", "_rowaddr", "_score", "_relevance_score"})

_ARROW_TYPES: dict[FieldType, pa.DataType] = {
    "str": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
}
# What an existing table's column may be for each field type; writes cast to the column's type.
_ACCEPTS: dict[FieldType, Callable[[pa.DataType], bool]] = {
    "str": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
    "int": pa.types.is_integer,
    "float": pa.types.is_floating,
    "bool": pa.types.is_boolean,
}
_COMPARE: dict[str, Callable[[Expr, Expr], Expr]] = {
    "$eq": Expr.eq,
    "$ne": Expr.ne,
    "$gt": Expr.gt,
    "$gte": Expr.gte,
    "$lt": Expr.lt,
    "$lte": Expr.lte,
}


def conditions_to_expr(spec: CollectionSpec, conditions: list[Condition]) -> Expr | None:
    """AND-ed conditions as an expression tree; values become typed literals, never SQL text."""
    terms = []
    for c in conditions:
        column = col(spec.source_of(c.field))
        if c.op in ("$in", "$nin"):
            member = column.isin(lit(v) for v in c.value)
            terms.append(~member if c.op == "$nin" else member)
        else:
            terms.append(_COMPARE[c.op](column, lit(c.value)))
    return reduce(operator.and_, terms) if terms else None


def to_distance(metric: Metric, native: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """LanceDB's `_distance` on dualvec's scale: its l2 is squared and its dot is 1 - a.b."""
    if metric == "l2":
        return np.sqrt(np.maximum(native, 0.0))
    if metric == "dot":
        return native - 1.0
    return np.clip(native, 0.0, 2.0)


class LanceDBStore(BaseStore):
    """LanceDB store; metrics cosine, l2 and dot. LanceDB holds no lock or file open between
    calls, so `close()` has nothing to release."""

    backend = "lancedb"

    def __init__(self, path: str | Path, spec: CollectionSpec, *, optimize_every: int = 200) -> None:
        super().__init__(spec)
        self.path = Path(path)
        self._fields = [(name, spec.source_of(name)) for name in spec.fields]
        self._columns = [spec.id_source, spec.vector_source, *(source for _, source in self._fields)]
        clash = sorted(_LANCE_COLUMNS.intersection(self._columns))
        if clash:
            raise ConfigError(f"collection {spec.name!r}: LanceDB reserves the column name(s) {clash}")
        self._db = self._guard("open", lancedb.connect, self.path, read_consistency_interval=timedelta(0))
        self._table: LanceTable = self._guard("open", self._open_table)
        self._guard("open", self._bind)
        self.exact = not self._guard("open", self._has_ann_index)
        self._optimize_every = optimize_every
        self._writes = 0

    @classmethod
    def from_location(
        cls, location: str, spec: CollectionSpec, optimize_every: str | None = None
    ) -> LanceDBStore:
        """`?optimize_every=N`: compact after every N writes (0: never; default 200)."""
        try:
            every = 200 if optimize_every is None else int(optimize_every)
        except ValueError:
            every = -1
        if every < 0:
            raise ConfigError(
                f"lancedb URL option optimize_every={optimize_every!r}: expected a whole number"
            )
        return cls(location, spec, optimize_every=every)

    def _wrote(self) -> None:
        """Every write adds a version and small files, and a search reads them all: without
        compaction a table under steady small writes gets slower by the minute (seen here: 10 ms
        to 90 ms in two minutes at 3,000 rows). Versions younger than an hour are kept, so a
        scan or reader pinned to one keeps working."""
        self._writes += 1
        if self._optimize_every and self._writes % self._optimize_every == 0:
            self._table.optimize(cleanup_older_than=timedelta(hours=1))

    def _open_table(self) -> LanceTable:
        """The collection's table. A new one is created bound, in one atomic commit: its id column
        carries the primary key flag and the spec, so processes racing to create it cannot
        leave it half set up."""
        identity = {_PRIMARY_KEY: "true", _SPEC_KEY: self.spec.model_dump_json()}
        schema = pa.schema(
            [
                pa.field(self.spec.id_source, pa.string(), nullable=False, metadata=identity),
                pa.field(self.spec.vector_source, pa.list_(pa.float32(), self.spec.dim), nullable=False),
                *(
                    pa.field(source, _ARROW_TYPES[self.spec.fields[name].type])
                    for name, source in self._fields
                ),
            ]
        )
        try:
            table = self._db.open_table(self.spec.name)
        except ValueError:  # not found
            try:
                table = self._db.create_table(self.spec.name, schema=schema)
            except ValueError:  # another process created it first
                table = self._db.open_table(self.spec.name)
        return cast(LanceTable, table)  # what a local connection opens

    def _bind(self) -> None:
        """Compare with the spec the table holds; bind a table made without dualvec."""
        schema = self._table.schema
        id_source = self.spec.id_source
        metadata = (schema.field(id_source).metadata or {}) if id_source in schema.names else {}
        if _SPEC_KEY.encode() in metadata:
            check_same_spec(CollectionSpec.model_validate_json(metadata[_SPEC_KEY.encode()]), self.spec)
            return
        self._check_columns(schema)
        # The key is what stops concurrent upserts duplicating ids. Lance wants it non-null and
        # refuses to set it twice.
        if not any(key.startswith(_PRIMARY_KEY.encode()) for key in metadata):
            if schema.field(id_source).nullable:
                # lancedb 0.40 annotates each alteration as Iterable[dict]; it is one dict.
                alteration = {"path": id_source, "nullable": False}
                self._table.alter_columns(alteration)  # type: ignore[arg-type]
            self._table.set_unenforced_primary_key(id_source)
        self._table.update_field_metadata(
            {"path": id_source, "metadata": {_SPEC_KEY: self.spec.model_dump_json()}}
        )

    def _check_columns(self, schema: pa.Schema) -> None:
        """Refuse a table whose columns cannot hold what the spec declares, naming the column."""
        where = f"LanceDB table {self.spec.name!r} in {str(self.path)!r}"

        def column_type(source: str, wanted: str, accepts: Callable[[pa.DataType], bool]) -> None:
            if source not in schema.names:
                raise ConfigError(
                    f"{where} has no column {source!r} (it has {schema.names}); "
                    "map names with the spec's id_source, vector_source or a field's source"
                )
            found = schema.field(source).type
            if not accepts(found):
                raise ConfigError(f"{where}: column {source!r} is {found}, the spec needs {wanted}")

        column_type(self.spec.id_source, "a string", _ACCEPTS["str"])
        column_type(
            self.spec.vector_source,
            f"fixed_size_list<float>[{self.spec.dim}]",
            lambda t: (
                pa.types.is_fixed_size_list(t)
                and t.list_size == self.spec.dim
                and pa.types.is_floating(t.value_type)
            ),
        )
        for name, source in self._fields:
            field_type = self.spec.fields[name].type
            column_type(source, f"{field_type} for field {name!r}", _ACCEPTS[field_type])

    def _has_ann_index(self) -> bool:
        for index in self._table.list_indices():
            if self.spec.vector_source in index.columns:
                metric = (index.index_details or {}).get("metric_type")
                if metric is None or str(metric).lower() == self.spec.metric:
                    return True
        return False

    def _records(self, table: pa.Table) -> list[Record]:
        vectors = table.column(self.spec.vector_source).combine_chunks()
        if vectors.null_count:
            raise StoreError(f"column {self.spec.vector_source!r} holds rows with no vector")
        matrix = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        matrix = matrix.reshape(-1, self.spec.dim)
        ids = table.column(self.spec.id_source).to_pylist()
        metadata = self._metadata(table)
        return [
            Record(i, matrix[row].copy(), meta)
            for row, (i, meta) in enumerate(zip(ids, metadata, strict=True))
        ]

    def _metadata(self, table: pa.Table) -> list[Metadata]:
        """Each row's declared fields by their spec names, leaving out unset (null) ones."""
        columns = [(name, table.column(source).to_pylist()) for name, source in self._fields]
        return [
            {name: values[row] for name, values in columns if values[row] is not None}
            for row in range(table.num_rows)
        ]

    def _upsert(self, records: list[Record]) -> None:
        # Arrays in the table's own types, wrapped tables included. The id field must be non-null
        # as in the table: Lance refuses to merge on a primary key from a nullable column.
        schema = pa.schema([self._table.schema.field(c) for c in self._columns])
        flat = pa.array(np.stack([r.vector for r in records]).ravel())
        arrays = [
            pa.array([r.id for r in records], schema.field(0).type),
            pa.FixedSizeListArray.from_arrays(flat, self.spec.dim).cast(schema.field(1).type),
            *(
                pa.array([r.metadata.get(name) for r in records], schema.field(source).type)
                for name, source in self._fields
            ),
        ]
        data = pa.Table.from_arrays(arrays, schema=schema)
        (
            self._table.merge_insert(self.spec.id_source)
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(data)
        )
        self._wrote()

    def _delete(self, ids: list[str]) -> None:
        self._table.delete(col(self.spec.id_source).isin(ids))
        self._wrote()

    def _get(self, ids: list[str]) -> list[Record]:
        query = self._table.search().where(col(self.spec.id_source).isin(ids))
        found = {r.id: r for r in self._records(query.select(self._columns).limit(None).to_arrow())}
        return [found[i] for i in ids if i in found]

    def _search(self, query: Vector, k: int, conditions: list[Condition]) -> list[Hit]:
        # Checked on every search: another process may have built or dropped an index.
        self.exact = not self._has_ann_index()
        search = (
            self._table.search(query, vector_column_name=self.spec.vector_source)
            .distance_type(self.spec.metric)
            .select([self.spec.id_source, *(source for _, source in self._fields), "_distance"])
            .limit(k)
        )
        if not self.exact:
            search = search.refine_factor(_REFINE_FACTOR)
        where = conditions_to_expr(self.spec, conditions)
        if where is not None:
            search = search.where(where)
        result = search.to_arrow()
        native = result.column("_distance").to_numpy().astype(np.float64)
        dist = to_distance(self.spec.metric, native)
        ids = result.column(self.spec.id_source).to_pylist()
        return [Hit(i, float(d), meta) for i, d, meta in zip(ids, dist, self._metadata(result), strict=True)]

    def _count(self) -> int:
        return self._table.count_rows()

    def _scan(self, batch_size: int) -> Iterator[list[Record]]:
        # One pinned version, read by row offset: a consistent snapshot whatever writers do
        # meanwhile, in memory bounded by batch_size. (A streamed query, `to_batches`, reads many
        # fragments ahead and held about 3/4 of a 600 MB table in memory at once.)
        snapshot = self._db.open_table(self.spec.name, version=self._table.version)
        total = snapshot.count_rows()
        for start in range(0, total, batch_size):
            offsets = list(range(start, min(start + batch_size, total)))
            yield self._records(snapshot.take_offsets(offsets).select(self._columns).to_arrow())
