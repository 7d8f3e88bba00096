"""The guard's verdict on one interval, from counters worked out by hand, and the counters as the
guard reads them back from a real registry's exposition."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry

from dualvec.guard.checks import Signals, evaluate, quantile
from dualvec.guard.ramp import parse_steps
from dualvec.guard.sources import signals_from_exposition, signals_from_families
from dualvec.metrics import DualvecMetrics
from dualvec.settings import GuardSettings

GUARD = GuardSettings(min_comparisons=100)
# Every search in (0.001, 0.0025] on both stores: p99 = 0.001 + 0.0015 * 0.99 each, ratio 1.
SAME_SPEED = {
    "legacy": ((0.001, 0.0), (0.0025, 200.0), (math.inf, 200.0)),
    "target": ((0.001, 0.0), (0.0025, 120.0), (math.inf, 120.0)),
}
HEALTHY = Signals(
    matches=120,
    recall_sum=120,
    recall_count=120,
    search_buckets=SAME_SPEED,
    target_operations=150,
)


def verdicts(evaluation) -> dict[str, str]:
    return {c.check: c.result for c in evaluation.checks}


def test_a_healthy_interval_passes_every_check():
    evaluation = evaluate(HEALTHY, GUARD)
    assert evaluation.verdict == "pass" and evaluation.cause is None
    assert set(verdicts(evaluation).values()) == {"pass"}
    assert evaluation.checks[3].value == pytest.approx(1.0)  # p99 ratio


def test_mismatches_over_the_limit_fail_and_name_the_cause():
    # 6 of 120 comparisons mismatch: 0.05 > 0.01; recall 114/120 = 0.95 still meets 0.95.
    signals = Signals(
        matches=114, mismatches=6, in_flight=30, recall_sum=114, recall_count=120, search_buckets=SAME_SPEED,
        target_operations=150,
    )  # fmt: skip
    evaluation = evaluate(signals, GUARD)
    assert (evaluation.verdict, evaluation.cause) == ("fail", "mismatch_ratio")
    assert evaluation.reason == "mismatch_ratio 0.05 > max 0.01"
    assert verdicts(evaluation)["recall"] == "pass"
    assert evaluation.detail["in_flight"] == 30  # in flight is neither match nor mismatch


def test_in_flight_comparisons_are_not_counted_as_comparisons():
    # 99 judged comparisons and 500 in flight: still fewer than 100.
    signals = Signals(matches=99, in_flight=500, recall_sum=99, recall_count=99, search_buckets=SAME_SPEED)
    evaluation = evaluate(signals, GUARD)
    assert evaluation.verdict == "no_data"
    assert evaluation.reason == "no data: comparisons 99 < min 100; error_ratio none vs max 0.01"
    assert evaluation.checks[1].describe() == "mismatch_ratio 0 (not judged: too few comparisons)"


def test_too_few_comparisons_is_no_data_but_a_failing_target_still_fails():
    # 10 comparisons, all mismatched: too few to judge. The target failed 5 of its 10 operations:
    # 0.5 > 0.01, judged whatever the comparisons.
    few = evaluate(Signals(mismatches=10, recall_count=10, target_operations=10), GUARD)
    assert (few.verdict, few.cause, verdicts(few)["error_ratio"]) == ("no_data", "no_data", "pass")
    failing = Signals(mismatches=10, recall_count=10, target_operations=10, target_failures=5)
    evaluation = evaluate(failing, GUARD)
    assert (evaluation.verdict, evaluation.cause) == ("fail", "error_ratio")
    assert verdicts(evaluation)["mismatch_ratio"] == "no_data"


def test_low_recall_and_a_slow_target_fail_and_the_first_in_order_is_the_cause():
    # Recall 90/120 = 0.75 < 0.95. Target: every search in (0.01, 0.025]: p99 = 0.01 + 0.015 * 0.99
    # = 0.02485; legacy p99 = 0.001 + 0.0015 * 0.99 = 0.002485: ratio 10.
    slow = {**SAME_SPEED, "target": ((0.01, 0.0), (0.025, 120.0), (math.inf, 120.0))}
    signals = Signals(
        matches=120, recall_sum=90, recall_count=120, search_buckets=slow, target_operations=150
    )
    evaluation = evaluate(signals, GUARD)
    assert (evaluation.verdict, evaluation.cause) == ("fail", "recall")
    assert evaluation.checks[3].value == pytest.approx(10.0)
    assert evaluation.reason == "recall 0.75 < min 0.95; p99_ratio 10 > max 1.5"


def test_quantile_interpolates_as_prometheus_does():
    # 100 observations: 50 in (0, 0.001], 50 in (0.001, 0.01]. Rank 99 is the 49th of the second
    # bucket's 50: 0.001 + 0.009 * 49 / 50.
    buckets = ((0.001, 50.0), (0.01, 100.0), (math.inf, 100.0))
    assert quantile(0.99, buckets) == pytest.approx(0.001 + 0.009 * 49 / 50)
    assert quantile(0.5, buckets) == pytest.approx(0.001)
    # Beyond the last finite bound: that bound, as histogram_quantile says.
    assert quantile(0.99, ((0.001, 10.0), (math.inf, 100.0))) == 0.001
    assert quantile(0.99, ((0.001, 0.0), (math.inf, 0.0))) is None


def test_an_interval_is_the_difference_of_two_snapshots_and_survives_a_restart():
    start = Signals(matches=100, mismatches=1, search_buckets={"target": ((0.001, 40.0), (math.inf, 50.0))})
    end = Signals(matches=130, mismatches=3, search_buckets={"target": ((0.001, 45.0), (math.inf, 60.0))})
    gained = end.since(start)
    assert (gained.matches, gained.mismatches) == (30, 2)
    assert gained.search_buckets["target"] == ((0.001, 5.0), (math.inf, 10.0))
    restarted = Signals(matches=7).since(start)  # the process restarted: its counter began again
    assert restarted.matches == 7


def test_the_counters_are_read_back_from_a_real_exposition():
    metrics = DualvecMetrics(CollectorRegistry())
    docs, other = metrics.collection("docs"), metrics.collection("other")
    for outcome, recall in [("match", 1.0), ("match", 1.0), ("mismatch", 0.6), ("in_flight", 0.2)]:
        docs.shadow_compared(outcome, recall, 0.0)
    docs.observe("target", "search", "primary", 0.0003)
    docs.observe("target", "search", "shadow", 0.02)
    docs.observe("legacy", "search", "primary", 0.0003)
    docs.observe("legacy", "search", "shadow", 0.0003)  # legacy's every read counts
    docs.observe("target", "upsert", "secondary", 0.001)
    docs.write_failed("target", "upsert")
    docs.read_failed("target", "search")
    docs.write_failed("legacy", "delete")  # legacy's failures are not the target's
    other.shadow_compared("mismatch", 0.0, None)  # another collection's are not docs'
    signals = signals_from_exposition(metrics.render().decode(), "docs")
    assert signals_from_families(metrics.collect(), "docs") == signals  # in process, no text
    assert (signals.matches, signals.mismatches, signals.in_flight) == (2, 1, 1)
    assert (signals.recall_sum, signals.recall_count) == (pytest.approx(2.6), 3)  # in flight: not observed
    assert (signals.target_operations, signals.target_failures) == (3, 2)
    # The target's latency is its served reads': its 20 ms shadow read (niced) is not a caller's.
    target = dict(signals.search_buckets["target"])
    assert (target[0.00025], target[0.0005], target[0.025], target[math.inf]) == (0, 1, 1, 1)
    assert dict(signals.search_buckets["legacy"])[math.inf] == 2


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("50,25", "rise"),
        ("0,50", "(0, 100]"),
        ("10,101", "(0, 100]"),
        ("ten", "commas"),
        ("", "at least one"),
    ],
)
def test_steps_must_be_rising_percentages(text, problem):
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace("]", r"\]")):
        parse_steps(text)
    assert parse_steps("10, 25,50,100") == (10, 25, 50, 100)
