"""`dualvec bench`: before ramping, how fast and how alike the two stores answer on your data.

Queries are vectors of the collection itself (the first records a scan of legacy yields), each
searched on both stores back to back, alternating which goes first, so that machine noise falls
on both alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from dualvec.protocol import VectorStore
from dualvec.records import Vector

__all__ = ["BenchResult", "bench_stores"]


@dataclass(frozen=True)
class BenchResult:
    queries: int
    k: int
    legacy_ms: dict[str, float]
    target_ms: dict[str, float]
    target_over_legacy_p50: float
    mean_recall: float

    def as_dict(self) -> dict[str, object]:
        return {
            "queries": self.queries,
            "k": self.k,
            "legacy_ms": self.legacy_ms,
            "target_ms": self.target_ms,
            "target_over_legacy_p50": self.target_over_legacy_p50,
            "mean_recall": self.mean_recall,
        }


def _sample_queries(store: VectorStore, n: int) -> list[Vector]:
    queries: list[Vector] = []
    for batch in store.scan(batch_size=min(n, 1000)):
        queries += [r.vector for r in batch[: n - len(queries)]]
        if len(queries) >= n:
            break
    return queries


def _percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1000
    return {f"p{q}": round(float(np.percentile(ms, q)), 3) for q in (50, 95, 99)}


def bench_stores(legacy: VectorStore, target: VectorStore, *, queries: int, k: int) -> BenchResult:
    """Search latency of both stores and the target's recall@k against legacy."""
    sample = _sample_queries(legacy, queries)
    if not sample:
        raise ValueError("the legacy store is empty: nothing to take queries from")
    timings: dict[str, list[float]] = {"legacy": [], "target": []}
    recalls = []
    for i, query in enumerate(sample):
        answers = {}
        for name, store in (("legacy", legacy), ("target", target))[:: 1 if i % 2 else -1]:
            start = time.perf_counter()
            answers[name] = store.search(query, k)
            timings[name].append(time.perf_counter() - start)
        want = {h.id for h in answers["legacy"]}
        recalls.append(len(want & {h.id for h in answers["target"]}) / max(len(want), 1))
    legacy_ms, target_ms = _percentiles(timings["legacy"]), _percentiles(timings["target"])
    return BenchResult(
        queries=len(sample),
        k=k,
        legacy_ms=legacy_ms,
        target_ms=target_ms,
        target_over_legacy_p50=round(target_ms["p50"] / legacy_ms["p50"], 3),
        mean_recall=round(float(np.mean(recalls)), 4),
    )
