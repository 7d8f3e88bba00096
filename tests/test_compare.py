"""Hand-built answers; every expected number is worked out in the test, never taken from the code."""

from __future__ import annotations

import dataclasses
import math

import pytest

from dualvec.compare import CompareThresholds, Comparison, compare
from dualvec.errors import ConfigError
from dualvec.records import Hit


def hits(*pairs: tuple[str, float]) -> list[Hit]:
    return [Hit(i, d) for i, d in pairs]


def test_identical_answers_match_perfectly():
    answer = hits(("a", 0.1), ("b", 0.2), ("c", 0.3))
    c = compare(answer, list(answer), k=3)
    assert (c.recall, c.rank_agreement, c.max_distance_delta, c.mean_distance_delta) == (1.0, 1.0, 0.0, 0.0)
    assert (c.common, c.tie_matched, c.control_count, c.candidate_count) == (3, 0, 3, 3)
    assert not c.mismatch
    assert c.reasons == ()


def test_a_missed_id_lowers_recall_and_is_a_mismatch():
    # The candidate has d at 0.25 where the control has c at 0.3: 0.25 is far from the
    # control's k-th distance (0.3) and 0.3 far from the candidate's (0.25): no tie.
    # 2 shared ids out of 3.
    c = compare(hits(("a", 0.1), ("b", 0.2), ("c", 0.3)), hits(("a", 0.1), ("b", 0.2), ("d", 0.25)), k=3)
    assert c.recall == pytest.approx(2 / 3)
    assert c.common == 2
    assert c.tie_matched == 0
    assert c.mismatch
    assert c.reasons == ("recall 0.667 below 1.0",)


def test_a_different_id_tied_at_the_kth_distance_is_not_a_mismatch():
    # c and d both sit at 0.5, the cut-off: each store kept one of two equally close records.
    c = compare(hits(("a", 0.1), ("b", 0.2), ("c", 0.5)), hits(("a", 0.1), ("b", 0.2), ("d", 0.5)), k=3)
    assert (c.common, c.tie_matched, c.recall) == (2, 1, 1.0)
    assert not c.mismatch


@pytest.mark.parametrize(
    ("d_distance", "tied"),
    [(0.5 + 5e-5, True), (0.5 - 5e-5, True), (0.5 + 2e-4, False), (0.5 - 2e-4, False)],
)
def test_ties_are_within_max_distance_delta(d_distance, tied):
    # The default tolerance is 1e-4: 5e-5 away from 0.5 ties, 2e-4 away does not.
    c = compare(hits(("a", 0.1), ("c", 0.5)), hits(("a", 0.1), ("d", d_distance)), k=2)
    assert c.recall == (1.0 if tied else 0.5)
    assert c.mismatch is not tied


def test_ties_count_in_pairs_so_recall_never_exceeds_one():
    # Control keeps b and c (both 0.5), the candidate keeps e (0.3) and d (0.5).
    # b and c could each have been cut off the candidate's list at 0.5 (2 candidates for a
    # tie); of the candidate's extras only d ties at the control's 0.5, e at 0.3 is a real
    # difference (the control should have had it). One pair: 1 common (a) + 1 tie = 2 of 3.
    c = compare(
        hits(("a", 0.1), ("b", 0.5), ("c", 0.5)),
        hits(("a", 0.1), ("e", 0.3), ("d", 0.5)),
        k=3,
    )
    assert (c.common, c.tie_matched) == (1, 1)
    assert c.recall == pytest.approx(2 / 3)


def test_a_tie_needs_the_other_answer_to_be_full():
    # The candidate returned only 2 of k=3: nothing was cut off it, so c (0.5) is simply
    # missing even though 0.5 is not far from anything. 2 shared out of the longer answer's 3.
    c = compare(hits(("a", 0.1), ("b", 0.2), ("c", 0.5)), hits(("a", 0.1), ("b", 0.2)), k=3)
    assert c.tie_matched == 0
    assert c.recall == pytest.approx(2 / 3)


def test_fewer_than_k_on_both_sides_is_judged_against_the_longer_answer():
    three = hits(("a", 0.1), ("b", 0.2), ("c", 0.3))
    # A 3-record collection searched with k=10: both return the same 3, recall 1 (not 3/10).
    assert compare(three, list(three), k=10).recall == 1.0
    # The candidate returns a fourth record the control does not have: 3 shared of 4.
    four = [*three, Hit("d", 0.4)]
    assert compare(three, four, k=10).recall == 0.75
    assert compare(four, three, k=10).recall == 0.75


def test_two_empty_answers_agree_and_one_empty_answer_does_not():
    both = compare([], [], k=5)
    assert (both.recall, both.max_distance_delta, both.mismatch) == (1.0, None, False)
    one = compare([], hits(("a", 0.1)), k=5)
    assert one.recall == 0.0
    assert one.max_distance_delta is None
    assert one.mismatch


def test_answers_longer_than_k_are_cut_at_k():
    # At k=2 only a and b count; the candidate's x at position 3 is beyond the cut.
    c = compare(hits(("a", 0.1), ("b", 0.2), ("c", 0.3)), hits(("a", 0.1), ("b", 0.2), ("x", 0.25)), k=2)
    assert (c.recall, c.control_count, c.candidate_count) == (1.0, 2, 2)


def test_distance_deltas_on_common_ids():
    # a differs by 3e-4, b by 0: max 3e-4 above the 1e-4 default, mean 1.5e-4.
    c = compare(hits(("a", 0.1), ("b", 0.2)), hits(("a", 0.1003), ("b", 0.2)), k=2)
    assert c.recall == 1.0
    assert c.max_distance_delta == pytest.approx(3e-4)
    assert c.mean_distance_delta == pytest.approx(1.5e-4)
    assert c.mismatch
    assert len(c.reasons) == 1
    assert c.reasons[0].startswith("distance delta 0.0003 above 0.0001 (id 'a')")


def test_float32_noise_is_not_a_mismatch():
    c = compare(hits(("a", 0.1), ("b", 0.2)), hits(("a", 0.1 + 3e-7), ("b", 0.2 - 1e-7)), k=2)
    assert c.max_distance_delta == pytest.approx(3e-7)
    assert not c.mismatch


def test_a_nan_distance_is_a_mismatch():
    c = compare(hits(("a", 0.1)), hits(("a", math.nan)), k=1)
    assert c.max_distance_delta == math.inf
    assert c.mismatch


def test_rank_agreement_is_spearman_over_common_ids():
    # a and b swapped (equal distances, so no delta): ranks (0,1,2,3) vs (1,0,2,3),
    # sum of squared differences 2, rho = 1 - 6*2 / (4*(16-1)) = 1 - 12/60 = 0.8.
    control = hits(("a", 0.2), ("b", 0.2), ("c", 0.3), ("d", 0.4))
    candidate = hits(("b", 0.2), ("a", 0.2), ("c", 0.3), ("d", 0.4))
    c = compare(control, candidate, k=4)
    assert c.rank_agreement == pytest.approx(0.8)
    assert not c.mismatch  # reported, not judged: swaps between equal distances are no error


def test_rank_agreement_of_a_reversed_order_is_minus_one():
    # Ranks (0,1,2) vs (2,1,0): squared differences 4+0+4 = 8, rho = 1 - 48/24 = -1.
    control = hits(("a", 0.1), ("b", 0.1), ("c", 0.1))
    c = compare(control, list(reversed(control)), k=3)
    assert c.rank_agreement == pytest.approx(-1.0)


def test_rank_agreement_ignores_ids_that_are_not_shared():
    # Common ids a and c, in the same order in both: rho 1 whatever x and y are.
    c = compare(hits(("a", 0.1), ("x", 0.2), ("c", 0.3)), hits(("a", 0.1), ("c", 0.3), ("y", 0.35)), k=3)
    assert c.rank_agreement == 1.0


def test_fewer_than_two_common_ids_agree_vacuously():
    assert compare(hits(("a", 0.1)), hits(("a", 0.1)), k=1).rank_agreement == 1.0
    assert compare(hits(("a", 0.1)), hits(("b", 0.9)), k=1).rank_agreement == 1.0


def test_approximate_thresholds():
    approximate = CompareThresholds(min_recall=0.9)
    control = hits(*((f"id{i}", i / 100) for i in range(10)))
    # One of ten replaced by a far record: 9/10 = 0.9, not below 0.9.
    one_off = [*control[:9], Hit("far", 0.5)]
    assert not compare(control, one_off, k=10, thresholds=approximate).mismatch
    # Two replaced: 8/10 = 0.8 is below.
    two_off = [*control[:8], Hit("far1", 0.5), Hit("far2", 0.6)]
    result = compare(control, two_off, k=10, thresholds=approximate)
    assert result.recall == 0.8
    assert result.mismatch


def test_values_are_frozen():
    c = compare([], [], k=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.recall = 0.5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        CompareThresholds().min_recall = 0.5  # type: ignore[misc]
    assert isinstance(c, Comparison)


def test_defaults_suit_exact_stores():
    assert CompareThresholds() == CompareThresholds(min_recall=1.0, max_distance_delta=1e-4)


@pytest.mark.parametrize(("kwargs"), [{"min_recall": 1.5}, {"min_recall": -0.1}, {"max_distance_delta": -1}])
def test_impossible_thresholds_are_refused(kwargs):
    with pytest.raises(ConfigError):
        CompareThresholds(**kwargs)


def test_k_must_be_positive():
    with pytest.raises(ValueError, match="k must be"):
        compare([], [], k=0)
