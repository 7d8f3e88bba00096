"""The min_recall rule and the query sample, checked against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from dualvec import CollectionSpec, MemoryStore, Record
from dualvec.bench_queries import sample_queries
from dualvec.bench_stats import suggest_thresholds
from dualvec.compare import CompareThresholds, compare
from dualvec.records import Hit


def test_thresholds_follow_the_rules_worked_out_by_hand():
    # 95 perfect queries and 5 at 0.7: mean 0.985, sd 0.3 * sqrt(0.05 * 0.95) = 0.065383.
    advice = suggest_thresholds([1.0] * 95 + [0.7] * 5, k=10, interval=100)
    assert advice.shadow_min_recall == 0.7  # 0.985 - 0.19615 = 0.78885, down to a tenth
    assert advice.expected_mismatch_ratio == 0.0
    assert advice.guard_min_recall == 0.9653  # 0.985 - 3 * 0.065383 / 10 = 0.965385
    assert advice.guard_max_mismatch_ratio == 0.01  # no query below: one per interval of 100
    # 90 perfect, 8 at 0.8, 2 at 0: mean 0.964, sd 0.148.
    advice = suggest_thresholds([1.0] * 90 + [0.8] * 8 + [0.0] * 2, k=10, interval=100)
    assert advice.shadow_min_recall == 0.5  # 0.964 - 0.444 = 0.52
    assert advice.expected_mismatch_ratio == 0.02
    assert advice.guard_min_recall == 0.9196  # 0.964 - 0.0444
    assert advice.guard_max_mismatch_ratio == 0.062  # 0.02 + 3 * sqrt(0.02 * 0.98 / 100)
    # A wide spread: mean 0.5, sd 0.5, floor at 0.
    assert suggest_thresholds([0.0, 1.0], k=10, interval=100).shadow_min_recall == 0.0
    # An exact target: no spread, nothing tolerated.
    exact = suggest_thresholds([1.0] * 50, k=10, interval=400)
    assert (exact.shadow_min_recall, exact.guard_min_recall, exact.guard_max_mismatch_ratio) == (
        1.0,
        1.0,
        0.0025,
    )


def test_the_printed_min_recall_never_flags_a_query_at_exactly_that_recall():
    # k=3, 90 perfect and 10 at 2/3: mean 0.9667, sd 0.1, 0.6667 on the grid is 2/3,
    # printed as 0.6666 so that an answer with 2 of 3 right stays a match.
    advice = suggest_thresholds([1.0] * 90 + [2 / 3] * 10, k=3, interval=100)
    assert advice.shadow_min_recall == 0.6666
    assert advice.expected_mismatch_ratio == 0.0
    control = [Hit("a", 0.1), Hit("b", 0.2), Hit("c", 0.3)]
    two_of_three = [Hit("a", 0.1), Hit("b", 0.2), Hit("x", 0.35)]
    one_of_three = [Hit("a", 0.1), Hit("y", 0.32), Hit("x", 0.35)]
    limits = CompareThresholds(min_recall=advice.shadow_min_recall)
    assert not compare(control, two_of_three, 3, limits).mismatch
    assert compare(control, one_of_three, 3, limits).mismatch


def _store(n: int) -> MemoryStore:
    store = MemoryStore(CollectionSpec(name="s", dim=8, metric="cosine", model="m"))
    rng = np.random.default_rng(1)
    store.upsert([Record(f"r{i}", rng.standard_normal(8).astype(np.float32)) for i in range(n)])
    return store


def test_queries_are_distinct_records_and_perturbing_moves_them_not_the_choice():
    store = _store(3000)
    plain = sample_queries(store, 50, seed=3)
    moved = sample_queries(store, 50, seed=3, perturb=0.2)
    assert len(set(plain.ids)) == 50 and plain.ids == moved.ids
    assert sample_queries(store, 50, seed=4).ids != plain.ids
    originals = {r.id: r.vector for r in store.get(list(plain.ids))}
    for query_id, same, off in zip(plain.ids, plain.vectors, moved.vectors, strict=True):
        assert np.array_equal(same, originals[query_id])
        relative = np.linalg.norm(off - originals[query_id]) / np.linalg.norm(originals[query_id])
        assert 0.02 < relative < 0.6  # noise of norm about 0.2 of the vector's, in 8 dimensions
    # Spread over the whole scan, not its first records.
    assert max(int(i[1:]) for i in plain.ids) > 1500


def test_a_collection_smaller_than_the_sample_gives_every_record():
    store = _store(7)
    assert sorted(sample_queries(store, 50).ids) == [f"r{i}" for i in range(7)]


def test_negative_perturbation_is_refused():
    with pytest.raises(ValueError, match="perturb"):
        sample_queries(_store(3), 2, perturb=-1)
