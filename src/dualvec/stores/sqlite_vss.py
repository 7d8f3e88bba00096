"""sqlite-vss 0.1.2 (Faiss inside SQLite): a legacy store, abandoned upstream, still in use.

Each collection is a plain table ``"<name>"`` keyed by the caller's id, with an AUTOINCREMENT
rowid, the original vector and the metadata columns, and a vss0 table ``"<name>.vss"`` (a name
no collection can take) holding the vector under that rowid. Cosine collections index the
normalised vector, whose squared L2 distance is twice the cosine distance; l2 takes the square
root; vss0 has no inner product. Its default index, Flat, is exact.

What vss0 does that this adapter works around, each seen on this machine:

- A connection loads the index once, and each COMMIT writes the whole index back from memory.
  A connection that missed another's commit answers from a stale index and, on its next write,
  overwrites the vectors that commit added. Every search and write therefore checks
  ``PRAGMA data_version`` inside its transaction and reopens the connection when another one
  has committed since the index was loaded.
- Searching an empty index aborts the whole process (a Faiss assertion, not an SQL error): an
  empty collection is answered without asking vss0.
- ROLLBACK TO a savepoint leaves the rolled-back vectors in the index; only ROLLBACK is clean,
  and a failed write reopens the connection as well.
- No UPDATE, and inserts are searchable only after COMMIT: an upsert deletes the old rows and
  inserts new ones under fresh rowids (never reused, so no stale entry can name a newer record).
- vss_search ranks before any WHERE on metadata applies: a filtered search widens its top list
  until k rows pass the filter or the whole collection has been ranked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np

from dualvec.distance import canonical
from dualvec.filters import Condition
from dualvec.records import Hit, Record, Vector
from dualvec.spec import Metric
from dualvec.sqlite_driver import connect
from dualvec.stores.sqlite_common import bind_spec, quote
from dualvec.stores.sqlite_table import COLUMN_TYPES, SqliteTableStore, conditions_to_sql
from dualvec.stores.sqlite_vss_loader import load_vss

__all__ = ["SqliteVssStore"]

_VSS_HEADER = b"v\x01"
# vss0 reads k as a 32-bit int.
_MAX_VSS_K = 2**31 - 1


class SqliteVssStore(SqliteTableStore):
    """sqlite-vss store. Exact search; metrics cosine and l2."""

    backend = "sqlite-vss"
    metrics: ClassVar[frozenset[Metric]] = frozenset({"cosine", "l2"})
    scan_order = "ORDER BY rowid"

    def _connect(self) -> Any:
        conn = connect(self.path, vec=False, busy_timeout=self._busy_timeout)
        try:
            load_vss(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _create(self) -> None:
        """Create the tables if needed, and note the data version the index in memory matches."""
        spec = self.spec
        self._index = quote(f"{spec.name}.vss")
        self._insert = (
            f"INSERT INTO {self._table} ({self._select}) VALUES ({', '.join('?' * len(self._columns))})"
        )
        columns = [
            "rowid INTEGER PRIMARY KEY AUTOINCREMENT",
            f"{self._id} TEXT NOT NULL UNIQUE",
            f"{quote(spec.vector_source)} BLOB NOT NULL",
            *(f"{quote(source)} {COLUMN_TYPES[t]}" for _, source, t in self._fields),
        ]
        bind_spec(
            self._conn,
            spec,
            [
                f"CREATE TABLE IF NOT EXISTS {self._table} ({', '.join(columns)})",
                f"CREATE VIRTUAL TABLE IF NOT EXISTS {self._index} USING vss0(embedding({spec.dim}))",
            ],
        )
        self._version = self._data_version()

    def _data_version(self) -> int:
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def _reopen(self) -> None:
        """A new connection, whose vss0 index loads on first use, inside the next transaction."""
        self._conn.close()
        self._conn = self._connect()
        self._version = self._data_version()

    @contextmanager
    def _current(self, *, write: bool) -> Iterator[bool]:
        """A transaction in which the index in memory is the committed one; yields whether the
        collection is empty. Commits on success; on failure rolls back and reopens."""
        while True:
            self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                # The first read fixes the snapshot that data_version then describes.
                empty = self._conn.execute(f"SELECT NOT EXISTS (SELECT 1 FROM {self._table})").fetchone()[0]
                current = self._data_version() == self._version
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            if current:
                break
            self._conn.execute("ROLLBACK")
            self._reopen()
        try:
            yield bool(empty)
            self._conn.execute("COMMIT")
        except BaseException:
            try:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
            finally:
                self._reopen()
            raise

    def _indexed(self, vector: Vector) -> bytes:
        """The blob vss0 indexes. sqlite-vss reads a blob starting with b"v\\x01" as its own
        header and drops those two bytes, so a raw float32 vector that happens to start with
        them (about 1 in 65,536) would lose a dimension: every blob carries the header."""
        return _VSS_HEADER + canonical(vector, self.spec.metric).tobytes()

    def _distance(self, native: float) -> float:
        if self.spec.metric == "cosine":
            return min(max(native / 2.0, 0.0), 2.0)
        return float(np.sqrt(max(native, 0.0)))

    def _remove(self, ids: list[str]) -> None:
        """Delete the rows of `ids` from both tables (inside the caller's transaction)."""
        rowids = [
            row[0]
            for row in self._conn.execute(
                f"SELECT rowid FROM {self._table} WHERE {self._id} IN (SELECT value FROM json_each(?))",
                (json.dumps(ids),),
            )
        ]
        if rowids:
            # One statement each: vss0 cannot look a rowid up, so every DELETE scans its rows.
            for table in (self._index, self._table):
                self._conn.execute(
                    f"DELETE FROM {table} WHERE rowid IN (SELECT value FROM json_each(?))",
                    (json.dumps(rowids),),
                )

    def _upsert(self, records: list[Record]) -> None:
        ids = [r.id for r in records]
        rows = [
            (r.id, r.vector.tobytes(), *(r.metadata.get(name) for name, _, _ in self._fields))
            for r in records
        ]
        with self._lock, self._current(write=True):
            self._remove(ids)
            self._conn.executemany(self._insert, rows)
            rowids = dict(
                self._conn.execute(
                    f"SELECT {self._id}, rowid FROM {self._table} "
                    f"WHERE {self._id} IN (SELECT value FROM json_each(?))",
                    (json.dumps(ids),),
                ).fetchall()
            )
            self._conn.executemany(
                f"INSERT INTO {self._index} (rowid, embedding) VALUES (?, ?)",
                [(rowids[r.id], self._indexed(r.vector)) for r in records],
            )

    def _delete(self, ids: list[str]) -> None:
        with self._lock, self._current(write=True):
            self._remove(ids)

    def _search(self, query: Vector, k: int, conditions: list[Condition]) -> list[Hit]:
        where, params = conditions_to_sql(self.spec, conditions)
        fields = "".join(f", {quote(source)}" for _, source, _ in self._fields)
        rows_sql = (
            f"SELECT rowid, {self._id}{fields} FROM {self._table} "
            "WHERE rowid IN (SELECT value FROM json_each(?))" + (f" AND {where}" if where else "")
        )
        rank_sql = f"SELECT rowid, distance FROM {self._index} WHERE vss_search(embedding, ?) LIMIT ?"
        limit = k
        with self._lock, self._current(write=False) as empty:
            if empty:
                return []
            while True:
                ranked = self._conn.execute(rank_sql, (self._indexed(query), limit)).fetchall()
                rows = {
                    row[0]: row
                    for row in self._conn.execute(rows_sql, [json.dumps([r[0] for r in ranked]), *params])
                }
                hits = [
                    Hit(rows[rowid][1], self._distance(native), self._metadata(rows[rowid][2:]))
                    for rowid, native in ranked
                    if rowid in rows
                ]
                if len(hits) >= k or len(ranked) < limit or limit == _MAX_VSS_K:
                    return hits[:k]
                limit = min(limit * 4, _MAX_VSS_K)

    def _count(self) -> int:
        with self._lock:
            return int(self._conn.execute(f"SELECT count(*) FROM {self._table}").fetchone()[0])
