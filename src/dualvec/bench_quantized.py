"""Exact against quantized search on a sqlite-vec target: latency and recall along an
`oversample` ladder, the smallest `oversample` reaching a wanted recall, and the shadow and
guard thresholds each setting calls for (`dualvec.bench_stats` explains the rules).

A quantized collection's layout is fixed by its data but `oversample` only tunes each search,
so every rung opens the same file with another `oversample`, read-only in effect (an already
bound collection opens without writing). The exact answers come from the same file's float
vectors (`dualvec.bench_exact`).

An exact target has no coarse copy to search. With `try_quantize`, the bench builds one in a
temporary directory (a copy of every record, about as long as a backfill into sqlite-vec takes)
and measures it against the target's own exact search; the copy is deleted afterwards.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from dualvec.bench_exact import FloatScan
from dualvec.bench_queries import Queries, Search
from dualvec.bench_runs import Agreement, agreement, run_interleaved
from dualvec.bench_stats import RecallThresholds, suggest_thresholds
from dualvec.compare import CompareThresholds
from dualvec.protocol import VectorStore
from dualvec.stores.quantize import IndexOptions
from dualvec.stores.sqlite_vec_quantized import QuantizedSqliteVecStore

__all__ = ["LADDER", "Advice", "LadderPlan", "NotQuantized", "QuantizedBench", "Rung", "bench_quantized"]

LADDER = (1, 2, 4, 8, 16, 32)
_EXACT = "exact"
_COPY_BATCH = 1000


@dataclass(frozen=True)
class Rung:
    """The quantized search at one `oversample`, scored against the exact answers."""

    oversample: int
    candidates: int
    latency_ms: dict[str, float]
    against_exact: Agreement

    @property
    def mean_recall(self) -> float:
        return float(np.mean(self.against_exact.recalls))

    def as_dict(self) -> dict[str, object]:
        return {
            "oversample": self.oversample,
            "candidates": self.candidates,
            "latency_ms": self.latency_ms,
            **self.against_exact.as_dict(),
        }


@dataclass(frozen=True)
class Advice:
    """What to configure for one rung: its `oversample` and the thresholds it needs."""

    oversample: int
    mean_recall: float
    thresholds: RecallThresholds

    def as_dict(self) -> dict[str, object]:
        return {
            "oversample": self.oversample,
            "mean_recall": round(self.mean_recall, 4),
            **self.thresholds.as_dict(),
        }


def _advice(rung: Rung, plan: LadderPlan) -> Advice:
    recalls = rung.against_exact.recalls
    return Advice(rung.oversample, rung.mean_recall, suggest_thresholds(recalls, plan.k, plan.interval))


@dataclass(frozen=True)
class QuantizedBench:
    """The ladder; `configured` is the advice for the oversample the target is opened with,
    `reaching` for the smallest rung whose mean recall reaches `wanted_recall` (None when no
    rung did, or none was asked for)."""

    layout: str
    source: Literal["target", "temporary copy"]
    exact_method: str
    exact_ms: dict[str, float]
    configured_oversample: int
    rungs: tuple[Rung, ...]
    configured: Advice
    wanted_recall: float | None
    reaching: Advice | None
    copy_seconds: float | None

    def rung(self, oversample: int) -> Rung:
        return next(r for r in self.rungs if r.oversample == oversample)

    def as_dict(self) -> dict[str, object]:
        return {
            "status": "quantized",
            "layout": self.layout,
            "source": self.source,
            "copy_seconds": self.copy_seconds,
            "exact_method": self.exact_method,
            "exact_ms": self.exact_ms,
            "configured_oversample": self.configured_oversample,
            "rungs": [r.as_dict() for r in self.rungs],
            "configured": self.configured.as_dict(),
            "wanted_recall": self.wanted_recall,
            "reaching": None if self.reaching is None else self.reaching.as_dict(),
        }


@dataclass(frozen=True)
class NotQuantized:
    """Why there is no ladder for this target, and what to do to get one."""

    status: Literal["exact", "approximate"]
    hint: str

    def as_dict(self) -> dict[str, object]:
        return {"status": self.status, "hint": self.hint}


@dataclass(frozen=True)
class LadderPlan:
    """What to measure: the queries, top-`k`, the oversample settings, the recall wanted (if
    any), the shadow thresholds the answers are scored under and the guard's interval (its
    `min_comparisons`) the advice is for."""

    queries: Queries
    k: int
    thresholds: CompareThresholds
    interval: int
    ladder: tuple[int, ...] = LADDER
    wanted_recall: float | None = None


@dataclass(frozen=True)
class _Reference:
    """Where the exact answers come from, and where the quantized collection does."""

    search: Search
    method: str
    source: Literal["target", "temporary copy"]
    copy_seconds: float | None = None


def bench_quantized(
    target: VectorStore, plan: LadderPlan, *, try_quantize: Literal["bit", "int8"] | None = None
) -> QuantizedBench | NotQuantized:
    """The ladder for a quantized target, or for a temporary quantized copy of an exact one."""
    if isinstance(target, QuantizedSqliteVecStore):
        with FloatScan(target) as scan:
            return _ladder(target, _Reference(scan.search, scan.method, "target"), plan)
    if not target.exact:
        return NotQuantized(
            "approximate",
            "the target answers from an approximate index that is not a quantized sqlite-vec "
            "collection: calibrate min_recall with --aa and the legacy/target comparison",
        )
    if try_quantize is None:
        return NotQuantized(
            "exact",
            "not quantized; set quantize=bit (or int8) on the target to try, or run "
            "`dualvec bench --try-quantize bit` to measure a temporary quantized copy first",
        )
    with tempfile.TemporaryDirectory(prefix="dualvec-bench-") as folder:
        start = time.perf_counter()
        with QuantizedSqliteVecStore(
            Path(folder) / "copy.db", target.spec, index=IndexOptions(quantize=try_quantize)
        ) as copy:
            for batch in target.scan(batch_size=_COPY_BATCH):
                copy.upsert(batch)
            seconds = round(time.perf_counter() - start, 3)
            reference = _Reference(target.search, "the target's own exact search", "temporary copy", seconds)
            return _ladder(copy, reference, plan)


def _at_oversample(store: QuantizedSqliteVecStore, oversample: int) -> QuantizedSqliteVecStore:
    """The same collection in the same file, searched with another `oversample`."""
    return QuantizedSqliteVecStore(
        store.path, store.spec, table=store.table_name, index=replace(store.index, oversample=oversample)
    )


def _ladder(base: QuantizedSqliteVecStore, reference: _Reference, plan: LadderPlan) -> QuantizedBench:
    configured = base.index.oversample
    settings = sorted({*plan.ladder, configured})
    opened = {n: _at_oversample(base, n) for n in settings if n != configured}
    stores = {**opened, configured: base}
    try:
        searches = {_EXACT: reference.search, **{str(n): stores[n].search for n in settings}}
        runs = run_interleaved(searches, plan.queries, plan.k)
    finally:
        for store in opened.values():
            store.close()
    rungs = tuple(
        Rung(
            oversample=n,
            candidates=replace(base.index, oversample=n).candidates(plan.k),
            latency_ms=runs[str(n)].latency_ms,
            against_exact=agreement(runs[_EXACT], runs[str(n)], plan.k, plan.thresholds),
        )
        for n in settings
    )
    reaching = None
    if plan.wanted_recall is not None:
        wanted = plan.wanted_recall
        first = next((r for r in rungs if r.mean_recall >= wanted), None)
        reaching = None if first is None else _advice(first, plan)
    return QuantizedBench(
        layout=base.index.describe(),
        source=reference.source,
        exact_method=reference.method,
        exact_ms=runs[_EXACT].latency_ms,
        configured_oversample=configured,
        rungs=rungs,
        configured=_advice(next(r for r in rungs if r.oversample == configured), plan),
        wanted_recall=plan.wanted_recall,
        reaching=reaching,
        copy_seconds=reference.copy_seconds,
    )
