"""The migration target: one sqlite-vec `vec0` table per collection.

Filterable fields become vec0 metadata columns (filtered during the KNN scan), stored-only
fields auxiliary columns. vec0 has no upsert, so a batch is DELETE-then-INSERT inside one
transaction that rolls back whole on any error.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from dualvec.filters import Condition
from dualvec.records import Hit, Metadata, Record, Vector
from dualvec.spec import CollectionSpec, FieldType, Metric
from dualvec.sqlite_driver import BUSY_TIMEOUT_SECONDS, connect
from dualvec.stores.base import BaseStore
from dualvec.stores.sqlite_common import bind_spec, parse_seconds, quote, write_transaction

__all__ = ["SqliteVecStore"]

_VEC0_TYPES: dict[FieldType, str] = {
    "str": "text",
    "int": "integer",
    "float": "float",
    "bool": "boolean",
}
_ID_CHUNK = 500
_SQL_OPS = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def from_sql(field_type: FieldType, value: Any) -> Any:
    """SQLite hands booleans back as 0/1; restore the declared type."""
    if value is None:
        return None
    return bool(value) if field_type == "bool" else value


def conditions_to_sql(spec: CollectionSpec, conditions: list[Condition]) -> tuple[str, list[Any]]:
    """AND-ed SQL terms with `?` placeholders; names are spec-checked identifiers, values bound."""
    terms: list[str] = []
    params: list[Any] = []
    for c in conditions:
        column = quote(spec.source_of(c.field))
        if c.op == "$in":
            terms.append(f"{column} IN ({', '.join('?' * len(c.value))})")
            params.extend(c.value)
        elif c.op == "$nin":
            # vec0 0.1.9 applies NOT IN after the KNN step (fewer than k rows); != it filters during.
            terms.extend(f"{column} != ?" for _ in c.value)
            params.extend(c.value)
        else:
            terms.append(f"{column} {_SQL_OPS[c.op]} ?")
            params.append(c.value)
    return " AND ".join(terms), params


class SqliteVecStore(BaseStore):
    """sqlite-vec store. Exact KNN; metrics cosine and l2 (vec0 has no inner product)."""

    backend = "sqlite-vec"
    metrics: ClassVar[frozenset[Metric]] = frozenset({"cosine", "l2"})

    def __init__(
        self, path: str | Path, spec: CollectionSpec, *, busy_timeout: float = BUSY_TIMEOUT_SECONDS
    ) -> None:
        super().__init__(spec)
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._lock = threading.RLock()
        self._conn = self._guard("open", connect, self.path, busy_timeout=busy_timeout)
        self._fields = [(name, spec.source_of(name), f.type) for name, f in spec.fields.items()]
        columns = [spec.id_source, spec.vector_source, *(source for _, source, _ in self._fields)]
        self._select = ", ".join(quote(c) for c in columns)
        self._insert = (
            f"INSERT INTO {quote(spec.name)} ({self._select}) VALUES ({', '.join('?' * len(columns))})"
        )
        self._guard("open", self._create)

    @classmethod
    def from_location(
        cls, location: str, spec: CollectionSpec, busy_timeout: str | None = None
    ) -> SqliteVecStore:
        return cls(location, spec, busy_timeout=parse_seconds("busy_timeout", busy_timeout))

    def _create(self) -> None:
        spec = self.spec
        definition = [
            f"{spec.id_source} text primary key",
            f"{spec.vector_source} float[{spec.dim}] distance_metric={spec.metric}",
        ]
        for name, source, field_type in self._fields:
            prefix = "" if spec.fields[name].filterable else "+"
            definition.append(f"{prefix}{source} {_VEC0_TYPES[field_type]}")
        with self._lock:
            table = (
                f"CREATE VIRTUAL TABLE IF NOT EXISTS {quote(spec.name)} USING vec0({', '.join(definition)})"
            )
            bind_spec(self._conn, spec, [table])

    def _row(self, record: Record) -> tuple[Any, ...]:
        meta = record.metadata
        return (
            record.id,
            record.vector.tobytes(),
            *(meta.get(name) for name, _, _ in self._fields),
        )

    def _record(self, row: tuple[Any, ...]) -> Record:
        metadata: Metadata = {}
        for (name, _, field_type), value in zip(self._fields, row[2:], strict=True):
            if value is not None:
                metadata[name] = from_sql(field_type, value)
        return Record(row[0], np.frombuffer(row[1], dtype=np.float32).copy(), metadata)

    def _existing(self, ids: list[str]) -> list[str]:
        """Which ids the table holds, from its rowids shadow table (an indexed lookup; a DELETE
        on vec0 for an id it lacks costs as much as one that removes a row)."""
        found: list[str] = []
        rowids = quote(self.spec.name + "_rowids")
        for start in range(0, len(ids), _ID_CHUNK):
            chunk = ids[start : start + _ID_CHUNK]
            marks = ", ".join("?" * len(chunk))
            found += [
                row[0] for row in self._conn.execute(f"SELECT id FROM {rowids} WHERE id IN ({marks})", chunk)
            ]
        return found

    def _upsert(self, records: list[Record]) -> None:
        table = quote(self.spec.name)
        with self._lock, write_transaction(self._conn):
            replaced = self._existing([r.id for r in records])
            if replaced:
                self._conn.executemany(
                    f"DELETE FROM {table} WHERE {quote(self.spec.id_source)} = ?", [(i,) for i in replaced]
                )
            self._conn.executemany(self._insert, [self._row(r) for r in records])

    def _delete(self, ids: list[str]) -> None:
        with self._lock, write_transaction(self._conn):
            self._conn.executemany(
                f"DELETE FROM {quote(self.spec.name)} WHERE {quote(self.spec.id_source)} = ?",
                [(i,) for i in ids],
            )

    def _get(self, ids: list[str]) -> list[Record]:
        sql = f"SELECT {self._select} FROM {quote(self.spec.name)} WHERE {quote(self.spec.id_source)} = ?"
        found = []
        with self._lock:
            for record_id in ids:
                row = self._conn.execute(sql, (record_id,)).fetchone()
                if row is not None:
                    found.append(self._record(row))
        return found

    def _search(self, query: Vector, k: int, conditions: list[Condition]) -> list[Hit]:
        where, params = conditions_to_sql(self.spec, conditions)
        fields = "".join(f", {quote(source)}" for _, source, _ in self._fields)
        sql = (
            f"SELECT {quote(self.spec.id_source)}, distance{fields} FROM {quote(self.spec.name)} "
            f"WHERE {quote(self.spec.vector_source)} MATCH ? AND k = ?"
            + (f" AND {where}" if where else "")
            + " ORDER BY distance"
        )
        with self._lock:
            rows = self._conn.execute(sql, [query.tobytes(), k, *params]).fetchall()
        hits = []
        for row in rows:
            distance = float(row[1])
            if self.spec.metric == "cosine":
                distance = min(max(distance, 0.0), 2.0)
            metadata = {
                name: from_sql(field_type, value)
                for (name, _, field_type), value in zip(self._fields, row[2:], strict=True)
                if value is not None
            }
            hits.append(Hit(row[0], distance, metadata))
        return hits

    def _count(self) -> int:
        # count(*) on vec0 walks every chunk; its rowids shadow table is a plain b-tree.
        with self._lock:
            return int(
                self._conn.execute(f"SELECT count(*) FROM {quote(self.spec.name + '_rowids')}").fetchone()[0]
            )

    def _scan(self, batch_size: int) -> Iterator[list[Record]]:
        # Its own connection: one consistent snapshot, and the store stays usable meanwhile.
        conn = connect(self.path, busy_timeout=self._busy_timeout)
        try:
            cursor = conn.execute(f"SELECT {self._select} FROM {quote(self.spec.name)}")
            while rows := cursor.fetchmany(batch_size):
                yield [self._record(row) for row in rows]
        finally:
            conn.close()

    def _close(self) -> None:
        with self._lock:
            self._conn.close()
