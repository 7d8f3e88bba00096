"""Running the bench's searches and scoring one answer against another.

Every search of a run answers the same query back to back, in an order that rotates from one
query to the next, so that machine noise (a busy core, a cold page) falls on each alike and
latency ratios measured in one run can be trusted. Answers are scored with `dualvec.compare`,
the very function shadow reads use, under the collection's configured thresholds: the bench's
recall and mismatch counts are what the shadow comparison would report on these queries.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dualvec.bench_queries import Queries, Search, search_without_self
from dualvec.bench_stats import RecallSummary, percentiles_ms
from dualvec.compare import CompareThresholds, compare
from dualvec.records import Hit, Vector

__all__ = ["Agreement", "Run", "agreement", "run_interleaved"]


@dataclass(frozen=True)
class Run:
    """One search's answers and timings, one per query, in the queries' order."""

    answers: tuple[tuple[Hit, ...], ...]
    seconds: tuple[float, ...]

    @property
    def latency_ms(self) -> dict[str, float]:
        return percentiles_ms(self.seconds)


def run_interleaved(searches: Mapping[str, Search], queries: Queries, k: int) -> dict[str, Run]:
    """Each query through every search (its own record left out of the answers), timed."""
    names = list(searches)
    answers: dict[str, list[tuple[Hit, ...]]] = {name: [] for name in names}
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for i, (query_id, vector) in enumerate(zip(queries.ids, queries.vectors, strict=True)):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            timed = _Timed(searches[name])
            answers[name].append(tuple(search_without_self(timed, query_id, vector, k)))
            seconds[name].append(timed.seconds)
    return {name: Run(tuple(answers[name]), tuple(seconds[name])) for name in names}


class _Timed:
    """A search that remembers how long its call took (the store's call alone)."""

    def __init__(self, search: Search) -> None:
        self._search = search
        self.seconds = 0.0

    def __call__(self, vector: Vector, k: int) -> Sequence[Hit]:
        start = time.perf_counter()
        hits = self._search(vector, k)
        self.seconds = time.perf_counter() - start
        return hits


@dataclass(frozen=True)
class Agreement:
    """How a candidate's answers compare with a control's, query by query, as shadow reads
    would score them: how many would be mismatches, and the spread of recall@k."""

    comparisons: int
    mismatches: int
    recall: RecallSummary
    recalls: tuple[float, ...]
    max_distance_delta: float | None

    def as_dict(self) -> dict[str, object]:
        return {
            "comparisons": self.comparisons,
            "mismatches": self.mismatches,
            "recall": self.recall.as_dict(),
            "max_distance_delta": self.max_distance_delta,
        }


def agreement(control: Run, candidate: Run, k: int, thresholds: CompareThresholds) -> Agreement:
    comparisons = [
        compare(ctl, cand, k, thresholds)
        for ctl, cand in zip(control.answers, candidate.answers, strict=True)
    ]
    deltas = [c.max_distance_delta for c in comparisons if c.max_distance_delta is not None]
    recalls = tuple(c.recall for c in comparisons)
    return Agreement(
        comparisons=len(comparisons),
        mismatches=sum(c.mismatch for c in comparisons),
        recall=RecallSummary.of(recalls),
        recalls=recalls,
        max_distance_delta=max(deltas) if deltas else None,
    )
