"""Shadow reads: run a read on the other store off the caller's path, compare, publish.

The caller's path is sacred (as in github/scientist): `ShadowRunner.submit` does no I/O, never
blocks and never raises; the shadow call's exceptions, its slowness and any bug in comparing or
publishing stay in the worker, where they are counted and handed to one overridable hook.

Bounds, because Python cannot kill a running thread:

- At most `max_pending` shadows are queued or running. When that many are in flight the next
  one is dropped and counted (``dualvec_shadow_dropped_total{reason="saturated"}``), never
  queued without bound and never waited for. This bound, not the timeout, is what protects the
  service from a candidate that hangs: a hung call holds one of `workers` threads for as long
  as it hangs, and no more work piles up behind it.
- A shadow call that itself takes longer than `timeout_seconds` (time spent queued does not
  count) is a timeout: its latency is still recorded, its result is discarded and counted
  (``reason="timeout"``), because a comparison against an answer that slow says little about
  the query the caller made.

Control and candidate follow `compare`: legacy is the control whichever store served. Before
trusting mismatch rates, run A/A (a store against itself) to see the noise floor.

A write landing between the served read and the shadow read makes the two answers differ
although both stores are right. So when `run_served` is given, a mismatch is confirmed by
running both reads again back to back in the worker: only a difference that persists is
counted and logged as a mismatch; one that vanishes was a race with a live write.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from time import perf_counter
from typing import Literal

from dualvec.closing import Closing
from dualvec.compare import CompareThresholds, Comparison, compare, without_written
from dualvec.errors import ConfigError
from dualvec.forking import working
from dualvec.logs import get_logger
from dualvec.metrics import STORES, CollectionMetrics, Outcome, Store
from dualvec.mismatch_log import MismatchLog, MismatchSample, utc_now
from dualvec.priority import lower_priority
from dualvec.recent_writes import RecentWrites
from dualvec.records import Hit

__all__ = ["ErrorHook", "ShadowRunner", "Stage", "log_shadow_error"]

log = get_logger("dualvec.shadow")

Stage = Literal["submit", "call", "compare", "publish"]
ErrorHook = Callable[[Stage, str, Exception], None]
"""Called with the stage that failed, the query id and the exception; its own errors are logged."""


def log_shadow_error(stage: Stage, query_id: str, exc: Exception) -> None:
    """The default hook: one structlog event with the traceback."""
    log.warning("shadow_failed", stage=stage, query_id=query_id, exc_info=exc)


@dataclass(frozen=True)
class _Job:
    metrics: CollectionMetrics
    served_store: Store
    served_hits: tuple[Hit, ...]
    other_store: Store
    run_other: Callable[[], Sequence[Hit]]
    k: int
    query_id: str
    routing_key_hash: str | None
    run_served: Callable[[], Sequence[Hit]] | None
    recent: RecentWrites | None
    since: float
    comparable: Callable[[], bool] | None


class ShadowRunner(Closing):
    """A bounded pool of shadow reads; see the module docstring for the guarantees.

    Counting does not depend on the hook: a failed shadow call is counted as
    ``dualvec_shadow_dropped_total{reason="error"}`` and a failure in submit, compare or publish
    as ``dualvec_compare_errors_total`` before `on_error` sees it, so a custom hook cannot blind
    the dashboards.
    """

    def __init__(
        self,
        *,
        mismatch_log: MismatchLog,
        workers: int = 2,
        max_pending: int = 64,
        timeout_seconds: float = 2.0,
        thresholds: CompareThresholds | None = None,
        on_error: ErrorHook = log_shadow_error,
        niceness: int = 0,
    ) -> None:
        if workers < 1 or max_pending < 1 or timeout_seconds <= 0:
            raise ConfigError(
                f"shadow needs workers >= 1, max_pending >= 1 and timeout_seconds > 0; got "
                f"{workers}, {max_pending}, {timeout_seconds}"
            )
        self._mismatch_log = mismatch_log
        self._timeout = timeout_seconds
        self._thresholds = thresholds or CompareThresholds()
        self._on_error = on_error
        self._slots = threading.BoundedSemaphore(max_pending)
        self._closed = False
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(
            max_workers=workers,
            thread_name_prefix="dualvec-shadow",
            initializer=lower_priority,
            initargs=(niceness,),
        )

    def submit(
        self,
        *,
        metrics: CollectionMetrics,
        served_store: Store,
        served_hits: Sequence[Hit],
        other_store: Store,
        run_other: Callable[[], Sequence[Hit]],
        k: int,
        query_id: str,
        routing_key_hash: str | None = None,
        run_served: Callable[[], Sequence[Hit]] | None = None,
        recent: RecentWrites | None = None,
        since: float = 0.0,
        comparable: Callable[[], bool] | None = None,
    ) -> bool:
        """Queue a shadow read, counted in `metrics` (its collection's); False when it was
        dropped (saturated, closed, or bad arguments). `recent` and `since` (the monotonic time
        the served read began) let a difference made only by writes in flight be told apart.
        `comparable` says whether both stores still receive every write: a shadow that runs after
        the collection left dual writes (phase `target`, or a rollback to `legacy`) compares a
        store that stopped following, so it is dropped (``reason="phase_changed"``), not counted.

        Structlog context variables bound by the caller (collection, request id) follow the job
        into the worker.
        """
        try:
            if {served_store, other_store} != set(STORES):
                raise ValueError(f"need one legacy and one target store: {served_store!r}, {other_store!r}")
            job = _Job(
                metrics,
                served_store,
                tuple(served_hits),
                other_store,
                run_other,
                k,
                query_id,
                routing_key_hash,
                run_served,
                recent,
                since,
                comparable,
            )
            with self._lock:  # so that close() cannot shut the pool between the check and submit
                if self._closed:
                    return False
                if not self._slots.acquire(blocking=False):
                    metrics.shadow_dropped("saturated")
                    return False
                try:
                    self._pool.submit(contextvars.copy_context().run, self._run, job)
                except BaseException:
                    self._slots.release()
                    raise
            return True
        except Exception as exc:  # a router bug must not fail the read either
            self._failed(metrics, "submit", query_id, exc)
            return False

    def close(self, wait: bool = True) -> None:
        """Stop accepting shadows; with `wait`, let those queued finish, else cancel them."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=wait, cancel_futures=not wait)

    def _run(self, job: _Job) -> None:
        try:
            # A fork waits for it: the child must not inherit a metric's or the mismatch log's
            # lock held by this thread, which it does not have.
            with working():
                self._shadow(job)
        finally:
            self._slots.release()

    def _shadow(self, job: _Job) -> None:
        metrics = job.metrics
        if not self._comparable(job):
            return
        start = perf_counter()
        try:
            other_hits = tuple(job.run_other())
        except Exception as exc:
            metrics.observe(job.other_store, "search", "shadow", perf_counter() - start)
            metrics.read_failed(job.other_store, "search")
            metrics.shadow_dropped("error")
            self._failed(metrics, "call", job.query_id, exc)
            return
        elapsed = perf_counter() - start
        stage: Stage = "publish"
        try:
            metrics.observe(job.other_store, "search", "shadow", elapsed)
            if elapsed > self._timeout:
                metrics.shadow_dropped("timeout")
                return
            stage = "compare"
            legacy, target = self._by_store(job, job.served_hits, other_hits)
            comparison = compare(legacy, target, job.k, self._thresholds)
            if comparison.mismatch and job.run_served is not None:
                legacy, target = self._by_store(job, tuple(job.run_served()), tuple(job.run_other()))
                comparison = compare(legacy, target, job.k, self._thresholds)
            outcome: Outcome = "mismatch" if comparison.mismatch else "match"
            # What the target is judged by: the answers without the ids being written, when
            # any is among them, so that a write in flight lowers neither the recall observed
            # nor, where it explains every difference, the mismatch count.
            judged = comparison
            if job.recent is not None:
                ids = {h.id for h in (*legacy, *target)}
                remaining = without_written(
                    legacy, target, job.k, job.recent.written_since(ids, job.since), self._thresholds
                )
                if remaining is not None:
                    judged = remaining
                    if comparison.mismatch and not remaining.mismatch:
                        outcome = "in_flight"
                        log.debug("shadow_in_flight", query_id=job.query_id, reasons=comparison.reasons)
            stage = "publish"
            if self._comparable(job):
                self._publish(job, outcome, comparison, judged, legacy, target)
        except Exception as exc:
            self._failed(metrics, stage, job.query_id, exc)

    @staticmethod
    def _comparable(job: _Job) -> bool:
        """False (and counted as a drop) once the collection stopped writing both stores."""
        if job.comparable is None or job.comparable():
            return True
        job.metrics.shadow_dropped("phase_changed")
        return False

    @staticmethod
    def _by_store(
        job: _Job, served: tuple[Hit, ...], other: tuple[Hit, ...]
    ) -> tuple[tuple[Hit, ...], tuple[Hit, ...]]:
        """(legacy, target) answers, whichever store served the caller."""
        return (served, other) if job.served_store == "legacy" else (other, served)

    def _publish(
        self,
        job: _Job,
        outcome: Outcome,
        comparison: Comparison,
        judged: Comparison,
        legacy: tuple[Hit, ...],
        target: tuple[Hit, ...],
    ) -> None:
        """Count the outcome and observe `judged` (the comparison without ids being written);
        a mismatch sample shows `comparison`, the answers as they were."""
        job.metrics.shadow_compared(outcome, judged.recall, judged.max_distance_delta)
        if outcome == "mismatch":
            self._mismatch_log.record(
                MismatchSample(
                    timestamp=utc_now(),
                    query_id=job.query_id,
                    routing_key_hash=job.routing_key_hash,
                    served_store=job.served_store,
                    k=job.k,
                    recall=comparison.recall,
                    rank_agreement=comparison.rank_agreement,
                    max_distance_delta=comparison.max_distance_delta,
                    reasons=comparison.reasons,
                    legacy=tuple(Hit(h.id, h.distance) for h in legacy[: job.k]),
                    target=tuple(Hit(h.id, h.distance) for h in target[: job.k]),
                    collection=job.metrics.name,
                )
            )

    def _failed(self, metrics: CollectionMetrics, stage: Stage, query_id: str, exc: Exception) -> None:
        """Count (unless the shadow call itself failed, counted as a drop), then call the hook."""
        try:
            if stage != "call":
                metrics.compare_error()
            self._on_error(stage, query_id, exc)
        except Exception as hook_exc:
            log.error("shadow_error_hook_failed", stage=stage, query_id=query_id, exc_info=hook_exc)
