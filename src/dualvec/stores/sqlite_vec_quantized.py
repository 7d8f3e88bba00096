"""A sqlite-vec collection searched in two steps: a coarse scan, then exact rescoring.

Tables (``docs`` is the collection's table):

- ``docs``: vec0 with ``id text primary key``, the coarse copy ``vector__coarse`` (``bit[N]``,
  ``int8[N]`` or ``float[N]``, see `dualvec.stores.quantize.Coarse`), the filterable fields as
  metadata or partition key columns and the presence flags of optional ones: everything a
  filtered coarse scan needs, nothing more.
- ``docs__records``: a plain table, ``id TEXT PRIMARY KEY``, the float32 vector and every field
  (NULL when missing). The truth: get, scan (so backfill, verify and rollback) and rescoring
  read it. Both tables are written in one transaction.

A search is one statement::

    WITH "dualvec candidates" AS MATERIALIZED (
        SELECT id AS cid FROM docs
        WHERE vector__coarse MATCH vec_bit(?) AND k = ?                 -- k * oversample
          AND <filter> | AND distance <= ?)                             -- filter or bound
    SELECT r.id, vec_distance_cosine(r.vector, ?) AS d,
           (SELECT count(*) FROM "dualvec candidates") AS found, r.<fields>
    FROM "dualvec candidates" AS c CROSS JOIN docs__records AS r ON r.id = c.cid
    ORDER BY d LIMIT ?

An unfiltered search bounds the coarse distance (`dualvec.stores.quantize.CoarseSample`):
vec0 picks each chunk's top k with k passes over the chunk, so without a bound the scan for
k * oversample candidates cost 7x a scan for one (1M x 384 bits, oversample 16: 348 against
51 ms); with it, rows beyond the bound never reach that selection. `found` says whether the
bound let all k * oversample candidates through; when it did not, the statement runs again
with a wider bound, then without.

vec0 applies the filter during the coarse scan, so the candidates all match it and a filter
that keeps few rows still yields k of them. The float vectors sit in the plain table because
vec0 reads a vector column of the rows it returns slowly: with them in the vec0 table beside
the coarse column, rescoring 80 candidates at 100k x 384 doubled the search time (39 ms
against 22 ms; 320 candidates: 151 against 82 ms), while primary-key lookups in a plain table
add 1-3 ms. Rescoring in SQL and in NumPy on the fetched blobs measured the same (22.7 / 22.1
ms); SQL is kept: one statement, only k rows cross into Python, and the distances come from
the very function vec0's exact KNN uses, so they equal the exact store's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dualvec.errors import ConfigError
from dualvec.filters import Condition
from dualvec.records import Hit, Record, Vector
from dualvec.sqlite_driver import write_transaction
from dualvec.stores.quantize import INDEX_TABLE, SAMPLE_SIZE, Coarse, CoarseSample, index_ddl
from dualvec.stores.sqlite_common import quote
from dualvec.stores.sqlite_vec import SqliteVecStore

__all__ = ["QuantizedSqliteVecStore"]

_SCALE_BATCH = 1000
_SAMPLE_BATCH = 500
# The CTE's name: not a possible collection (or vec0 table) name, which would shadow it.
_CANDIDATES = '"dualvec candidates"'


class QuantizedSqliteVecStore(SqliteVecStore):
    """sqlite-vec store with a coarse copy for the scan; exact distances, approximate recall."""

    exact = False
    aux_in_vec0 = False

    def _create(self) -> None:
        self._coarse = Coarse(self.index, self.spec.metric, self.spec.dim)
        self._coarse_column = f"{self.spec.vector_source}__coarse"
        # The int8 step of an l2 collection, fixed by its first write (None until then).
        self._scale: float | None = None
        # Drawn at the first unfiltered search; drawn again once this store has written a
        # quarter as many rows as the collection had then.
        self._sample: CoarseSample | None = None
        self._written = 0
        super()._create()

    def _check_columns(self) -> None:
        super()._check_columns()
        taken = {c.lower() for c in [*self._columns, *self._flags.values()]}
        if self._coarse_column.lower() in taken:
            raise ConfigError(
                f"collection {self.spec.name!r}: a field's column {self._coarse_column!r} would "
                "hold the quantized vectors in sqlite-vec; rename that field"
            )

    def _vector_definition(self) -> str:
        return f"{self._coarse_column} {self._coarse.column_type}"

    def _vector_column(self) -> tuple[str, str]:
        return self._coarse_column, self._coarse.param

    def _ddl(self) -> list[str]:
        return [self._vec0_ddl(), self._records_ddl(), *index_ddl(self.spec.name, self.index)]

    def _prepare(self) -> None:
        super()._prepare()
        columns = [self.spec.id_source, self.spec.vector_source, *(s for _, s, _ in self._fields)]
        self._records_insert = (
            f"INSERT INTO {self._records} ({', '.join(quote(c) for c in columns)}) "
            f"VALUES ({', '.join('?' * len(columns))})"
        )
        # get and scan (the base class's) read the plain table, where a missing value is NULL.
        self._table = self._records
        self._select = ", ".join(quote(c) for c in columns)
        fields = "".join(f", r.{quote(source)}" for _, source, _ in self._fields)
        distance = f"vec_distance_{self.spec.metric}(r.{quote(self.spec.vector_source)}, ?)"
        self._rescore = (
            f"SELECT r.{self._id}, {distance} AS d, (SELECT count(*) FROM {_CANDIDATES}) AS found"
            f"{fields} FROM {_CANDIDATES} AS c CROSS JOIN {self._records} AS r ON r.{self._id} = c.cid "
            "ORDER BY d LIMIT ?"
        )

    # writes

    def _index(self, records: list[Record]) -> None:
        codes = self._coarse.encode(np.stack([r.vector for r in records]), self._scale)
        self._conn.executemany(
            self._insert,
            [(r.id, code, *self._index_values(r)) for r, code in zip(records, codes, strict=True)],
        )

    def _upsert(self, records: list[Record]) -> None:
        with self._lock, write_transaction(self._conn):
            if self._coarse.needs_scale:
                self._scale = self._fix_scale(records)
            replaced = [(i,) for i in self._present(self._records, self._id, [r.id for r in records])]
            if replaced:
                self._conn.executemany(f"DELETE FROM {self._vec0} WHERE {self._id} = ?", replaced)
                self._conn.executemany(f"DELETE FROM {self._records} WHERE {self._id} = ?", replaced)
            names = [name for name, _, _ in self._fields]
            rows = [(r.id, r.vector.tobytes(), *(r.metadata.get(n) for n in names)) for r in records]
            self._conn.executemany(self._records_insert, rows)
            self._index(records)
            self._written += len(records)

    def _fix_scale(self, records: list[Record]) -> float:
        """The collection's int8 step: the stored one, else set from this first batch (inside
        the write transaction, so two processes cannot both set it)."""
        row = self._conn.execute(f"SELECT int8_scale FROM {INDEX_TABLE} WHERE name = ?", (self.spec.name,))
        stored = row.fetchone()
        if stored is not None and stored[0] is not None:
            return float(stored[0])
        scale = self._coarse.scale_for(np.stack([r.vector for r in records]))
        self._conn.execute(f"UPDATE {INDEX_TABLE} SET int8_scale = ? WHERE name = ?", (scale, self.spec.name))
        return scale

    def _delete(self, ids: list[str]) -> None:
        with self._lock, write_transaction(self._conn):
            gone = [(i,) for i in ids]
            self._conn.executemany(f"DELETE FROM {self._vec0} WHERE {self._id} = ?", gone)
            self._conn.executemany(f"DELETE FROM {self._records} WHERE {self._id} = ?", gone)
            self._written += len(ids)

    def _before_refill(self) -> None:
        if not self._coarse.needs_scale:
            return
        peak = 0.0
        cursor = self._conn.execute(f"SELECT {quote(self.spec.vector_source)} FROM {self._records}")
        while rows := cursor.fetchmany(_SCALE_BATCH):
            matrix = np.frombuffer(b"".join(row[0] for row in rows), dtype=np.float32)
            matrix = matrix.reshape(len(rows), self.spec.dim)
            peak = max(peak, self._coarse.scale_for(matrix))
        self._scale = peak if peak > 0 else None

    def _rebuilt_scale(self) -> float | None:
        return self._scale if self._coarse.needs_scale else None

    # reads

    def _query_scale(self) -> float | None:
        if self._coarse.needs_scale and self._scale is None:
            # Another process may have made the first write since this store opened.
            row = self._reader.execute(
                f"SELECT int8_scale FROM {INDEX_TABLE} WHERE name = ?", (self.spec.name,)
            ).fetchone()
            self._scale = None if row is None or row[0] is None else float(row[0])
        return self._scale

    def _draw_sample(self) -> CoarseSample:
        """Coarse codes of up to SAMPLE_SIZE random rows (rowids drawn from the plain table;
        gaps left by deletes are skipped), and how many rows the collection holds."""
        top, total = self._reader.execute(f"SELECT max(rowid), count(*) FROM {self._records}").fetchone()
        picks = np.random.default_rng().choice(top or 0, size=min(top or 0, SAMPLE_SIZE), replace=False) + 1
        blobs: list[bytes] = []
        column = quote(self.spec.vector_source)
        for start in range(0, len(picks), _SAMPLE_BATCH):
            chunk = [int(p) for p in picks[start : start + _SAMPLE_BATCH]]
            sql = f"SELECT {column} FROM {self._records} WHERE rowid IN ({', '.join('?' * len(chunk))})"
            blobs += [row[0] for row in self._reader.execute(sql, chunk)]
        matrix = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), self.spec.dim)
        self._written = 0
        return CoarseSample(self._coarse, self._coarse.codes(matrix, self._query_scale()), int(total))

    def _bounds(self, code: np.ndarray[Any, Any], wanted: int) -> list[float]:
        if self._sample is None or 4 * self._written > self._sample.total:
            self._sample = self._draw_sample()
        return self._sample.bounds(code, wanted)

    def _search(self, query: Vector, k: int, conditions: list[Condition]) -> list[Hit]:
        where, params = self._filter_sql(conditions)
        wanted = self.index.candidates(k)

        def scan(bound: float | None) -> list[Any]:
            coarse = (
                f"SELECT {self._id} AS cid FROM {self._vec0} "
                f"WHERE {quote(self._coarse_column)} MATCH {self._coarse.param} AND k = ?"
                + (f" AND {where}" if where else "")
                + ("" if bound is None else " AND distance <= ?")
            )
            sql = f"WITH {_CANDIDATES} AS MATERIALIZED ({coarse}) {self._rescore}"
            args: list[Any] = [code.tobytes(), wanted, *params, *([] if bound is None else [bound])]
            return self._reader.execute(sql, [*args, query.tobytes(), k]).fetchall()  # type: ignore[no-any-return]

        with self._read_lock:
            code = self._coarse.codes(query[np.newaxis, :], self._query_scale())[0]
            # A filter changes which rows count; the sample knows nothing of it.
            for bound in [*([] if conditions else self._bounds(code, wanted)), None]:
                rows = scan(bound)
                if bound is None or (rows and rows[0][2] >= wanted):
                    break
        return [Hit(row[0], self._distance(row[1]), self._metadata(row[3:])) for row in rows]
