"""The migration target: one sqlite-vec `vec0` table per collection.

Filterable fields become vec0 metadata columns (filtered during the KNN scan), stored-only
fields auxiliary columns. vec0 has no upsert, so a batch deletes the ids it already holds and
inserts the batch, inside one transaction that rolls back whole on any error.

vec0 metadata columns cannot hold NULL (sqlite-vec #141). An optional filterable field gets a
second metadata column, ``<source>__present``: a missing value is stored as the type's zero
with the flag off, reads give it back as missing, and every filter on the field also requires
the flag, so a missing value matches no condition, as in the other stores.
"""

from __future__ import annotations

from typing import Any, ClassVar

from dualvec.errors import ConfigError
from dualvec.filters import Condition
from dualvec.records import Hit, Record, Vector
from dualvec.spec import FieldType, Metric
from dualvec.sqlite_driver import write_transaction
from dualvec.stores.sqlite_common import bind_spec, quote
from dualvec.stores.sqlite_layout import foreign_table
from dualvec.stores.sqlite_table import SqliteTableStore, conditions_to_sql

__all__ = ["SqliteVecStore"]

_VEC0_TYPES: dict[FieldType, str] = {"str": "text", "int": "integer", "float": "float", "bool": "boolean"}
_MISSING: dict[FieldType, Any] = {"str": "", "int": 0, "float": 0.0, "bool": False}
_ID_CHUNK = 500
_MAX_METADATA_COLUMNS = 16  # vec0's own limit


def presence_column(source: str) -> str:
    """The flag column that says whether an optional filterable field is set."""
    return f"{source}__present"


class SqliteVecStore(SqliteTableStore):
    """sqlite-vec store. Exact KNN; metrics cosine and l2 (vec0 has no inner product)."""

    backend = "sqlite-vec"
    metrics: ClassVar[frozenset[Metric]] = frozenset({"cosine", "l2"})
    loads_vec = True
    separate_reader = True

    def _create(self) -> None:
        spec = self.spec
        # Optional filterable fields: their presence flags, by field name.
        self._flags = {
            name: presence_column(source)
            for name, source, _ in self._fields
            if spec.fields[name].filterable and spec.fields[name].optional
        }
        clash = sorted({c.lower() for c in self._flags.values()} & {c.lower() for c in self._columns})
        if clash:
            raise ConfigError(
                f"collection {spec.name!r}: column(s) {clash} would hold the presence flags of "
                "optional fields in sqlite-vec; rename those fields"
            )
        if len(spec.filterable_fields) + len(self._flags) > _MAX_METADATA_COLUMNS:
            raise ConfigError(
                f"collection {spec.name!r}: sqlite-vec allows {_MAX_METADATA_COLUMNS} filterable "
                f"columns, and {len(spec.filterable_fields)} filterable fields with "
                f"{len(self._flags)} optional ones need {len(spec.filterable_fields) + len(self._flags)}; "
                "make some fields stored only (filterable = false)"
            )
        # vec0 parses its column list itself and takes no quoted names; these are all
        # `check_name`-restricted to [A-Za-z0-9_].
        definition = [
            f"{spec.id_source} text primary key",
            f"{spec.vector_source} float[{spec.dim}] distance_metric={spec.metric}",
        ]
        for name, source, field_type in self._fields:
            prefix = "" if spec.fields[name].filterable else "+"
            definition.append(f"{prefix}{source} {_VEC0_TYPES[field_type]}")
        definition += [f"{flag} boolean" for flag in self._flags.values()]
        if foreign_table(self._conn, self.table_name, spec.name) is not None:
            raise ConfigError(
                f"sqlite-vec: table {self.table_name!r} already exists in {str(self.path)!r} and dualvec "
                "did not create it; the target is dualvec's own: point target_url at another file "
                "or name another table with ?table="
            )
        table = f"CREATE VIRTUAL TABLE IF NOT EXISTS {self._table} USING vec0({', '.join(definition)})"
        bind_spec(self._conn, spec, [table])
        columns = [*self._columns, *self._flags.values()]
        self._insert = (
            f"INSERT INTO {self._table} ({', '.join(quote(c) for c in columns)}) "
            f"VALUES ({', '.join('?' * len(columns))})"
        )
        # What reads select for each field: a missing optional value reads back as NULL.
        self._field_select = [
            f"CASE WHEN {quote(self._flags[name])} THEN {quote(source)} END"
            if name in self._flags
            else quote(source)
            for name, source, _ in self._fields
        ]
        self._select = ", ".join([self._id, quote(spec.vector_source), *self._field_select])

    def _row(self, record: Record) -> tuple[Any, ...]:
        meta = record.metadata
        values = [
            _MISSING[field_type] if name in self._flags and meta.get(name) is None else meta.get(name)
            for name, _, field_type in self._fields
        ]
        present = [name in meta for name in self._flags]
        return (record.id, record.vector.tobytes(), *values, *present)

    def _existing(self, ids: list[str]) -> list[str]:
        """Which ids the table holds, from its rowids shadow table (an indexed lookup; a DELETE
        on vec0 for an id it lacks costs as much as one that removes a row)."""
        found: list[str] = []
        rowids = quote(self.table_name + "_rowids")
        for start in range(0, len(ids), _ID_CHUNK):
            chunk = ids[start : start + _ID_CHUNK]
            sql = f"SELECT id FROM {rowids} WHERE id IN ({', '.join('?' * len(chunk))})"
            found += [row[0] for row in self._conn.execute(sql, chunk)]
        return found

    def _upsert(self, records: list[Record]) -> None:
        with self._lock, write_transaction(self._conn):
            replaced = self._existing([r.id for r in records])
            if replaced:
                self._conn.executemany(
                    f"DELETE FROM {self._table} WHERE {self._id} = ?", [(i,) for i in replaced]
                )
            self._conn.executemany(self._insert, [self._row(r) for r in records])

    def _delete(self, ids: list[str]) -> None:
        with self._lock, write_transaction(self._conn):
            self._conn.executemany(f"DELETE FROM {self._table} WHERE {self._id} = ?", [(i,) for i in ids])

    def _search(self, query: Vector, k: int, conditions: list[Condition]) -> list[Hit]:
        where, params = conditions_to_sql(self.spec, conditions)
        flags = sorted({self._flags[c.field] for c in conditions if c.field in self._flags})
        where = " AND ".join([*([where] if where else []), *(f"{quote(flag)} = 1" for flag in flags)])
        fields = "".join(f", {expr}" for expr in self._field_select)
        sql = (
            f"SELECT {self._id}, distance{fields} FROM {self._table} "
            f"WHERE {quote(self.spec.vector_source)} MATCH ? AND k = ?"
            + (f" AND {where}" if where else "")
            + " ORDER BY distance"
        )
        with self._read_lock:
            rows = self._reader.execute(sql, [query.tobytes(), k, *params]).fetchall()
        cosine = self.spec.metric == "cosine"
        return [
            Hit(row[0], min(max(row[1], 0.0), 2.0) if cosine else float(row[1]), self._metadata(row[2:]))
            for row in rows
        ]

    def _count(self) -> int:
        # count(*) on vec0 walks every chunk; its rowids shadow table is a plain b-tree.
        with self._read_lock:
            rowids = quote(self.table_name + "_rowids")
            return int(self._reader.execute(f"SELECT count(*) FROM {rowids}").fetchone()[0])
