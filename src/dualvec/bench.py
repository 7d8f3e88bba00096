"""`dualvec bench`: before ramping, how fast and how alike the two stores answer on your data.

Queries are records of the collection itself, sampled at random from legacy, each searched on
both stores back to back in alternating order so that machine noise falls on both alike (see
`dualvec.bench_queries` for why each query's own record is left out of the answers). Answers
are scored as shadow reads score them, under the collection's `shadow` thresholds.

A quantized sqlite-vec target also gets its exact/quantized ladder (`dualvec.bench_quantized`),
and `aa` adds each store against itself (`dualvec.bench_aa`). Nothing is written to either
store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dualvec.bench_aa import bench_aa
from dualvec.bench_quantized import LADDER, LadderPlan, NotQuantized, QuantizedBench, bench_quantized
from dualvec.bench_queries import Queries, sample_queries
from dualvec.bench_runs import Agreement, agreement, run_interleaved
from dualvec.bench_stats import RecallThresholds, suggest_thresholds
from dualvec.compare import CompareThresholds
from dualvec.outbox import Role
from dualvec.protocol import VectorStore

__all__ = ["BenchOptions", "BenchResult", "CollectionBench", "bench_collection", "bench_stores"]


@dataclass(frozen=True)
class BenchResult:
    """Legacy against target: both stores' latency, the target's recall against legacy."""

    queries: int
    k: int
    legacy_ms: dict[str, float]
    target_ms: dict[str, float]
    target_over_legacy_p50: float
    against_legacy: Agreement
    advice: RecallThresholds

    @property
    def mean_recall(self) -> float:
        return self.against_legacy.recall.mean

    def as_dict(self) -> dict[str, object]:
        return {
            "queries": self.queries,
            "k": self.k,
            "legacy_ms": self.legacy_ms,
            "target_ms": self.target_ms,
            "target_over_legacy_p50": self.target_over_legacy_p50,
            "mean_recall": self.mean_recall,
            "target_vs_legacy": self.against_legacy.as_dict(),
            "advice": self.advice.as_dict(),
        }


def bench_stores(
    legacy: VectorStore,
    target: VectorStore,
    queries: Queries,
    k: int,
    thresholds: CompareThresholds,
    interval: int,
) -> BenchResult:
    """Search latency of both stores, the target's agreement with legacy, and the shadow and
    guard thresholds (for intervals of `interval` comparisons) that agreement calls for."""
    runs = run_interleaved({"legacy": legacy.search, "target": target.search}, queries, k)
    legacy_ms, target_ms = runs["legacy"].latency_ms, runs["target"].latency_ms
    against_legacy = agreement(runs["legacy"], runs["target"], k, thresholds)
    return BenchResult(
        queries=len(queries),
        k=k,
        legacy_ms=legacy_ms,
        target_ms=target_ms,
        target_over_legacy_p50=round(target_ms["p50"] / legacy_ms["p50"], 3),
        against_legacy=against_legacy,
        advice=suggest_thresholds(against_legacy.recalls, k, interval),
    )


@dataclass(frozen=True)
class BenchOptions:
    """What `dualvec bench` was asked for (see its --help)."""

    queries: int = 200
    k: int = 10
    seed: int = 0
    perturb: float = 0.0
    ladder: tuple[int, ...] = LADDER
    wanted_recall: float | None = None
    aa: bool = False
    try_quantize: Literal["bit", "int8"] | None = None


@dataclass(frozen=True)
class CollectionBench:
    """Everything `dualvec bench` measured for one collection."""

    sample: Queries
    thresholds: CompareThresholds
    stores: BenchResult
    quantized: QuantizedBench | NotQuantized
    aa: dict[Role, Agreement] | None

    def as_dict(self) -> dict[str, object]:
        return {
            **self.stores.as_dict(),
            "seed": self.sample.seed,
            "perturb": self.sample.perturb,
            "query_ids": list(self.sample.ids),
            "thresholds": {
                "min_recall": self.thresholds.min_recall,
                "max_distance_delta": self.thresholds.max_distance_delta,
            },
            "quantized": self.quantized.as_dict(),
            "aa": None if self.aa is None else {role: a.as_dict() for role, a in self.aa.items()},
        }


def bench_collection(
    legacy: VectorStore,
    target: VectorStore,
    options: BenchOptions,
    thresholds: CompareThresholds,
    interval: int,
) -> CollectionBench:
    """The whole bench of one collection, scored under the shadow `thresholds`, advising for a
    guard judging `interval` comparisons at a time; ValueError when legacy holds nothing to
    query with."""
    sample = sample_queries(legacy, options.queries, seed=options.seed, perturb=options.perturb)
    if not len(sample):
        raise ValueError("the legacy store is empty: nothing to take queries from")
    plan = LadderPlan(sample, options.k, thresholds, interval, options.ladder, options.wanted_recall)
    return CollectionBench(
        sample=sample,
        thresholds=thresholds,
        stores=bench_stores(legacy, target, sample, options.k, thresholds, interval),
        quantized=bench_quantized(target, plan, try_quantize=options.try_quantize),
        aa=bench_aa({"legacy": legacy, "target": target}, sample, options.k, thresholds)
        if options.aa
        else None,
    )
