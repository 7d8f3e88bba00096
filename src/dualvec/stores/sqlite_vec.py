"""The migration target: one sqlite-vec `vec0` table per collection.

Filterable fields become vec0 metadata columns (filtered during the KNN scan), stored-only
fields auxiliary columns. vec0 has no upsert, so a batch deletes the ids it already holds and
inserts the batch, inside one transaction that rolls back whole on any error.
"""

from __future__ import annotations

from typing import Any, ClassVar

from dualvec.filters import Condition
from dualvec.records import Hit, Record, Vector
from dualvec.spec import FieldType, Metric
from dualvec.stores.sqlite_common import bind_spec, quote, write_transaction
from dualvec.stores.sqlite_table import SqliteTableStore, conditions_to_sql

__all__ = ["SqliteVecStore"]

_VEC0_TYPES: dict[FieldType, str] = {"str": "text", "int": "integer", "float": "float", "bool": "boolean"}
_ID_CHUNK = 500


class SqliteVecStore(SqliteTableStore):
    """sqlite-vec store. Exact KNN; metrics cosine and l2 (vec0 has no inner product)."""

    backend = "sqlite-vec"
    metrics: ClassVar[frozenset[Metric]] = frozenset({"cosine", "l2"})
    loads_vec = True
    separate_reader = True

    def _create(self) -> None:
        spec = self.spec
        definition = [
            f"{spec.id_source} text primary key",
            f"{spec.vector_source} float[{spec.dim}] distance_metric={spec.metric}",
        ]
        for name, source, field_type in self._fields:
            prefix = "" if spec.fields[name].filterable else "+"
            definition.append(f"{prefix}{source} {_VEC0_TYPES[field_type]}")
        table = f"CREATE VIRTUAL TABLE IF NOT EXISTS {self._table} USING vec0({', '.join(definition)})"
        bind_spec(self._conn, spec, [table])
        self._insert = (
            f"INSERT INTO {self._table} ({self._select}) VALUES ({', '.join('?' * len(self._columns))})"
        )

    def _row(self, record: Record) -> tuple[Any, ...]:
        meta = record.metadata
        return (record.id, record.vector.tobytes(), *[meta.get(name) for name, _, _ in self._fields])

    def _existing(self, ids: list[str]) -> list[str]:
        """Which ids the table holds, from its rowids shadow table (an indexed lookup; a DELETE
        on vec0 for an id it lacks costs as much as one that removes a row)."""
        found: list[str] = []
        rowids = quote(self.spec.name + "_rowids")
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
        fields = "".join(f", {quote(source)}" for _, source, _ in self._fields)
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
            rowids = quote(self.spec.name + "_rowids")
            return int(self._reader.execute(f"SELECT count(*) FROM {rowids}").fetchone()[0])
