"""Compare two top-k answers to the same query: legacy is the control, the target the candidate.

The roles do not follow which store served the caller: legacy is the reference until the
migration is done, so a recall below 1 always means "the target misses what legacy finds".

- **recall@k**: ids both answers hold, over ``max(len(control), len(candidate))``. That is the
  usual overlap/k whenever either store returned k hits; when both returned fewer (a small
  collection, a selective filter), the longer answer is the yardstick, so a store that returns
  extra records is not scored as perfect, and two empty answers agree (recall 1).
- **ties at the k-th distance**: when several records sit at the cut-off distance, each store
  may keep a different one, and neither is wrong. An id only one answer holds is matched if
  the other answer is full (k hits) and the id's distance is within `max_distance_delta` of
  that answer's k-th distance; such ids count in pairs, one from each side, so recall never
  exceeds 1.
- **distance delta**: the absolute difference of the two distances reported for each common
  id (max and mean). Both stores must report the same number for the same pair of vectors, so
  this catches metric or conversion bugs that ids alone would hide.
- **rank agreement**: Spearman's rho over the common ids' positions in each answer, 1.0 when
  fewer than two ids are shared. Spearman rather than rank-biased overlap because RBO mixes
  membership into the score and membership is already what recall measures; rho over the
  common ids says only whether the shared results come in the same order. It is reported, not
  judged: when ids and distances agree, order can only differ between near-equal distances,
  which is no error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from dualvec.errors import ConfigError
from dualvec.records import Hit

__all__ = ["CompareThresholds", "Comparison", "compare", "without_written"]


@dataclass(frozen=True)
class CompareThresholds:
    """What counts as a mismatch. The defaults suit exact stores (brute force, sqlite-vec):
    the same query must return the same ids with the same distances up to float32 rounding.

    For an approximate legacy store (HNSW, IVF), calibrate with an A/A run first; typical values
    are ``min_recall=0.9`` (0.8 for k below 10, where one miss costs 10% or more) and the
    default ``max_distance_delta`` when the index reranks with full vectors, ``1e-2`` when it
    reports quantized (PQ, binary) distances.
    """

    min_recall: float = 1.0
    # Also the tolerance within which two distances tie at the k-th position.
    max_distance_delta: float = 1e-4

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_recall <= 1.0:
            raise ConfigError(f"min_recall must be within [0, 1], not {self.min_recall}")
        if not self.max_distance_delta >= 0.0:
            raise ConfigError(f"max_distance_delta must be 0 or more, not {self.max_distance_delta}")


@dataclass(frozen=True)
class Comparison:
    """How a candidate's top-k compares with the control's; see the module docstring."""

    k: int
    control_count: int
    candidate_count: int
    common: int
    tie_matched: int
    recall: float
    rank_agreement: float
    max_distance_delta: float | None  # None when the answers share no id
    mean_distance_delta: float | None
    reasons: tuple[str, ...]

    @property
    def mismatch(self) -> bool:
        return bool(self.reasons)


def _positions(hits: Sequence[Hit]) -> dict[str, int]:
    positions: dict[str, int] = {}
    for i, hit in enumerate(hits):
        positions.setdefault(hit.id, i)
    return positions


def _tied_with_last(only: list[Hit], other: Sequence[Hit], k: int, tolerance: float) -> int:
    """How many of `only` could have been cut off `other` by a tie at its k-th distance."""
    if len(other) < k:  # the other store returned everything it found; nothing was cut off
        return 0
    last = other[-1].distance
    return sum(1 for hit in only if abs(hit.distance - last) <= tolerance)


def _delta(a: float, b: float) -> float:
    delta = abs(a - b)
    return math.inf if math.isnan(delta) else delta  # a NaN distance is a broken answer, not a tie


def _spearman(control_ranks: list[int], candidate_ranks: list[int]) -> float:
    m = len(control_ranks)
    if m < 2:
        return 1.0
    squared = sum((a - b) ** 2 for a, b in zip(control_ranks, candidate_ranks, strict=True))
    return 1.0 - 6.0 * squared / (m * (m * m - 1))


def compare(
    control: Sequence[Hit],
    candidate: Sequence[Hit],
    k: int,
    thresholds: CompareThresholds | None = None,
) -> Comparison:
    """Compare the first `k` hits of each answer (each sorted closest first, as stores return)."""
    if k < 1:
        raise ValueError(f"k must be 1 or more, not {k}")
    limits = thresholds or CompareThresholds()
    tolerance = limits.max_distance_delta
    ctl, cand = list(control[:k]), list(candidate[:k])
    ctl_pos, cand_pos = _positions(ctl), _positions(cand)
    common_ids = [hit_id for hit_id in ctl_pos if hit_id in cand_pos]

    only_ctl = [h for i, h in enumerate(ctl) if h.id not in cand_pos and ctl_pos[h.id] == i]
    only_cand = [h for i, h in enumerate(cand) if h.id not in ctl_pos and cand_pos[h.id] == i]
    tie_matched = min(
        _tied_with_last(only_ctl, cand, k, tolerance), _tied_with_last(only_cand, ctl, k, tolerance)
    )
    denominator = max(len(ctl), len(cand))
    recall = (len(common_ids) + tie_matched) / denominator if denominator else 1.0

    deltas = {i: _delta(ctl[ctl_pos[i]].distance, cand[cand_pos[i]].distance) for i in common_ids}
    worst_id = max(deltas, key=deltas.__getitem__, default=None)
    max_delta = deltas[worst_id] if worst_id is not None else None
    mean_delta = sum(deltas.values()) / len(deltas) if deltas else None

    # Ranks among the common ids only: the control's order is 0..m-1 by construction.
    cand_order = sorted(common_ids, key=cand_pos.__getitem__)
    cand_rank = {hit_id: r for r, hit_id in enumerate(cand_order)}
    rank_agreement = _spearman(list(range(len(common_ids))), [cand_rank[i] for i in common_ids])

    reasons: list[str] = []
    if recall < limits.min_recall:
        reasons.append(f"recall {recall:.3f} below {limits.min_recall}")
    if max_delta is not None and max_delta > tolerance:
        reasons.append(f"distance delta {max_delta:.3g} above {tolerance:g} (id {worst_id!r})")
    return Comparison(
        k=k,
        control_count=len(ctl),
        candidate_count=len(cand),
        common=len(common_ids),
        tie_matched=tie_matched,
        recall=recall,
        rank_agreement=rank_agreement,
        max_distance_delta=max_delta,
        mean_distance_delta=mean_delta,
        reasons=tuple(reasons),
    )


def without_written(
    control: Sequence[Hit],
    candidate: Sequence[Hit],
    k: int,
    written: set[str],
    thresholds: CompareThresholds | None = None,
) -> Comparison | None:
    """The comparison of what two answers say once ids being written are taken out of both;
    None when no such id is among them.

    What remains is compared over the length both still have: taking an id out of one answer
    shifts the ids after it, so an id it pushed past the k-th place of the other answer (never
    written itself) falls outside that common length instead of counting as a difference. A
    lost write, a corrupt vector or a different filter result involves no written id, so it
    stays in what remains and is never explained away."""
    among = written & ({h.id for h in control[:k]} | {h.id for h in candidate[:k]})
    if not among:
        return None
    kept_control = [h for h in control[:k] if h.id not in among]
    kept_candidate = [h for h in candidate[:k] if h.id not in among]
    common = min(len(kept_control), len(kept_candidate))
    return compare(kept_control[:common], kept_candidate[:common], max(common, 1), thresholds)
