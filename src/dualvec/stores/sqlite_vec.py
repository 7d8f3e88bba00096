"""The migration target: one sqlite-vec `vec0` table per collection.

Filterable fields become vec0 metadata columns (filtered during the KNN scan), stored-only
fields auxiliary columns. vec0 has no upsert, so a batch deletes the ids it already holds and
inserts the batch, inside one transaction that rolls back whole on any error.

vec0 metadata columns cannot hold NULL (sqlite-vec #141). An optional filterable field gets a
second metadata column, ``<source>__present``: a missing value is stored as the type's zero
with the flag off, reads give it back as missing, and every filter on the field also requires
the flag, so a missing value matches no condition, as in the other stores.

A filterable str, int or bool field declared ``partition = true`` becomes a vec0 ``partition
key`` column: vec0 keeps each value's vectors in chunks of their own, so a search filtered on
it (``tenant = ?``) reads only that partition. Suits a few large partitions: each value holds
at least one chunk (1024 vectors' worth of space).

This class is the exact layout (vec0 scans the float vectors). Opened with ``quantize`` or
``matryoshka_dim`` (URL options, or the collection's TOML keys), `from_location` returns a
`QuantizedSqliteVecStore` instead (`dualvec.stores.sqlite_vec_quantized`): a two-step search
over a coarse copy. Which layout a collection has is recorded when it is created; opening it
with another is refused, or converted in place with ``rebuild=true``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

from dualvec.errors import ConfigError
from dualvec.filters import Condition
from dualvec.records import Hit, Record, Vector
from dualvec.spec import CollectionSpec, FieldType, Metric
from dualvec.sqlite_driver import BUSY_TIMEOUT_SECONDS, write_transaction
from dualvec.stores.quantize import (
    INDEX_TABLE,
    IndexOptions,
    Quantize,
    describe_layout,
    index_ddl,
    stored_layout,
)
from dualvec.stores.sqlite_common import bind_spec, parse_seconds, quote, table_option
from dualvec.stores.sqlite_layout import foreign_table
from dualvec.stores.sqlite_table import COLUMN_TYPES, SqliteTableStore, conditions_to_sql

__all__ = ["SqliteVecStore", "presence_column", "records_table"]

V = TypeVar("V", bound="SqliteVecStore")

_VEC0_TYPES: dict[FieldType, str] = {"str": "text", "int": "integer", "float": "float", "bool": "boolean"}
_PARTITION_TYPES: dict[FieldType, str] = {"str": "text", "int": "integer", "bool": "integer"}
_MISSING: dict[FieldType, Any] = {"str": "", "int": 0, "float": 0.0, "bool": False}
_ID_CHUNK = 500
_MAX_METADATA_COLUMNS = 16  # vec0's own limits
_MAX_PARTITION_COLUMNS = 4
_REBUILD_BATCH = 1000


def presence_column(source: str) -> str:
    """The flag column that says whether an optional filterable field is set."""
    return f"{source}__present"


def records_table(table: str) -> str:
    """The plain table a quantized collection keeps its records in (the float vectors, the
    truth that get, scan and rescoring read; and the staging table of a rebuild)."""
    return f"{table}__records"


def is_partition(spec: CollectionSpec, name: str) -> bool:
    """Whether a field is declared a vec0 partition key (`FieldSpec.partition`)."""
    return spec.fields[name].partition


def _flag_option(option: str, value: str | None) -> bool:
    if value is None or value.lower() in ("", "0", "false", "no"):
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    raise ConfigError(f"store URL option {option}={value!r}: expected true or false")


class SqliteVecStore(SqliteTableStore):
    """sqlite-vec store. Exact KNN; metrics cosine and l2 (vec0 has no inner product)."""

    backend = "sqlite-vec"
    metrics: ClassVar[frozenset[Metric]] = frozenset({"cosine", "l2"})
    loads_vec = True
    separate_reader = True
    # Whether stored-only fields live in the vec0 table (as auxiliary columns).
    aux_in_vec0: ClassVar[bool] = True

    def __init__(
        self,
        path: str | Path,
        spec: CollectionSpec,
        *,
        busy_timeout: float = BUSY_TIMEOUT_SECONDS,
        table: str | None = None,
        index: IndexOptions | None = None,
        rebuild: bool = False,
    ) -> None:
        self.index = index or IndexOptions()
        self._rebuild_on_open = rebuild
        super().__init__(path, spec, busy_timeout=busy_timeout, table=table)

    @classmethod
    def from_location(
        cls: type[V],
        location: str,
        spec: CollectionSpec,
        busy_timeout: str | None = None,
        table: str | None = None,
        quantize: str | None = None,
        oversample: str | None = None,
        matryoshka_dim: str | None = None,
        rebuild: str | None = None,
    ) -> V:
        """URL options beyond the SQLite ones (`busy_timeout`, `table`): `quantize=bit|int8`
        with `oversample=N` (candidates per result, default 8), `matryoshka_dim=N`, and
        `rebuild=true` to convert a collection built with another layout in place."""
        index = IndexOptions.parse(spec, quantize, oversample, matryoshka_dim)
        store_cls: type[SqliteVecStore] = cls if index.exact else _quantized_class()
        store = store_cls(
            location,
            spec,
            busy_timeout=parse_seconds("busy_timeout", busy_timeout),
            table=table_option(table),
            index=index,
            rebuild=_flag_option("rebuild", rebuild),
        )
        return cast(V, store)

    # creating and checking the tables

    def _create(self) -> None:
        spec = self.spec
        self._vec0 = quote(self.table_name)
        self._records = quote(records_table(self.table_name))
        # Optional filterable fields: their presence flags, by field name.
        self._flags = {
            name: presence_column(source)
            for name, source, _ in self._fields
            if spec.fields[name].filterable and spec.fields[name].optional
        }
        self._partitions = {name for name in spec.filterable_fields if is_partition(spec, name)}
        self._check_columns()
        for table in (self.table_name, records_table(self.table_name)):
            if foreign_table(self._conn, table, spec.name) is not None:
                raise ConfigError(
                    f"sqlite-vec: table {table!r} already exists in {str(self.path)!r} and dualvec "
                    "did not create it; the target is dualvec's own: point target_url at another "
                    "file or name another table with ?table="
                )
        bind_spec(self._conn, spec, self._ddl())
        self._prepare()
        self._check_layout()

    def _check_columns(self) -> None:
        spec = self.spec
        clash = sorted({c.lower() for c in self._flags.values()} & {c.lower() for c in self._columns})
        if clash:
            raise ConfigError(
                f"collection {spec.name!r}: column(s) {clash} would hold the presence flags of "
                "optional fields in sqlite-vec; rename those fields"
            )
        metadata = len(spec.filterable_fields) - len(self._partitions) + len(self._flags)
        if metadata > _MAX_METADATA_COLUMNS:
            raise ConfigError(
                f"collection {spec.name!r}: sqlite-vec allows {_MAX_METADATA_COLUMNS} filterable "
                f"columns, and {len(spec.filterable_fields)} filterable fields with "
                f"{len(self._flags)} optional ones need {metadata}; "
                "make some fields stored only (filterable = false)"
            )
        for name in sorted(self._partitions):
            if spec.fields[name].type not in _PARTITION_TYPES:
                raise ConfigError(
                    f"collection {spec.name!r}: field {name!r} is a {spec.fields[name].type} and "
                    "vec0 partition keys are text or integer: declare a str, int or bool field "
                    "partition = true"
                )
        if len(self._partitions) > _MAX_PARTITION_COLUMNS:
            raise ConfigError(
                f"collection {spec.name!r}: vec0 allows {_MAX_PARTITION_COLUMNS} partition keys, "
                f"got {sorted(self._partitions)}; set partition = false on the others"
            )

    def _vector_definition(self) -> str:
        """The vec0 column that KNN scans."""
        return f"{self.spec.vector_source} float[{self.spec.dim}] distance_metric={self.spec.metric}"

    def _vec0_ddl(self) -> str:
        # vec0 parses its column list itself and takes no quoted names; these are all
        # `check_name`-restricted to [A-Za-z0-9_].
        spec = self.spec
        definition = [f"{spec.id_source} text primary key", self._vector_definition()]
        for name, source, field_type in self._fields:
            if not spec.fields[name].filterable:
                if self.aux_in_vec0:
                    definition.append(f"+{source} {_VEC0_TYPES[field_type]}")
            elif name in self._partitions:
                definition.append(f"{source} {_PARTITION_TYPES[field_type]} partition key")
            else:
                definition.append(f"{source} {_VEC0_TYPES[field_type]}")
        definition += [f"{flag} boolean" for flag in self._flags.values()]
        return f"CREATE VIRTUAL TABLE IF NOT EXISTS {self._vec0} USING vec0({', '.join(definition)})"

    def _records_ddl(self) -> str:
        columns = [
            f"{self._id} TEXT PRIMARY KEY",
            f"{quote(self.spec.vector_source)} BLOB NOT NULL",
            *(f"{quote(source)} {COLUMN_TYPES[field_type]}" for _, source, field_type in self._fields),
        ]
        return f"CREATE TABLE IF NOT EXISTS {self._records} ({', '.join(columns)})"

    def _ddl(self) -> list[str]:
        """Everything a new collection creates, in `bind_spec`'s transaction."""
        return [self._vec0_ddl(), *index_ddl(self.spec.name, self.index)]

    def _vector_column(self) -> tuple[str, str]:
        """The vec0 vector column's name and how a value is bound to it."""
        return self.spec.vector_source, "?"

    def _prepare(self) -> None:
        """The statements reads and writes use."""
        self._vec0_fields = [
            (name, source, field_type)
            for name, source, field_type in self._fields
            if self.aux_in_vec0 or self.spec.fields[name].filterable
        ]
        vector, param = self._vector_column()
        columns = [
            self.spec.id_source,
            vector,
            *(source for _, source, _ in self._vec0_fields),
            *self._flags.values(),
        ]
        placeholders = ["?", param, *("?" * (len(columns) - 2))]
        self._insert = (
            f"INSERT INTO {self._vec0} ({', '.join(quote(c) for c in columns)}) "
            f"VALUES ({', '.join(placeholders)})"
        )
        # What reads select for each field: a missing optional value reads back as NULL.
        self._field_select = [
            f"CASE WHEN {quote(self._flags[name])} THEN {quote(source)} END"
            if name in self._flags
            else quote(source)
            for name, source, _ in self._fields
        ]
        self._select = ", ".join([self._id, quote(self.spec.vector_source), *self._field_select])

    def _check_layout(self) -> None:
        """Refuse to open a collection built with another layout, or convert it if asked."""
        stored = stored_layout(self._conn, self.spec.name)
        if stored == self.index.layout:
            return
        if not self._rebuild_on_open:
            raise ConfigError(
                f"sqlite-vec collection {self.spec.name!r} in {str(self.path)!r} was built with "
                f"{describe_layout(stored)} and is opened with {self.index.describe()}: its index "
                f"must be rebuilt first. Add rebuild=true to the store URL once (it rewrites the "
                f"vec0 table from the float vectors in one transaction; no other process may "
                f"have the collection open), or open it with {describe_layout(stored)}"
            )
        with write_transaction(self._conn):
            # Read again under the write lock: another process may have rebuilt it meanwhile.
            stored = stored_layout(self._conn, self.spec.name)
            if stored != self.index.layout:
                self._rebuild_from(stored)

    # rebuilding

    def rebuild(self) -> None:
        """Rewrite the vec0 table to this store's layout from the float vectors, in one
        transaction (readers see the old index until it commits). Run with no other process
        holding the collection open: their statements would meet a changed table. Also
        refreshes an int8 l2 collection's scale after its values outgrew the first batch's."""
        with self._lock, write_transaction(self._conn):
            self._guard("rebuild", self._rebuild_from, stored_layout(self._conn, self.spec.name))

    def _rebuild_from(self, stored: tuple[Quantize, int | None]) -> None:
        conn = self._conn
        sources = [self.spec.vector_source, *(source for _, source, _ in self._fields)]
        columns = ", ".join([self._id, *map(quote, sources)])
        if stored == ("none", None):
            # The exact table is the only copy: stage its records in the plain table first.
            selects = ", ".join([self._id, quote(self.spec.vector_source), *self._field_select])
            conn.execute(self._records_ddl())
            conn.execute(f"INSERT INTO {self._records} ({columns}) SELECT {selects} FROM {self._vec0}")
        conn.execute(f"DROP TABLE {self._vec0}")
        conn.execute(self._vec0_ddl())
        self._before_refill()
        cursor = conn.execute(f"SELECT {columns} FROM {self._records}")
        while rows := cursor.fetchmany(_REBUILD_BATCH):
            self._index([self._record(row) for row in rows])
        if self.index.exact:
            conn.execute(f"DROP TABLE {self._records}")
        quantize, dim = self.index.layout
        conn.execute(index_ddl(self.spec.name, self.index)[0])
        conn.execute(
            f"INSERT OR REPLACE INTO {INDEX_TABLE} (name, quantize, matryoshka_dim, int8_scale) "
            "VALUES (?, ?, ?, ?)",
            (self.spec.name, quantize, dim, self._rebuilt_scale()),
        )

    def _before_refill(self) -> None:
        """Hook: what a layout computes over all records before a rebuild refills the index."""

    def _rebuilt_scale(self) -> float | None:
        """Hook: the int8 scale a rebuild records."""
        return None

    # writes

    def _index_values(self, record: Record) -> list[Any]:
        """The vec0 row's field values and presence flags, after the id and vector."""
        meta = record.metadata
        values = [
            _MISSING[field_type] if name in self._flags and meta.get(name) is None else meta.get(name)
            for name, _, field_type in self._vec0_fields
        ]
        return [*values, *(name in meta for name in self._flags)]

    def _row(self, record: Record) -> tuple[Any, ...]:
        return (record.id, record.vector.tobytes(), *self._index_values(record))

    def _index(self, records: list[Record]) -> None:
        """Insert `records` into the vec0 table (ids known absent), inside the caller's
        transaction."""
        self._conn.executemany(self._insert, [self._row(r) for r in records])

    def _existing(self, ids: list[str]) -> list[str]:
        """Which ids the table holds, from its rowids shadow table (an indexed lookup; a DELETE
        on vec0 for an id it lacks costs as much as one that removes a row)."""
        return self._present(quote(self.table_name + "_rowids"), "id", ids)

    def _present(self, table: str, column: str, ids: list[str]) -> list[str]:
        found: list[str] = []
        for start in range(0, len(ids), _ID_CHUNK):
            chunk = ids[start : start + _ID_CHUNK]
            sql = f"SELECT {column} FROM {table} WHERE {column} IN ({', '.join('?' * len(chunk))})"
            found += [row[0] for row in self._conn.execute(sql, chunk)]
        return found

    def _upsert(self, records: list[Record]) -> None:
        with self._lock, write_transaction(self._conn):
            replaced = self._existing([r.id for r in records])
            if replaced:
                self._conn.executemany(
                    f"DELETE FROM {self._vec0} WHERE {self._id} = ?", [(i,) for i in replaced]
                )
            self._index(records)

    def _delete(self, ids: list[str]) -> None:
        with self._lock, write_transaction(self._conn):
            self._conn.executemany(f"DELETE FROM {self._vec0} WHERE {self._id} = ?", [(i,) for i in ids])

    # reads

    def _filter_sql(self, conditions: list[Condition]) -> tuple[str, list[Any]]:
        """The KNN query's WHERE terms for a filter: vec0 applies them during the scan."""
        where, params = conditions_to_sql(self.spec, conditions)
        flags = sorted({self._flags[c.field] for c in conditions if c.field in self._flags})
        where = " AND ".join([*([where] if where else []), *(f"{quote(flag)} = 1" for flag in flags)])
        return where, params

    def _merges_partitions(self, conditions: list[Condition]) -> bool:
        """vec0 answers `partition IN (a, b)` with k rows per value (one KNN per partition), so
        such a search needs an outer ORDER BY ... LIMIT k to merge them."""
        return any(c.op == "$in" and c.field in self._partitions for c in conditions)

    def _search(self, query: Vector, k: int, conditions: list[Condition]) -> list[Hit]:
        where, params = self._filter_sql(conditions)
        fields = "".join(f", {expr}" for expr in self._field_select)
        sql = (
            f"SELECT {self._id}, distance{fields} FROM {self._vec0} "
            f"WHERE {quote(self.spec.vector_source)} MATCH ? AND k = ?"
            + (f" AND {where}" if where else "")
            + " ORDER BY distance"
        )
        args = [query.tobytes(), k, *params]
        if self._merges_partitions(conditions):
            # The CTE's name cannot be a collection's (it would shadow the table).
            knn = '"dualvec knn"'
            sql = f"WITH {knn} AS MATERIALIZED ({sql}) SELECT * FROM {knn} ORDER BY distance LIMIT ?"
            args.append(k)
        with self._read_lock:
            rows = self._reader.execute(sql, args).fetchall()
        return [Hit(row[0], self._distance(row[1]), self._metadata(row[2:])) for row in rows]

    def _distance(self, value: float) -> float:
        """vec0's distance on dualvec's scale: cosine clamped to [0, 2] (float noise)."""
        return min(max(value, 0.0), 2.0) if self.spec.metric == "cosine" else float(value)

    def _count(self) -> int:
        # count(*) on vec0 walks every chunk; its rowids shadow table is a plain b-tree.
        with self._read_lock:
            rowids = quote(self.table_name + "_rowids")
            return int(self._reader.execute(f"SELECT count(*) FROM {rowids}").fetchone()[0])


def _quantized_class() -> type[SqliteVecStore]:
    # Imported late: the quantized store subclasses this one.
    from dualvec.stores.sqlite_vec_quantized import QuantizedSqliteVecStore

    return QuantizedSqliteVecStore
