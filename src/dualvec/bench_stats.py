"""The numbers `dualvec bench` reports: latency percentiles, the spread of per-query recall, and
the shadow and guard thresholds that spread calls for.

Why rules for thresholds at all: a shadow comparison counts as a mismatch when its own recall@k
is below `shadow.min_recall`, and the guard fails an interval whose mean recall is below
`guard.min_recall` or whose mismatch ratio is above `guard.max_mismatch_ratio`. The defaults
suit exact stores. An approximate target (quantized sqlite-vec, an ANN legacy index) misses a
few true neighbours on some queries while healthy; under the defaults those queries would count
as mismatches and the guard would roll back a target that works as configured.

- ``shadow.min_recall = mean - 3 sd`` of the per-query recall measured here, rounded down to a
  multiple of 1/k (the values a full answer's recall takes), then down to 4 decimals (so that a
  comparison whose recall equals it, say 2/3, is not below the printed 0.6666). Three standard
  deviations below the mean leave out nearly all of a healthy target's scatter; what it still
  flags on the same queries is reported as `expected_mismatch_ratio`, the noise floor the
  dashboards will show.
- ``guard.min_recall = mean - 3 sd / sqrt(m)``, m being `guard.min_comparisons`: the mean of an
  interval of m comparisons scatters by sd / sqrt(m) around the measured mean.
- ``guard.max_mismatch_ratio``: the noise floor plus three binomial deviations of an interval
  of m comparisons, and at least 1/m (one stray mismatch per interval).

The price is sensitivity: a record missing from the target costs the queries near it 1/k of
recall, which these thresholds now tolerate. `dualvec verify` is what proves no record is
missing, and the distance check (`max_distance_delta`) still catches altered vectors, since a
quantized target reports exact distances.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["SPREAD", "RecallSummary", "RecallThresholds", "percentiles_ms", "suggest_thresholds"]

# Standard deviations of per-query recall below its mean that a healthy target may fall.
SPREAD = 3.0
_DECIMALS = 4
_SCALE = 10_000.0  # 10 ** _DECIMALS


def percentiles_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p95 and p99 of timings taken in seconds, in milliseconds."""
    ms = np.asarray(seconds) * 1000
    return {f"p{q}": round(float(np.percentile(ms, q)), 3) for q in (50, 95, 99)}


def _round_down(value: float) -> float:
    return math.floor(value * _SCALE + 1e-9) / _SCALE


def _round_up(value: float) -> float:
    return math.ceil(value * _SCALE - 1e-9) / _SCALE


@dataclass(frozen=True)
class RecallSummary:
    """How per-query recall@k is spread: its mean and standard deviation, 5th percentile and
    worst query, and the share of queries that found every true neighbour."""

    mean: float
    sd: float
    p5: float
    min: float
    perfect: float

    @classmethod
    def of(cls, recalls: Sequence[float]) -> RecallSummary:
        values = np.asarray(recalls, dtype=np.float64)
        return cls(
            mean=round(float(values.mean()), _DECIMALS),
            sd=round(float(values.std()), _DECIMALS),
            p5=round(float(np.percentile(values, 5)), _DECIMALS),
            min=round(float(values.min()), _DECIMALS),
            perfect=round(float(np.mean(values >= 1.0)), _DECIMALS),
        )

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "sd": self.sd, "p5": self.p5, "min": self.min, "perfect": self.perfect}


@dataclass(frozen=True)
class RecallThresholds:
    """The shadow and guard thresholds a measured recall spread calls for (module docstring),
    and the share of the measured queries the shadow threshold still counts as mismatches."""

    shadow_min_recall: float
    expected_mismatch_ratio: float
    guard_min_recall: float
    guard_max_mismatch_ratio: float

    def as_dict(self) -> dict[str, float]:
        return {
            "shadow_min_recall": self.shadow_min_recall,
            "expected_mismatch_ratio": self.expected_mismatch_ratio,
            "guard_min_recall": self.guard_min_recall,
            "guard_max_mismatch_ratio": self.guard_max_mismatch_ratio,
        }


def suggest_thresholds(recalls: Sequence[float], k: int, interval: int) -> RecallThresholds:
    """The module docstring's rules, for per-query recalls measured at top-`k` and a guard that
    judges intervals of at least `interval` comparisons."""
    values = np.asarray(recalls, dtype=np.float64)
    mean, sd = float(values.mean()), float(values.std())
    comparisons = max(interval, 1)
    on_grid = math.floor(max(mean - SPREAD * sd, 0.0) * k + 1e-9) / k
    shadow = _round_down(min(on_grid, 1.0))
    expected = float(np.mean(values < shadow))
    noise = SPREAD * math.sqrt(expected * (1 - expected) / comparisons)
    return RecallThresholds(
        shadow_min_recall=shadow,
        expected_mismatch_ratio=round(expected, _DECIMALS),
        guard_min_recall=_round_down(max(mean - SPREAD * sd / math.sqrt(comparisons), 0.0)),
        guard_max_mismatch_ratio=_round_up(min(max(expected + noise, 1 / comparisons), 1.0)),
    )
