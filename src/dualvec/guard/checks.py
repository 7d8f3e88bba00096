"""The guard's checks: what one interval's signals say about the target, as pass, fail or no data.

An interval is judged from `Signals`, the increase of each counter over it, whatever read them
(this process's registry, a service's /metrics, or Prometheus over a fleet):

===================  =====================================================  =============
check                value                                                  threshold
===================  =====================================================  =============
``comparisons``      shadow comparisons that judged the target (match +     ``min_comparisons``
                     mismatch; in-flight ones say nothing about it)
``mismatch_ratio``   mismatches / comparisons                               ``max_mismatch_ratio``
``recall``           mean recall@k of those comparisons                     ``min_recall``
``p99_ratio``        target p99 search latency (reads served to callers)    ``max_p99_ratio``
                     / legacy p99 (every read; see `sources`),
                     from the histogram buckets as ``histogram_quantile``
``error_ratio``      the target's failed reads and writes / its operations  ``max_error_ratio``
===================  =====================================================  =============

Fewer comparisons than ``min_comparisons`` make the interval "no data": too few to judge a
ratio, recall or latency by. The error ratio alone is judged whenever the target handled any
operation, because a target that fails every read produces no comparisons at all, and that
must read as a failure, not as silence. The interval fails if any check fails; otherwise it is
"no data" if any check had none; otherwise it passes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from dualvec.metrics import GuardCheck, GuardResult, RollbackReason, Store
from dualvec.settings import GuardSettings

__all__ = ["Buckets", "CheckResult", "Evaluation", "Signals", "evaluate", "quantile"]

Buckets = tuple[tuple[float, float], ...]
"""A latency histogram as (upper bound, cumulative count), sorted, ending with +Inf."""


def _increase(end: float, start: float) -> float:
    """What a counter gained; a counter lower than before restarted (its process did), so all
    of it is new, as Prometheus's increase() reads a reset."""
    return end - start if end >= start else end


def _bucket_increase(end: Buckets, start: Buckets) -> Buckets:
    before = dict(start)
    return tuple((le, _increase(count, before.get(le, 0.0))) for le, count in end)


@dataclass(frozen=True)
class Signals:
    """One collection's counters: totals since a process started (a snapshot), or what they
    gained over an interval (`since`)."""

    matches: float = 0.0
    mismatches: float = 0.0
    in_flight: float = 0.0
    recall_sum: float = 0.0
    recall_count: float = 0.0
    search_buckets: Mapping[Store, Buckets] = field(default_factory=dict)
    target_operations: float = 0.0
    target_failures: float = 0.0

    def since(self, earlier: Signals) -> Signals:
        """What happened between `earlier` and this snapshot."""
        return Signals(
            matches=_increase(self.matches, earlier.matches),
            mismatches=_increase(self.mismatches, earlier.mismatches),
            in_flight=_increase(self.in_flight, earlier.in_flight),
            recall_sum=_increase(self.recall_sum, earlier.recall_sum),
            recall_count=_increase(self.recall_count, earlier.recall_count),
            search_buckets={
                store: _bucket_increase(buckets, earlier.search_buckets.get(store, ()))
                for store, buckets in self.search_buckets.items()
            },
            target_operations=_increase(self.target_operations, earlier.target_operations),
            target_failures=_increase(self.target_failures, earlier.target_failures),
        )

    @property
    def comparisons(self) -> float:
        return self.matches + self.mismatches


def quantile(q: float, buckets: Buckets) -> float | None:
    """The `q` quantile of a histogram, interpolated within its bucket exactly as Prometheus's
    histogram_quantile does (so the guard and the dashboard agree); None without observations."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower  # in the +Inf bucket: the highest finite bound, as Prometheus says
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


@dataclass(frozen=True)
class CheckResult:
    """One check of one interval: what it measured (None: nothing to measure) against its limit."""

    check: GuardCheck
    value: float | None
    threshold: float
    bound: Literal["min", "max"]
    result: GuardResult

    def describe(self) -> str:
        """E.g. "mismatch_ratio 0.031 > max 0.01", "comparisons 12 < min 100"."""
        shown = "none" if self.value is None else f"{self.value:.4g}"
        if self.result == "pass":
            relation = ">=" if self.bound == "min" else "<="
        elif self.result == "fail" or (self.value is not None and self.check == "comparisons"):
            relation = "<" if self.bound == "min" else ">"
        elif self.value is None:
            relation = "vs"
        else:
            return f"{self.check} {shown} (not judged: too few comparisons)"
        return f"{self.check} {shown} {relation} {self.bound} {self.threshold:g}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "threshold": self.threshold,
            "bound": self.bound,
            "result": self.result,
        }


# The order a rollback's reason is picked in when several checks fail.
_CAUSES: tuple[RollbackReason, ...] = ("mismatch_ratio", "recall", "p99_ratio", "error_ratio")


@dataclass(frozen=True)
class Evaluation:
    """The verdict on one interval: its checks, pass / fail / no_data, and why."""

    verdict: GuardResult
    checks: tuple[CheckResult, ...]
    reason: str
    # What a rollback after this interval cites: the first failed check, "no_data" or
    # "source_error"; None when the interval passed.
    cause: RollbackReason | None
    detail: Mapping[str, float | None] = field(default_factory=dict)

    @classmethod
    def unavailable(cls, error: str) -> Evaluation:
        """An interval whose signals could not be read: a failure (as Flagger counts a metric
        query that errors), since a guard that cannot see must not let a ramp go on."""
        return cls("fail", (), f"signals unavailable: {error}", "source_error")

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "cause": self.cause,
            "checks": {c.check: c.as_dict() for c in self.checks},
            **dict(self.detail),
        }


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def _judge(
    check: GuardCheck,
    value: float | None,
    threshold: float,
    bound: Literal["min", "max"],
    *,
    enough: bool = True,
) -> CheckResult:
    if value is None or not enough:
        return CheckResult(check, value, threshold, bound, "no_data")
    ok = value >= threshold if bound == "min" else value <= threshold
    return CheckResult(check, value, threshold, bound, "pass" if ok else "fail")


def evaluate(signals: Signals, guard: GuardSettings) -> Evaluation:
    """Judge one interval's `signals` against `guard`'s thresholds (see the module docstring)."""
    comparisons = signals.comparisons
    enough = comparisons >= guard.min_comparisons
    target_p99 = quantile(0.99, signals.search_buckets.get("target", ()))
    legacy_p99 = quantile(0.99, signals.search_buckets.get("legacy", ()))
    p99_ratio = None if target_p99 is None or not legacy_p99 else target_p99 / legacy_p99
    checks = (
        CheckResult(
            "comparisons",
            comparisons,
            guard.min_comparisons,
            "min",
            "pass" if enough else "no_data",
        ),
        _judge(
            "mismatch_ratio",
            _ratio(signals.mismatches, comparisons),
            guard.max_mismatch_ratio,
            "max",
            enough=enough,
        ),
        _judge(
            "recall", _ratio(signals.recall_sum, signals.recall_count), guard.min_recall, "min", enough=enough
        ),
        _judge("p99_ratio", p99_ratio, guard.max_p99_ratio, "max", enough=enough),
        _judge(
            "error_ratio",
            _ratio(signals.target_failures, signals.target_operations),
            guard.max_error_ratio,
            "max",
        ),
    )
    detail = {
        "in_flight": signals.in_flight,
        "target_p99_seconds": target_p99,
        "legacy_p99_seconds": legacy_p99,
    }
    failed = [c for c in checks if c.result == "fail"]
    if failed:
        cause = next(cause for cause in _CAUSES if any(c.check == cause for c in failed))
        return Evaluation("fail", checks, "; ".join(c.describe() for c in failed), cause, detail)
    missing = [c for c in checks if c.result == "no_data" and (c.value is None or c.check == "comparisons")]
    if missing:
        return Evaluation(
            "no_data", checks, "no data: " + "; ".join(c.describe() for c in missing), "no_data", detail
        )
    return Evaluation("pass", checks, "every check passed", None, detail)
