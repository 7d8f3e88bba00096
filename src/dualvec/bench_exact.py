"""Exact answers from a quantized sqlite-vec collection's own float vectors.

A quantized collection keeps every float vector in its plain records table (the truth its
searches rescore against), so the exact top-k of a query is one full scan of that table with
the very distance function the store's rescoring uses: the same file, the same records, the
same distances. It runs on a connection of its own that only ever reads.

Its latency is a full table scan's, not that of an exact vec0 collection (which reads its
vectors from its own chunks and was faster in this project's measurements); the bench labels
it as what it is.
"""

from __future__ import annotations

from typing import Any

from dualvec.closing import Closing
from dualvec.records import Hit, Vector
from dualvec.sqlite_driver import connect
from dualvec.stores.sqlite_common import quote
from dualvec.stores.sqlite_vec import records_table
from dualvec.stores.sqlite_vec_quantized import QuantizedSqliteVecStore

__all__ = ["FloatScan"]


class FloatScan(Closing):
    """Exact top-k over a quantized collection's float vectors; read-only."""

    method = "full scan of the float vectors in the target's file"

    def __init__(self, store: QuantizedSqliteVecStore) -> None:
        spec = store.spec
        self.metric = spec.metric
        self._conn: Any = connect(store.path, readonly=True)
        self._sql = (
            f"SELECT {quote(spec.id_source)}, "
            f"vec_distance_{spec.metric}({quote(spec.vector_source)}, ?) AS d "
            f"FROM {quote(records_table(store.table_name))} ORDER BY d LIMIT ?"
        )

    def search(self, vector: Vector, k: int) -> list[Hit]:
        rows = self._conn.execute(self._sql, (vector.tobytes(), k)).fetchall()
        return [Hit(str(row[0]), self._distance(float(row[1]))) for row in rows]

    def _distance(self, value: float) -> float:
        # The store's own scale: cosine clamped to [0, 2] (float noise).
        return min(max(value, 0.0), 2.0) if self.metric == "cosine" else value

    def close(self) -> None:
        self._conn.close()
