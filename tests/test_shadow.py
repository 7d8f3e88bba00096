from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import structlog
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

import dualvec
from dualvec.metrics import DualvecMetrics
from dualvec.mismatch_log import MismatchLog
from dualvec.records import Hit
from dualvec.shadow import ShadowRunner
from dualvec.testing import make_records, sample_spec

ANSWER = [Hit("a", 0.1), Hit("b", 0.2)]
DOCS = "docs"


@pytest.fixture
def metrics() -> DualvecMetrics:
    return DualvecMetrics(CollectorRegistry())


@pytest.fixture
def mismatch_log(tmp_path) -> MismatchLog:
    return MismatchLog(tmp_path / "mismatches.jsonl")


class Errors:
    """An on_error hook that remembers what it was given."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, Exception]] = []

    def __call__(self, stage, query_id, exc) -> None:
        self.seen.append((stage, query_id, exc))


def value(metrics: DualvecMetrics, name: str, **labels: str) -> float:
    """A sample of collection `docs`, unless `collection=` names another."""
    found = metrics.registry.get_sample_value(name, {"collection": DOCS, **labels})
    assert found is not None, name
    return found


def submit(
    runner: ShadowRunner,
    metrics: DualvecMetrics,
    run_other,
    *,
    collection=DOCS,
    served="legacy",
    served_hits=ANSWER,
    k=2,
    query_id="q",
):
    """Submit a shadow read of `collection` (counted in its series)."""
    return runner.submit(
        metrics=metrics.collection(collection),
        served_store=served,
        served_hits=served_hits,
        other_store="target" if served == "legacy" else "legacy",
        run_other=run_other,
        k=k,
        query_id=query_id,
        routing_key_hash="abc",
    )


@pytest.mark.parametrize("url", ["memory://", "sqlite-vec://{tmp}/aa.db"])
def test_a_store_against_itself_never_mismatches(url, tmp_path, metrics, mismatch_log):
    # A/A: control and candidate are the same store; any mismatch here would be noise in the
    # comparison itself, and real A/B mismatch rates could not be trusted.
    spec = sample_spec()
    store = dualvec.open_store(url.format(tmp=tmp_path), spec)
    store.upsert(make_records(300, spec.dim, seed=1))
    queries = np.random.default_rng(2).standard_normal((40, spec.dim)).astype(np.float32)
    with ShadowRunner(mismatch_log=mismatch_log, max_pending=100) as runner:
        for i, query in enumerate(queries):
            served = store.search(query, 10, {"lang": "en"} if i % 2 else None)
            assert submit(
                runner,
                metrics,
                lambda q=query, i=i: store.search(q, 10, {"lang": "en"} if i % 2 else None),
                served_hits=served,
                k=10,
                query_id=f"q{i}",
            )
    store.close()
    assert value(metrics, "dualvec_shadow_comparisons_total", outcome="match") == 40
    assert value(metrics, "dualvec_shadow_comparisons_total", outcome="mismatch") == 0
    assert value(metrics, "dualvec_shadow_recall_bucket", le="0.99") == 0
    assert value(metrics, "dualvec_shadow_distance_delta_bucket", le="1e-07") == 40
    assert value(metrics, "dualvec_shadow_dropped_total", reason="error") == 0
    labels = {"store": "target", "op": "search", "role": "shadow"}
    assert value(metrics, "dualvec_operation_duration_seconds_count", **labels) == 40
    assert mismatch_log.latest(10) == []


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_exact_stores_agree_under_the_default_thresholds(metric, tmp_path, metrics, mismatch_log):
    # Legacy in memory, target in sqlite-vec, both exact: their float32 distances differ by
    # rounding only (about 1e-7), well inside the default 1e-4, so A/B is as clean as A/A.
    spec = sample_spec(metric=metric)
    legacy = dualvec.open_store("memory://", spec)
    target = dualvec.open_store(f"sqlite-vec://{tmp_path}/target.db", spec)
    records = make_records(500, spec.dim, seed=3)
    legacy.upsert(records)
    target.upsert(records)
    queries = np.random.default_rng(5).standard_normal((30, spec.dim)).astype(np.float32)
    with ShadowRunner(mismatch_log=mismatch_log, max_pending=100) as runner:
        for i, query in enumerate(queries):
            served = legacy.search(query, 10)
            submit(
                runner,
                metrics,
                lambda q=query: target.search(q, 10),
                served_hits=served,
                k=10,
                query_id=f"q{i}",
            )
    legacy.close()
    target.close()
    assert value(metrics, "dualvec_shadow_comparisons_total", outcome="match") == 30
    assert mismatch_log.latest(10) == []


def test_a_slow_candidate_does_not_delay_the_caller_and_is_a_timeout(metrics, mismatch_log):
    def slow() -> list[Hit]:
        time.sleep(0.3)
        return ANSWER

    runner = ShadowRunner(mismatch_log=mismatch_log, timeout_seconds=0.05)
    start = time.perf_counter()
    assert submit(runner, metrics, slow)
    assert time.perf_counter() - start < 0.05  # the caller's read returns at once
    runner.close()
    assert value(metrics, "dualvec_shadow_dropped_total", reason="timeout") == 1
    assert value(metrics, "dualvec_shadow_comparisons_total", outcome="match") == 0  # result discarded
    labels = {"store": "target", "op": "search", "role": "shadow"}
    assert value(metrics, "dualvec_operation_duration_seconds_count", **labels) == 1
    assert value(metrics, "dualvec_operation_duration_seconds_sum", **labels) >= 0.3


def test_a_saturated_pool_drops_without_blocking(metrics, mismatch_log):
    release = threading.Event()

    def blocked() -> list[Hit]:
        release.wait(10)
        return ANSWER

    runner = ShadowRunner(mismatch_log=mismatch_log, workers=1, max_pending=2)
    start = time.perf_counter()
    accepted = [submit(runner, metrics, blocked, query_id=f"q{i}") for i in range(5)]
    elapsed = time.perf_counter() - start
    release.set()
    runner.close()
    # One running and one queued fill the 2 slots; the other 3 are dropped at once.
    assert accepted == [True, True, False, False, False]
    assert elapsed < 0.05
    assert value(metrics, "dualvec_shadow_dropped_total", reason="saturated") == 3
    assert value(metrics, "dualvec_shadow_comparisons_total", outcome="match") == 2


def test_one_pool_counts_each_collections_shadows_in_its_own_series(metrics, mismatch_log):
    # A Migration shares one shadow pool among its collections: what happens to a shadow read
    # (compared, dropped, failed) shows in the series of the collection that submitted it.
    release = threading.Event()

    def blocked() -> list[Hit]:
        release.wait(10)
        return ANSWER

    def failing() -> list[Hit]:
        raise RuntimeError("target down")

    runner = ShadowRunner(mismatch_log=mismatch_log, workers=1, max_pending=3, on_error=Errors())
    try:
        accepted = [
            submit(runner, metrics, blocked, collection="claims", query_id="c1"),
            submit(runner, metrics, failing, collection="faq", query_id="f1"),
            submit(runner, metrics, lambda: [Hit("zzz", 0.9)], collection="claims", query_id="c2"),
            submit(runner, metrics, lambda: ANSWER, collection="faq", query_id="f2"),  # pool full
        ]
    finally:
        release.set()
        runner.close()
    assert accepted == [True, True, True, False]

    def both(name: str, **labels: str) -> dict[str, float]:
        return {c: value(metrics, name, collection=c, **labels) for c in ("claims", "faq")}

    assert both("dualvec_shadow_comparisons_total", outcome="match") == {"claims": 1, "faq": 0}
    assert both("dualvec_shadow_comparisons_total", outcome="mismatch") == {"claims": 1, "faq": 0}
    assert both("dualvec_shadow_dropped_total", reason="error") == {"claims": 0, "faq": 1}
    assert both("dualvec_shadow_dropped_total", reason="saturated") == {"claims": 0, "faq": 1}
    labels = {"store": "target", "op": "search", "role": "shadow"}
    assert both("dualvec_operation_duration_seconds_count", **labels) == {"claims": 2, "faq": 1}
    assert [s.query_id for s in mismatch_log.latest(5)] == ["c2"]


def test_slots_free_up_when_shadows_finish(metrics, mismatch_log):
    with ShadowRunner(mismatch_log=mismatch_log, workers=1, max_pending=1) as runner:
        for i in range(3):
            assert submit(runner, metrics, lambda: ANSWER, query_id=f"q{i}")
            deadline = time.monotonic() + 5
            while value(metrics, "dualvec_shadow_comparisons_total", outcome="match") < i + 1:
                assert time.monotonic() < deadline
                time.sleep(0.005)
    assert value(metrics, "dualvec_shadow_dropped_total", reason="saturated") == 0


def test_a_failing_candidate_is_swallowed_counted_and_handed_to_the_hook(metrics, mismatch_log):
    errors = Errors()
    boom = RuntimeError("target down")

    def failing() -> list[Hit]:
        raise boom

    with ShadowRunner(mismatch_log=mismatch_log, on_error=errors) as runner:
        assert submit(runner, metrics, failing, query_id="q-fail")
    assert errors.seen == [("call", "q-fail", boom)]
    assert value(metrics, "dualvec_shadow_dropped_total", reason="error") == 1
    assert value(metrics, "dualvec_compare_errors_total") == 0  # a store failing is not a compare bug
    labels = {"store": "target", "op": "search", "role": "shadow"}
    assert value(metrics, "dualvec_operation_duration_seconds_count", **labels) == 1


def test_a_failing_comparison_is_a_compare_error(metrics, mismatch_log):
    errors = Errors()
    with ShadowRunner(mismatch_log=mismatch_log, on_error=errors) as runner:
        assert submit(runner, metrics, lambda: ANSWER, k=0)  # compare refuses k=0
    ((stage, _, exc),) = errors.seen
    assert stage == "compare"
    assert isinstance(exc, ValueError)
    assert value(metrics, "dualvec_compare_errors_total") == 1


def test_a_failing_publish_is_a_compare_error(tmp_path, metrics):
    errors = Errors()
    (tmp_path / "taken").mkdir()
    unwritable = MismatchLog(tmp_path / "taken")  # a directory: appending to it fails
    with ShadowRunner(mismatch_log=unwritable, on_error=errors) as runner:
        assert submit(runner, metrics, lambda: [Hit("zzz", 0.9)])
    ((stage, _, exc),) = errors.seen
    assert stage == "publish"
    assert isinstance(exc, OSError)
    assert value(metrics, "dualvec_compare_errors_total") == 1
    assert value(metrics, "dualvec_shadow_comparisons_total", outcome="mismatch") == 1


def test_a_failing_hook_is_logged_and_still_never_reaches_the_caller(metrics, mismatch_log):
    def bad_hook(stage, query_id, exc):
        raise KeyError("hook bug")

    def failing() -> list[Hit]:
        raise RuntimeError("target down")

    with (
        capture_logs() as events,
        ShadowRunner(mismatch_log=mismatch_log, on_error=bad_hook) as runner,
    ):
        assert submit(runner, metrics, failing)
    assert [e["event"] for e in events] == ["shadow_error_hook_failed"]
    assert value(metrics, "dualvec_shadow_dropped_total", reason="error") == 1


def test_the_default_hook_logs_with_the_traceback(metrics, mismatch_log):
    def failing() -> list[Hit]:
        raise RuntimeError("target down")

    with capture_logs() as events, ShadowRunner(mismatch_log=mismatch_log) as runner:
        submit(runner, metrics, failing, query_id="q7")
    (event,) = events
    assert (event["event"], event["stage"], event["query_id"]) == ("shadow_failed", "call", "q7")
    assert isinstance(event["exc_info"], RuntimeError)


def test_bad_arguments_are_refused_without_raising(metrics, mismatch_log):
    errors = Errors()
    with ShadowRunner(mismatch_log=mismatch_log, on_error=errors) as runner:
        accepted = runner.submit(
            metrics=metrics.collection(DOCS),
            served_store="target",
            served_hits=ANSWER,
            other_store="target",
            run_other=lambda: ANSWER,
            k=2,
            query_id="q-bad",
        )
    assert accepted is False
    assert [(stage, qid) for stage, qid, _ in errors.seen] == [("submit", "q-bad")]
    assert value(metrics, "dualvec_compare_errors_total") == 1  # counted in the submitter's series


def test_a_mismatch_is_published_with_legacy_as_control_whichever_store_served(metrics, mismatch_log):
    legacy_answer = [Hit("a", 0.1), Hit("b", 0.2)]
    target_answer = [Hit("a", 0.1), Hit("x", 0.15)]
    with ShadowRunner(mismatch_log=mismatch_log) as runner:
        # The target served the caller; legacy ran in the shadow.
        submit(
            runner, metrics, lambda: legacy_answer, served="target", served_hits=target_answer, query_id="q-m"
        )
    (s,) = mismatch_log.latest(5)
    assert (s.query_id, s.served_store, s.routing_key_hash, s.k) == ("q-m", "target", "abc", 2)
    assert s.legacy == tuple(legacy_answer)
    assert s.target == tuple(target_answer)
    # x at 0.15 is closer than legacy's 2nd (0.2): not a tie, 1 of 2 shared.
    assert s.recall == 0.5
    assert s.reasons == ("recall 0.500 below 1.0",)
    assert value(metrics, "dualvec_shadow_comparisons_total", outcome="mismatch") == 1


def test_the_callers_log_context_follows_the_shadow(metrics, mismatch_log):
    seen: list[dict[str, object]] = []

    def candidate() -> list[Hit]:
        seen.append(structlog.contextvars.get_contextvars())
        return ANSWER

    with (
        structlog.contextvars.bound_contextvars(collection="docs", request_id="r-1"),
        ShadowRunner(mismatch_log=mismatch_log) as runner,
    ):
        submit(runner, metrics, candidate)
    assert seen == [{"collection": "docs", "request_id": "r-1"}]


def test_after_close_submissions_are_refused_quietly(metrics, mismatch_log):
    runner = ShadowRunner(mismatch_log=mismatch_log)
    runner.close()
    assert submit(runner, metrics, lambda: ANSWER) is False
    assert value(metrics, "dualvec_shadow_dropped_total", reason="saturated") == 0


def test_a_difference_caused_by_a_live_write_is_rechecked_away(metrics, mismatch_log):
    # The write race is real: the served store changes between the caller's read and the shadow.
    spec = sample_spec()
    served_store = dualvec.open_store("memory://", spec)
    other_store = dualvec.open_store("memory://", spec)
    records = make_records(50, spec.dim, seed=3)
    served_store.upsert(records)
    other_store.upsert(records[1:])
    query = records[0].vector
    served_hits = served_store.search(query, 5)
    served_store.delete([records[0].id])  # the live delete that reached both stores
    with ShadowRunner(mismatch_log=mismatch_log) as runner:
        runner.submit(
            metrics=metrics.collection(DOCS),
            served_store="legacy",
            served_hits=served_hits,
            other_store="target",
            run_other=lambda: other_store.search(query, 5),
            run_served=lambda: served_store.search(query, 5),
            k=5,
            query_id="race",
        )
    assert value(metrics, "dualvec_shadow_comparisons_total", outcome="match") == 1
    assert value(metrics, "dualvec_shadow_comparisons_total", outcome="mismatch") == 0
    assert mismatch_log.latest() == []


def test_a_persistent_difference_survives_the_recheck(metrics, mismatch_log):
    spec = sample_spec()
    legacy, target = dualvec.open_store("memory://", spec), dualvec.open_store("memory://", spec)
    records = make_records(50, spec.dim, seed=4)
    legacy.upsert(records)
    target.upsert(records[1:])  # the target really lacks a record
    query = records[0].vector
    with ShadowRunner(mismatch_log=mismatch_log) as runner:
        runner.submit(
            metrics=metrics.collection(DOCS),
            served_store="legacy",
            served_hits=legacy.search(query, 5),
            other_store="target",
            run_other=lambda: target.search(query, 5),
            run_served=lambda: legacy.search(query, 5),
            k=5,
            query_id="real",
        )
    assert value(metrics, "dualvec_shadow_comparisons_total", outcome="mismatch") == 1
    assert [s.query_id for s in mismatch_log.latest()] == ["real"]


def test_shadow_workers_yield_the_cpu_to_callers(metrics, mismatch_log):
    import os

    seen = []

    def run_other():
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return ANSWER

    caller = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    with ShadowRunner(mismatch_log=mismatch_log, niceness=10) as runner:
        submit(runner, metrics, run_other)
    assert seen == [min(caller + 10, 19)]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == caller
