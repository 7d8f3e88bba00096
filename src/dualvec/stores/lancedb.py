"""LanceDB: one Lance table per collection, in the folder the URL names.

- The table is named after the collection, or by the URL's `?table=` when the application that
  made it named it otherwise (`lancedb:///data/lance?table=Files-v2`). dualvec creates a table
  only when the named one does not exist at all; one that exists but does not fit the spec is
  refused at open, saying what was found and what was expected, and is left as it was.
- Upsert is one `merge_insert` on the id column, which is declared the table's unenforced
  primary key: without that, two processes inserting the same new id both commit and the id
  appears twice (lancedb #3377); with it Lance sees the conflict and retries the merge.
- Ids: a string column for `id_type = "str"` (or "uuid"), an integer column for `id_type =
  "int"` (int64 when dualvec creates the table). Integer ids cross the API as decimal strings
  and are written back as integers of the column's own type.
- Arrow nulls in metadata columns read back as missing values, and are written for missing
  values of optional fields. Lance's filters follow SQL: a null matches no comparison, `!=` and
  `NOT IN` included, with or without a BTree or Bitmap scalar index (measured on lancedb 0.40,
  see tests), which is dualvec's rule for missing values, so no extra terms are needed.
- The connection re-reads the latest version on every call (`read_consistency_interval=0`),
  so a store sees what other processes committed without being reopened.
- Filters, gets and deletes are `lancedb.expr` trees: user values stay typed literals and are
  never pasted into SQL text.
- The spec is kept in the id column's field metadata, so it travels with the table. A table
  made without dualvec (wrapped through the spec's `*_source` names) has its columns checked
  and is bound on first open.
- Search is exact until the vector column gets an ANN index in the spec's metric (an index in
  another metric is ignored by LanceDB, which then scans); from then on `exact` is False.
- Not after `fork()`: a store opened before the process forked refuses every call in the child
  (`StoreError`). LanceDB restarts its runtime in a forked child, but calls there still crashed
  or hung in 7 of 16 children here (lancedb 0.40), new handles or not. Open LanceDB stores
  after forking (gunicorn: build the Migration in each worker, not under ``--preload``).
"""

from __future__ import annotations

import operator
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from functools import reduce
from pathlib import Path
from typing import Any, cast

import lancedb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
from lancedb.expr import Expr, col, lit
from lancedb.table import LanceTable

from dualvec.errors import ConfigError, StoreError, ValidationError
from dualvec.filters import Condition
from dualvec.records import Hit, Metadata, Record, Vector
from dualvec.spec import CollectionSpec, FieldType, Metric, check_same_spec
from dualvec.stores.base import BaseStore

__all__ = ["LanceDBStore", "table_option"]

_SPEC_KEY = "dualvec.spec"
# Lance's field-metadata flag for an unenforced primary key (what set_unenforced_primary_key writes).
_PRIMARY_KEY = "lance-schema:unenforced-primary-key"
# PQ and SQ indexes rank by compressed vectors. Re-ranking k x _REFINE_FACTOR candidates on the
# full vectors keeps recall high and makes `_distance` exact, as the one distance scale needs.
_REFINE_FACTOR = 10
# Columns LanceDB adds to results: a source with one of these names would be shadowed.
_LANCE_COLUMNS = frozenset({"_distance", "_rowid", "_rowaddr", "_score", "_relevance_score"})
# What LanceDB accepts as a table name (its own check allows a leading '.'; dualvec does not,
# so no name can be '.', '..' or hidden). A table is the folder NAME.lance: 249 + 6 = 255 bytes,
# the usual file-name limit.
_TABLE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,248}$")
# How long a table folder that LanceDB cannot open yet may take to get its first version (another
# process creating the table) before it is taken as damaged.
_CREATE_WAIT_SECONDS = 1.0

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


def table_option(value: str | None) -> str | None:
    """A store URL's `?table=`, refused unless LanceDB can hold it as one folder in the store's."""
    if value is None or _TABLE_NAME.match(value):
        return value
    raise ConfigError(
        f"lancedb URL option table={value!r}: a LanceDB table name is 1-249 ASCII letters, digits, "
        "'_', '-' or '.', not starting with '.'"
    )


def conditions_to_expr(spec: CollectionSpec, conditions: list[Condition]) -> Expr | None:
    """AND-ed conditions as an expression tree; values become typed literals, never SQL text.

    No term for missing values: Lance evaluates a null like SQL does (`NULL != 'en'` and
    `NULL NOT IN (...)` are not true), so rows lacking the field already match nothing."""
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
        root: npt.NDArray[np.float64] = np.sqrt(np.maximum(native, 0.0))  # numpy 2.2's stubs say Any
        return root
    if metric == "dot":
        return native - 1.0
    return np.clip(native, 0.0, 2.0)


def _narrow_bounds(arrow_type: pa.DataType) -> tuple[float, float] | None:
    """The range of a numeric column narrower than dualvec's int64 and float64 (int8, uint64,
    float32, ...), which validation does not check: Arrow raises on an int out of range and
    turns a float out of range into infinity. None for any other column."""
    if pa.types.is_integer(arrow_type) and arrow_type != pa.int64():
        info = np.iinfo(_numpy_dtype(arrow_type))
        return (int(info.min), int(info.max))
    if pa.types.is_floating(arrow_type) and arrow_type != pa.float64():
        largest = float(np.finfo(_numpy_dtype(arrow_type)).max)
        return (-largest, largest)
    return None


def _numpy_dtype(arrow_type: pa.DataType) -> np.dtype[Any]:
    """The NumPy dtype of an Arrow integer or float type, from its width (pyarrow's own
    `to_pandas_dtype` needs pandas installed in some versions, which dualvec does not need)."""
    kind = "f" if pa.types.is_floating(arrow_type) else "i" if pa.types.is_signed_integer(arrow_type) else "u"
    return np.dtype(f"{kind}{arrow_type.bit_width // 8}")


def _quoted(column: str) -> str:
    """A column in Lance's SQL text. Only for names the spec checked (ASCII letters, digits,
    '_'), never for values; backticks keep words like `year` from reading as keywords."""
    return f"`{column}`"


class LanceDBStore(BaseStore):
    """LanceDB store; metrics cosine, l2 and dot. LanceDB holds no lock or file open between
    calls, so `close()` has nothing to release."""

    backend = "lancedb"

    def __init__(
        self,
        path: str | Path,
        spec: CollectionSpec,
        *,
        optimize_every: int = 200,
        table: str | None = None,
    ) -> None:
        super().__init__(spec)
        self.path = Path(path)
        # LanceDB's own name for the table: the collection's, or the URL's `?table=`.
        self.table_name = table_option(table) or spec.name
        self._where = f"LanceDB table {self.table_name!r} in {str(self.path)!r}"
        self._fields = [(name, spec.source_of(name)) for name in spec.fields]
        self._columns = [spec.id_source, spec.vector_source, *(source for _, source in self._fields)]
        clash = sorted(_LANCE_COLUMNS.intersection(self._columns))
        if clash:
            raise ConfigError(f"collection {spec.name!r}: LanceDB reserves the column name(s) {clash}")
        self._db = self._guard("open", self._connect)
        self._table: LanceTable = self._guard("open", self._open_table)
        self._guard("open", self._bind)
        id_type = self._table.schema.field(spec.id_source).type
        # For an integer id column: the range its type holds. An id outside it cannot be stored,
        # and cannot be there to get or delete.
        self._id_range: tuple[int, int] | None = None
        if pa.types.is_integer(id_type):
            info = np.iinfo(_numpy_dtype(id_type))
            self._id_range = (int(info.min), int(info.max))
        self.exact = not self._guard("open", self._has_ann_index)
        self._optimize_every = optimize_every
        self._writes = 0
        self._opened_by = os.getpid()

    @classmethod
    def from_location(
        cls,
        location: str,
        spec: CollectionSpec,
        optimize_every: str | None = None,
        table: str | None = None,
    ) -> LanceDBStore:
        """`?optimize_every=N`: compact after every N writes (0: never; default 200).
        `?table=NAME`: the Lance table's name, when it is not the collection's."""
        try:
            every = 200 if optimize_every is None else int(optimize_every)
        except ValueError:
            every = -1
        if every < 0:
            raise ConfigError(
                f"lancedb URL option optimize_every={optimize_every!r}: expected a whole number"
            )
        return cls(location, spec, optimize_every=every, table=table)

    def _connect(self) -> lancedb.DBConnection:
        return lancedb.connect(self.path, read_consistency_interval=timedelta(0))

    def _reopen(self) -> None:
        raise StoreError(
            f"{self._where} was opened by process {self._opened_by}, which this process "
            f"({os.getpid()}) was forked from, and LanceDB is not safe to use after fork() (its "
            "runtime crashed or hung in forked children, lancedb 0.40). Open the store after "
            "forking: gunicorn without --preload, or build the Migration in each worker"
        )

    def _wrote(self) -> None:
        """Every write adds a version and small files, and a search reads them all: without
        compaction a table under steady small writes gets slower by the minute (seen here: 10 ms
        to 90 ms in two minutes at 3,000 rows). Versions younger than an hour are kept, so a
        scan or reader pinned to one keeps working."""
        self._writes += 1
        if self._optimize_every and self._writes % self._optimize_every == 0:
            self._table.optimize(cleanup_older_than=timedelta(hours=1))

    def _open_table(self) -> LanceTable:
        """The named table, created only if no table of that name exists. A new one is created
        bound, in one atomic commit: its id column carries the primary key flag and the spec,
        so processes racing to create it cannot leave it half set up."""
        identity = {_PRIMARY_KEY: "true", _SPEC_KEY: self.spec.model_dump_json()}
        id_type = pa.int64() if self.spec.id_type == "int" else pa.string()
        schema = pa.schema(
            [
                pa.field(self.spec.id_source, id_type, nullable=False, metadata=identity),
                pa.field(self.spec.vector_source, pa.list_(pa.float32(), self.spec.dim), nullable=False),
                *(
                    pa.field(source, _ARROW_TYPES[self.spec.fields[name].type])
                    for name, source in self._fields
                ),
            ]
        )
        table = self._try_open()
        if table is not None:
            return table
        folder = self.path / f"{self.table_name}.lance"
        if not folder.exists():
            try:
                return cast(LanceTable, self._db.create_table(self.table_name, schema=schema))
            except ValueError:  # another process is creating it
                pass
        # A folder LanceDB reads as no table: being created by another process right now, or
        # damaged (no committed version). create_table would write a new table over it, so wait
        # for the other process's commit, else refuse.
        return self._try_open() or self._wait_for_table(folder)

    def _try_open(self) -> LanceTable | None:
        """The named table, or None if LanceDB finds none; any other failure raises."""
        try:
            return cast(LanceTable, self._db.open_table(self.table_name))
        except ValueError as exc:
            if "was not found" not in str(exc):
                raise
            return None

    def _wait_for_table(self, folder: Path) -> LanceTable:
        deadline = time.monotonic() + _CREATE_WAIT_SECONDS
        while time.monotonic() < deadline:
            time.sleep(0.05)
            table = self._try_open()
            if table is not None:
                return table
        raise ConfigError(
            f"{self._where}: the folder {str(folder)!r} exists but holds no table LanceDB can open "
            "(no committed version); dualvec will not create a table over it: restore it from a "
            "backup, or name another table with ?table="
        )

    def _bind(self) -> None:
        """Check the table against the spec; bind a table made without dualvec.

        Every check runs before the first change, so a refused table is left exactly as it was
        and opens once the spec is fixed."""
        schema = self._table.schema
        id_source = self.spec.id_source
        metadata = (schema.field(id_source).metadata or {}) if id_source in schema.names else {}
        bound = _SPEC_KEY.encode() in metadata
        if bound:
            check_same_spec(CollectionSpec.model_validate_json(metadata[_SPEC_KEY.encode()]), self.spec)
        self._check_columns(schema)
        if bound:
            return
        self._check_nulls(schema)
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
        """Refuse a table whose columns cannot hold what the spec declares, naming the column,
        what it is and what the spec needs."""
        where = self._where

        def column_type(source: str, wanted: str, accepts: Callable[[pa.DataType], bool]) -> None:
            if source not in schema.names:
                raise ConfigError(
                    f"{where} has no column {source!r} (it has {schema.names}); "
                    "map names with the spec's id_source, vector_source or a field's source"
                )
            found = schema.field(source).type
            if not accepts(found):
                raise ConfigError(f"{where}: column {source!r} is {found}, the spec needs {wanted}")

        self._check_id_column(schema)
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
        # merge_insert refuses any write, update or insert, whose source lacks a non-nullable
        # column: a table with one the spec does not name could never be written.
        unmapped = [f.name for f in schema if f.name not in self._columns and not f.nullable]
        if unmapped:
            raise ConfigError(
                f"{where}: column(s) {unmapped} cannot be null and the spec does not name them, so "
                "dualvec could write no record; declare each as a field (e.g. "
                f'{unmapped[0]} = {{ type = "str", filterable = false }}) to write its values'
            )

    def _check_id_column(self, schema: pa.Schema) -> None:
        """The id column's type must be the one the spec's `id_type` reads: integers are
        handed out as decimal strings only when the config says so, so that the target store
        keys them the same way."""
        id_source, id_type = self.spec.id_source, self.spec.id_type
        if id_source not in schema.names:
            raise ConfigError(
                f"{self._where} has no column {id_source!r} (it has {schema.names}); "
                "map names with the spec's id_source, vector_source or a field's source"
            )
        found = schema.field(id_source).type
        if pa.types.is_integer(found):
            if id_type != "int":
                raise ConfigError(
                    f"{self._where}: id column {id_source!r} is {found} (integer ids), but the "
                    f'collection\'s id_type is "{id_type}"; set id_type = "int" in the '
                    "collection's config"
                )
        elif _ACCEPTS["str"](found):
            if id_type == "int":
                raise ConfigError(
                    f"{self._where}: id column {id_source!r} is {found}, but the collection's "
                    'id_type is "int", which needs an integer column; set id_type = "str" in '
                    "the collection's config"
                )
        else:
            raise ConfigError(
                f"{self._where}: id column {id_source!r} is {found}; dualvec needs a string "
                'column (id_type "str" or "uuid") or an integer one (id_type "int")'
            )

    def _check_nulls(self, schema: pa.Schema) -> None:
        """Refuse, before binding, rows that dualvec could not read back as valid records: a
        null id (nothing to address the row by) or a null in a field the spec requires. Only
        nullable columns are counted, once, when the table is first bound."""
        id_source = self.spec.id_source
        if schema.field(id_source).nullable:
            missing = self._table.count_rows(f"{_quoted(id_source)} IS NULL")
            if missing:
                raise ConfigError(
                    f"{self._where}: {missing} row(s) have no id (column {id_source!r} is null); "
                    "dualvec addresses every row by its id: give those rows ids, or delete them, "
                    "with your own client first"
                )
        for name, source in self._fields:
            if self.spec.may_be_missing(name) or not schema.field(source).nullable:
                continue
            missing = self._table.count_rows(f"{_quoted(source)} IS NULL")
            if missing:
                raise ConfigError(
                    f"{self._where}: column {source!r} is null in {missing} row(s), but field "
                    f"{name!r} is required; declare it optional = true in the collection's "
                    "config (a missing value then matches no filter)"
                )

    def _has_ann_index(self) -> bool:
        for index in self._table.list_indices():
            if self.spec.vector_source in index.columns:
                metric = (index.index_details or {}).get("metric_type")
                if metric is None or str(metric).lower() == self.spec.metric:
                    return True
        return False

    def _ids_out(self, column: pa.ChunkedArray) -> list[str]:
        """The id column's values as the caller's ids: integers as their decimal strings."""
        values = column.to_pylist()
        return [str(v) for v in values] if self._id_range is not None else values

    def _ids_in(self, ids: Sequence[str]) -> list[Any]:
        """Ids as the id column holds them, for filters; integers its type cannot hold are left
        out, as no row can have them."""
        if self._id_range is None:
            return list(ids)
        low, high = self._id_range
        return [n for n in map(int, ids) if low <= n <= high]

    def _records(self, table: pa.Table) -> list[Record]:
        vectors = table.column(self.spec.vector_source).combine_chunks()
        if vectors.null_count:
            raise StoreError(f"column {self.spec.vector_source!r} holds rows with no vector")
        matrix = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        matrix = matrix.reshape(-1, self.spec.dim)
        ids = self._ids_out(table.column(self.spec.id_source))
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

    def _id_array(self, records: list[Record], field: pa.Field) -> pa.Array:
        if self._id_range is None:
            return pa.array([r.id for r in records], field.type)
        low, high = self._id_range
        for position, r in enumerate(records):
            if not low <= int(r.id) <= high:
                raise ValidationError(
                    f"record {position} (id {r.id!r}): {self._where} keeps ids in column "
                    f"{field.name!r} of type {field.type}, which holds {low} to {high}"
                )
        return pa.array([int(r.id) for r in records], field.type)

    def _field_array(self, records: list[Record], name: str, field: pa.Field) -> pa.Array:
        """One field's values in its column's type. A value the column cannot hold (none for a
        non-nullable column, or out of a narrow type's range) is refused before anything is
        written; columns of dualvec's own types (nullable, 64-bit) need no check."""
        values = [r.metadata.get(name) for r in records]
        bounds = _narrow_bounds(field.type)
        if field.nullable and bounds is None:
            return pa.array(values, field.type)
        for position, (r, value) in enumerate(zip(records, values, strict=True)):
            if value is None:
                if field.nullable:
                    continue
                problem = "has no value"
            elif bounds is None or bounds[0] <= value <= bounds[1]:
                continue
            else:
                problem = f"is {value!r}"
            raise ValidationError(
                f"record {position} (id {r.id!r}): metadata field {name!r} {problem}, which column "
                f"{field.name!r} ({field.type}{'' if field.nullable else ' not null'}) of "
                f"{self._where} cannot hold"
            )
        return pa.array(values, field.type)

    def _upsert(self, records: list[Record]) -> None:
        # Arrays in the table's own types, wrapped tables included. The id field must be non-null
        # as in the table: Lance refuses to merge on a primary key from a nullable column.
        schema = pa.schema([self._table.schema.field(c) for c in self._columns])
        flat = pa.array(np.stack([r.vector for r in records]).ravel())
        arrays = [
            self._id_array(records, schema.field(0)),
            pa.FixedSizeListArray.from_arrays(flat, self.spec.dim).cast(schema.field(1).type),
            *(self._field_array(records, name, schema.field(source)) for name, source in self._fields),
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
        keys = self._ids_in(ids)
        if keys:
            self._table.delete(col(self.spec.id_source).isin(lit(k) for k in keys))
            self._wrote()

    def _get(self, ids: list[str]) -> list[Record]:
        keys = self._ids_in(ids)
        if not keys:
            return []
        query = self._table.search().where(col(self.spec.id_source).isin(lit(k) for k in keys))
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
        ids = self._ids_out(result.column(self.spec.id_source))
        return [Hit(i, float(d), meta) for i, d, meta in zip(ids, dist, self._metadata(result), strict=True)]

    def _count(self) -> int:
        return self._table.count_rows()

    def _scan(self, batch_size: int) -> Iterator[list[Record]]:
        # One pinned version, read by row offset: a consistent snapshot whatever writers do
        # meanwhile, in memory bounded by batch_size. (A streamed query, `to_batches`, reads many
        # fragments ahead and held about 3/4 of a 600 MB table in memory at once.)
        snapshot = self._db.open_table(self.table_name, version=self._table.version)
        total = snapshot.count_rows()
        for start in range(0, total, batch_size):
            offsets = list(range(start, min(start + batch_size, total)))
            yield self._records(snapshot.take_offsets(offsets).select(self._columns).to_arrow())
