"""An in-memory store with exact search, shipped for users' own tests and as a reference."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np

from dualvec.distance import distances, top_k
from dualvec.filters import Condition, matches
from dualvec.records import Hit, Record, Vector
from dualvec.spec import CollectionSpec
from dualvec.stores.base import BaseStore

__all__ = ["MemoryStore"]


class MemoryStore(BaseStore):
    """Records in a dict; search by brute force. Nothing survives the process."""

    backend = "memory"

    def __init__(self, spec: CollectionSpec) -> None:
        super().__init__(spec)
        self._records: dict[str, Record] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_location(cls, location: str, spec: CollectionSpec) -> MemoryStore:
        return cls(spec)

    def _forget_parent(self, clean: bool) -> None:
        # The records are the child's own copy from here on: each process has its own.
        self._lock = threading.Lock()

    def _upsert(self, records: list[Record]) -> None:
        with self._lock:
            self._records.update((r.id, r) for r in records)

    def _delete(self, ids: list[str]) -> None:
        with self._lock:
            for record_id in ids:
                self._records.pop(record_id, None)

    def _get(self, ids: list[str]) -> list[Record]:
        with self._lock:
            return [self._records[i] for i in ids if i in self._records]

    def _search(self, query: Vector, k: int, conditions: list[Condition]) -> list[Hit]:
        with self._lock:
            candidates = [r for r in self._records.values() if matches(conditions, r.metadata)]
        if not candidates:
            return []
        matrix = np.stack([r.vector for r in candidates])
        dist = distances(matrix, query, self.spec.metric)
        return [Hit(candidates[i].id, float(dist[i]), dict(candidates[i].metadata)) for i in top_k(dist, k)]

    def _count(self) -> int:
        return len(self._records)

    def _scan(self, batch_size: int) -> Iterator[list[Record]]:
        with self._lock:
            snapshot = list(self._records.values())
        for start in range(0, len(snapshot), batch_size):
            yield snapshot[start : start + batch_size]
