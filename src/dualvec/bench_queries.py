"""Queries for `dualvec bench`: records of the collection itself, picked at random.

A record's own vector is the easiest query there is: every index finds the record at distance
0, so counting it would add 1/k to every recall (at k=1 recall would always be 1) and hide what
an approximate index misses. Each query's own record is therefore left out of every answer:
a store is asked for k+1 hits and the query's id is dropped. (A quantized store then rescores
(k+1) x oversample candidates, one of them the query's record: the others get oversample - 1
more than a real query's would, a slightly kinder test.) `perturb` also moves each query off
its record by Gaussian noise of that norm relative to the vector's, for queries that resemble
the data without sitting on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from dualvec.protocol import VectorStore
from dualvec.records import Hit, Record, Vector

__all__ = ["MAX_K", "Queries", "Search", "sample_queries", "search_without_self"]

Search = Callable[[Vector, int], Sequence[Hit]]
# A store answers at most 4096 hits, and each query asks for one more than k.
MAX_K = 4095
_SCAN_BATCH = 1000


@dataclass(frozen=True)
class Queries:
    """The sampled records' ids and the query vectors made from them, in the same order."""

    ids: tuple[str, ...]
    vectors: tuple[Vector, ...]
    seed: int
    perturb: float

    def __len__(self) -> int:
        return len(self.ids)


def _reservoir(store: VectorStore, n: int, rng: np.random.Generator) -> list[Record]:
    """`n` records drawn uniformly from one pass of the store's scan (Algorithm R): memory for
    `n` records, whatever the collection's size."""
    kept: list[Record] = []
    seen = 0
    for batch in store.scan(batch_size=_SCAN_BATCH):
        for record in batch:
            if len(kept) < n:
                kept.append(record)
            else:
                slot = int(rng.integers(0, seen + 1))
                if slot < n:
                    kept[slot] = record
            seen += 1
    return kept


def sample_queries(store: VectorStore, n: int, *, seed: int = 0, perturb: float = 0.0) -> Queries:
    """`n` random records of `store` as queries (all of them when it holds fewer)."""
    if perturb < 0:
        raise ValueError(f"perturb must be 0 or more, not {perturb}")
    rng = np.random.default_rng(seed)
    records = _reservoir(store, n, rng)
    vectors = []
    for record in records:
        vector = np.asarray(record.vector, dtype=np.float32)
        if perturb:
            scale = perturb * float(np.linalg.norm(vector)) / np.sqrt(vector.size)
            vector = (vector + scale * rng.standard_normal(vector.size)).astype(np.float32)
        vectors.append(vector)
    return Queries(tuple(r.id for r in records), tuple(vectors), seed, perturb)


def search_without_self(search: Search, query_id: str, vector: Vector, k: int) -> list[Hit]:
    """The top `k` of `search` for `vector` once the query's own record is left out."""
    return [hit for hit in search(vector, k + 1) if hit.id != query_id][:k]
