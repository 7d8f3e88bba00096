"""The legacy store many apps have today: a plain SQLite table of float32 BLOBs plus metadata
columns, searched by exact brute force in NumPy.

Vectors are cached in memory so a search does not re-read the table; the cache follows this
store's own writes row by row and is reloaded whole when `PRAGMA data_version` shows that
another connection committed.

An application's own table is wrapped as it is (`?table=` when its name is not the
collection's): its columns are checked at open (`sqlite_layout`), every vector must be a
float32 BLOB of the spec's dimension, and writes are `INSERT ... ON CONFLICT DO UPDATE` on the
columns dualvec manages, so the app's other columns keep their values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from dualvec.distance import distances, top_k
from dualvec.errors import ConfigError
from dualvec.filters import Condition
from dualvec.records import Hit, Record, Vector
from dualvec.spec import Metric
from dualvec.sqlite_driver import write_transaction
from dualvec.stores.sqlite_common import bind_spec, quote
from dualvec.stores.sqlite_layout import check_app_table, foreign_table
from dualvec.stores.sqlite_table import COLUMN_TYPES, SqliteTableStore, conditions_to_sql

__all__ = ["SqliteBlobStore"]


# Rows fetched and decoded at a time when the cache is built: each step holds the GIL briefly.
_LOAD_BATCH = 1024
# Rows per block of an L2 pass: its temporaries stay a few MiB, in cache, whatever the table's size.
_L2_BLOCK = 2048


def _norms(rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms: npt.NDArray[np.float32] = np.sqrt(np.einsum("ij,ij->i", rows, rows))
    return norms


class _VectorCache:
    """Row-indexed float32 matrix of every vector and each row's norm, with O(1) upsert and
    delete by id. With the norms kept, a cosine search reads the matrix once instead of three
    times."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        self.matrix: npt.NDArray[np.float32] = np.empty((0, dim), dtype=np.float32)
        self.norms: npt.NDArray[np.float32] = np.empty(0, dtype=np.float32)

    def load(self, cursor: Any) -> None:
        """Rebuild from a cursor over (id, vector BLOB) rows, a batch at a time: the rows'
        Python objects never all exist at once, and no single step holds the GIL for long (one
        join of 20,000 BLOBs held it for 5-30 ms, stalling every other thread; a batch's, 0.4)."""
        ids: list[str] = []
        blocks = [np.empty((0, self.dim), dtype=np.float32)]
        while rows := cursor.fetchmany(_LOAD_BATCH):
            ids += [str(r[0]) for r in rows]
            vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
            blocks.append(vectors.reshape(len(rows), self.dim))
        self.ids = ids
        self.index = {record_id: i for i, record_id in enumerate(ids)}
        self.matrix = np.concatenate(blocks)
        self.norms = _norms(self.matrix)

    @property
    def size(self) -> int:
        return len(self.ids)

    def put(self, record_id: str, vector: Vector) -> None:
        row = self.index.get(record_id)
        if row is None:
            row = self.size
            if row == len(self.matrix):
                capacity = max(16, 2 * row)
                grown = np.empty((capacity, self.dim), dtype=np.float32)
                grown[:row] = self.matrix[:row]
                self.matrix = grown
                self.norms = np.resize(self.norms, capacity)
            self.ids.append(record_id)
            self.index[record_id] = row
        self.matrix[row] = vector
        self.norms[row] = np.sqrt(np.dot(self.matrix[row], self.matrix[row]))  # one row: no einsum set-up

    def remove(self, record_id: str) -> None:
        row = self.index.pop(record_id, None)
        if row is None:
            return
        last = self.size - 1
        if row != last:
            moved = self.ids[last]
            self.matrix[row] = self.matrix[last]
            self.norms[row] = self.norms[last]
            self.ids[row] = moved
            self.index[moved] = row
        self.ids.pop()


def _rough_distances(
    matrix: npt.NDArray[np.float32], norms: npt.NDArray[np.float32], query: Vector, metric: Metric
) -> npt.NDArray[np.float32]:
    """float32 distances to every row, good for choosing candidates. The dot products come from
    `einsum`, NumPy's own single-threaded loop, not BLAS: for a pass bound by memory speed
    OpenBLAS's threads gain little and then spin, burning several times the pass's own CPU on
    the cores an application's event loop and the other store need."""
    if metric == "l2":
        blocks = [np.empty(0, dtype=np.float32)]
        blocks += [
            distances(matrix[start : start + _L2_BLOCK], query, metric, exact=False).astype(np.float32)
            for start in range(0, len(matrix), _L2_BLOCK)
        ]
        return np.concatenate(blocks)
    dots: npt.NDArray[np.float32] = np.einsum("ij,j->i", matrix, query)
    if metric == "dot":
        return -dots
    cosine: npt.NDArray[np.float32] = 1.0 - dots / (norms * _norms(query[np.newaxis])[0])
    return cosine


def _nearest(
    matrix: npt.NDArray[np.float32],
    norms: npt.NDArray[np.float32],
    query: Vector,
    k: int,
    metric: Metric,
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """Rows of the k nearest and their exact distances: a float32 pass over every row picks
    candidates (with a margin for rounding), then float64 ranks and measures only those."""
    rough = _rough_distances(matrix, norms, query, metric)
    candidates = top_k(rough, min(len(rough), 2 * k + 16))
    exact = distances(matrix[candidates], query, metric)
    order = top_k(exact, k)
    return candidates[order], exact[order]


class SqliteBlobStore(SqliteTableStore):
    """Plain-table store; exact search in any metric."""

    backend = "sqlite-blob"

    def _create(self) -> None:
        # A table met for the first time is the app's: check it before binding to it. One
        # already bound is checked against the bound spec instead (bind_spec).
        existing = foreign_table(self._conn, self.table_name, self.spec.name)
        if existing is not None:
            check_app_table(self._conn, self.table_name, self.spec, existing, vector=True)
            self._check_vectors()
        key_type = "INTEGER" if self.spec.id_type == "int" else "TEXT"
        columns = [f"{self._id} {key_type} PRIMARY KEY", f"{quote(self.spec.vector_source)} BLOB NOT NULL"]
        columns += [f"{quote(source)} {COLUMN_TYPES[t]}" for _, source, t in self._fields]
        bind_spec(self._conn, self.spec, [f"CREATE TABLE IF NOT EXISTS {self._table} ({', '.join(columns)})"])
        updates = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in self._columns[1:])
        self._insert = (
            f"INSERT INTO {self._table} ({self._select}) VALUES ({', '.join('?' * len(self._columns))}) "
            f"ON CONFLICT ({self._id}) DO UPDATE SET {updates}"
        )
        self._cache = _VectorCache(self.spec.dim)
        self._cache_version: int | None = None

    def _check_vectors(self) -> None:
        """Refuse a table holding any vector that is not a float32 BLOB of the spec's dimension,
        naming one such row: it could be neither searched nor migrated."""
        vector = quote(self.spec.vector_source)
        bad = self._conn.execute(
            f"SELECT {self._id}, typeof({vector}), length({vector}) FROM {self._table} "
            f"WHERE typeof({vector}) != 'blob' OR length({vector}) != ? LIMIT 1",
            (4 * self.spec.dim,),
        ).fetchone()
        if bad is not None:
            raise ConfigError(
                f"table {self.table_name!r}: row {bad[0]!r} holds a {bad[1]} of {bad[2]} bytes in column "
                f"{self.spec.vector_source!r}, where dim {self.spec.dim} needs a float32 BLOB of "
                f"{4 * self.spec.dim} bytes; fix the row or the collection's dim"
            )

    def _data_version(self) -> int:
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def _reopened(self) -> None:
        # data_version numbers belong to a connection: the new one's say nothing of the cache.
        self._cache_version = None

    def _fresh_cache(self) -> _VectorCache:
        """The cache, reloaded if another connection committed since it was built."""
        version = self._data_version()
        if version != self._cache_version:
            self._cache.load(
                self._conn.execute(f"SELECT {self._id}, {quote(self.spec.vector_source)} FROM {self._table}")
            )
            self._cache_version = version
        return self._cache

    def _upsert(self, records: list[Record]) -> None:
        rows = [
            (self._key(r.id), r.vector.tobytes(), *(r.metadata.get(name) for name, _, _ in self._fields))
            for r in records
        ]
        with self._lock:
            with write_transaction(self._conn):
                self._conn.executemany(self._insert, rows)
            if self._cache_version is not None:
                for record in records:
                    self._cache.put(record.id, record.vector)

    def _delete(self, ids: list[str]) -> None:
        with self._lock:
            with write_transaction(self._conn):
                self._conn.executemany(
                    f"DELETE FROM {self._table} WHERE {self._id} = ?", [(self._key(i),) for i in ids]
                )
            if self._cache_version is not None:
                for record_id in ids:
                    self._cache.remove(record_id)

    def _search(self, query: Vector, k: int, conditions: list[Condition]) -> list[Hit]:
        # One read transaction: the cache check, the filter and the metadata all see the same
        # snapshot, whatever another process commits meanwhile.
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                cache = self._fresh_cache()
                if conditions:
                    where, params = conditions_to_sql(self.spec, conditions)
                    allowed = self._conn.execute(
                        f"SELECT {self._id} FROM {self._table} WHERE {where}", params
                    ).fetchall()
                    rows = np.fromiter((cache.index[str(r[0])] for r in allowed), dtype=np.intp)
                    matrix, norms = cache.matrix[rows], cache.norms[rows]
                else:
                    rows = np.arange(cache.size)
                    matrix, norms = cache.matrix[: cache.size], cache.norms[: cache.size]
                if not len(rows):
                    return []
                best, dist = _nearest(matrix, norms, query, k, self.spec.metric)
                ids = [cache.ids[rows[i]] for i in best]
                records = {r.id: r for r in self._get(ids)}
            finally:
                self._conn.execute("COMMIT")
        return [Hit(i, float(d), records[i].metadata) for i, d in zip(ids, dist, strict=True)]

    def _count(self) -> int:
        with self._lock:
            return int(self._conn.execute(f"SELECT count(*) FROM {self._table}").fetchone()[0])
