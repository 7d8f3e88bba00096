"""Prometheus metrics for a migration, built on an injected registry and never as module globals.

Each metric answers one question an operator asks while ramping:

=============================================  ====================================================
question                                       metric
=============================================  ====================================================
How much traffic does sqlite-vec serve now?    ``dualvec_reads_total{store}``
Is the target as fast as legacy?               ``dualvec_operation_duration_seconds{store,op,role}``
Does the target answer like legacy?            ``dualvec_shadow_comparisons_total{outcome}``
                                               (match, mismatch, in_flight),
                                               ``dualvec_shadow_recall``,
                                               ``dualvec_shadow_distance_delta``
Are we comparing the sample we asked for?      ``dualvec_shadow_dropped_total{reason}``
Can the comparisons themselves be trusted?     ``dualvec_compare_errors_total``
Does the target fail operations?               ``dualvec_read_failures_total{store,op}``,
                                               ``dualvec_write_failures_total{store,op}``
Does every write reach both stores?            ``dualvec_write_failures_total{store,op}``,
                                               ``dualvec_outbox_depth``,
                                               ``dualvec_outbox_oldest_age_seconds``,
                                               ``dualvec_repairs_total{kind}``
What is each process configured to do?         ``dualvec_flag_read_percent``,
                                               ``dualvec_flag_shadow_percent``, ``dualvec_phase``
Did a flag change fail to arrive?              ``dualvec_flags_refused_total``
What did the automatic guard measure?          ``dualvec_guard_checks_total{check,result}``,
                                               ``dualvec_guard_value{check}``,
                                               ``dualvec_guard_threshold{check}``
Did the guard roll back, and why?              ``dualvec_guard_rollbacks_total{reason}``
Which versions are running?                    ``dualvec_build_info{version,python,sqlite_vec}``
=============================================  ====================================================

Every metric carries a ``collection`` label: the declared collection names, a small set the
operator chose (never ids, tenants or query text). The other labels come only from the small
fixed sets below, and every labelled child is created at zero when a collection is added: a
series that exists before its first event lets ``rate()`` and ``increase()`` see that first
event, and dashboards show 0 rather than "no data". ``dualvec_build_info`` alone is per process.

Multiprocess mode (gunicorn and the like): prometheus_client decides at import time, so
``PROMETHEUS_MULTIPROC_DIR`` must be set before anything imports it; `DualvecMetrics` refuses to
start when it was set too late, because values would silently miss the shared directory.
`DualvecMetrics.render` then sums every process's files. Gauges declare how processes combine:
flags, phase and build info take the largest value among live processes (during a rollback,
"does any worker still read the target?"; during a flag change, both phases show as 1); outbox
gauges take the most recent reading, since every process measures the same shared outbox. Live
modes need the server to call ``prometheus_client.multiprocess.mark_process_dead(pid)`` when a
worker exits (gunicorn's ``child_exit`` hook).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from time import perf_counter
from typing import Literal, TypeVar, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from dualvec.errors import ConfigError

__all__ = [
    "DISTANCE_DELTA_BUCKETS",
    "DROP_REASONS",
    "GUARD_CHECKS",
    "GUARD_RESULTS",
    "LATENCY_BUCKETS",
    "OPS",
    "OUTCOMES",
    "PHASES",
    "READ_OPS",
    "RECALL_BUCKETS",
    "ROLES",
    "ROLLBACK_REASONS",
    "STORES",
    "WRITE_OPS",
    "CollectionMetrics",
    "DropReason",
    "DualvecMetrics",
    "GuardCheck",
    "GuardResult",
    "Op",
    "Outcome",
    "Phase",
    "ReadOp",
    "Role",
    "RollbackReason",
    "Store",
    "WriteOp",
    "multiprocess_registry",
]

Store = Literal["legacy", "target"]
Op = Literal["upsert", "delete", "get", "search", "count", "scan"]
Role = Literal["primary", "secondary", "shadow"]
Phase = Literal["legacy", "dual", "target-primary", "target"]
DropReason = Literal["saturated", "timeout", "error", "phase_changed"]
# match: the answers agree; mismatch: they differ; in_flight: they differ only by ids being
# written between the two reads (see dualvec.recent_writes).
Outcome = Literal["match", "mismatch", "in_flight"]
WriteOp = Literal["upsert", "delete"]
ReadOp = Literal["search", "get"]
# What the guard checks over an interval (see dualvec.guard.checks), what each check found, and
# why it rolled a collection back: a failed check, an interval without data under
# on_no_data = "fail", or signals it could not read.
GuardCheck = Literal["comparisons", "mismatch_ratio", "recall", "p99_ratio", "error_ratio"]
GuardResult = Literal["pass", "fail", "no_data"]
RollbackReason = Literal["mismatch_ratio", "recall", "p99_ratio", "error_ratio", "no_data", "source_error"]

STORES: tuple[Store, ...] = get_args(Store)
OPS: tuple[Op, ...] = get_args(Op)
ROLES: tuple[Role, ...] = get_args(Role)
PHASES: tuple[Phase, ...] = get_args(Phase)
DROP_REASONS: tuple[DropReason, ...] = get_args(DropReason)
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
WRITE_OPS: tuple[WriteOp, ...] = get_args(WriteOp)
READ_OPS: tuple[ReadOp, ...] = get_args(ReadOp)
GUARD_CHECKS: tuple[GuardCheck, ...] = get_args(GuardCheck)
GUARD_RESULTS: tuple[GuardResult, ...] = get_args(GuardResult)
ROLLBACK_REASONS: tuple[RollbackReason, ...] = get_args(RollbackReason)

# 0.1 ms (an in-process lookup) to 5 s (a store in trouble), about 2.5x apart.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
# Dense near 1: exact stores should sit at 1.0, approximate ones at 0.9 and above.
RECALL_BUCKETS = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
# float32 rounding (~1e-7) up to "a different vector" (~1).
DISTANCE_DELTA_BUCKETS = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)

K = TypeVar("K")
V = TypeVar("V")


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def _multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def multiprocess_registry() -> CollectorRegistry:
    """A registry summing every process's metrics from ``PROMETHEUS_MULTIPROC_DIR``.

    For an exposition endpoint in multiprocess mode, including one that builds no
    `DualvecMetrics` of its own (a gunicorn master, a sidecar). Never register metrics in it:
    they would be exposed twice.
    """
    path = _multiprocess_dir()
    if path is None:
        raise ConfigError("PROMETHEUS_MULTIPROC_DIR is not set; multiprocess mode is off")
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


def _child(children: dict[K, V], key: K) -> V:
    """The pre-created child for `key`; an unknown label value is a bug, said plainly."""
    try:
        return children[key]
    except KeyError:
        raise ValueError(f"label values {key!r} are not one of dualvec's fixed label sets") from None


class DualvecMetrics:
    """Every dualvec metric family, registered in `registry` (a fresh `CollectorRegistry` when
    None). Build one per process and share it among its collections; each router records
    through its `collection(name)` view. Tests build their own and read samples back with
    ``registry.get_sample_value``.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        if _multiprocess_dir() is not None and values.ValueClass is values.MutexValue:
            raise ConfigError(
                "PROMETHEUS_MULTIPROC_DIR was set after prometheus_client was imported, so this "
                "process's metrics would not reach the shared directory; set it before starting Python"
            )
        self.registry = registry if registry is not None else CollectorRegistry()
        reg = self.registry
        self._collections: dict[str, CollectionMetrics] = {}
        self.duration = Histogram(
            "dualvec_operation_duration_seconds",
            "Time one store operation took, by store, operation and the role the store played.",
            ["collection", "store", "op", "role"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.reads = Counter(
            "dualvec_reads",
            "Reads answered to the caller, by the store that served them.",
            ["collection", "store"],
            registry=reg,
        )
        self.comparisons = Counter(
            "dualvec_shadow_comparisons",
            "Shadow reads compared with the served answer, by outcome.",
            ["collection", "outcome"],
            registry=reg,
        )
        self.recall = Histogram(
            "dualvec_shadow_recall",
            "Recall@k of the target's top-k against legacy's, one observation per comparison.",
            ["collection"],
            buckets=RECALL_BUCKETS,
            registry=reg,
        )
        self.distance_delta = Histogram(
            "dualvec_shadow_distance_delta",
            "Largest absolute distance difference over the ids both answers share, per comparison.",
            ["collection"],
            buckets=DISTANCE_DELTA_BUCKETS,
            registry=reg,
        )
        self.dropped = Counter(
            "dualvec_shadow_dropped",
            "Shadow reads not compared: pool saturated, candidate too slow, candidate raised, or the "
            "collection left dual writes before the comparison ran.",
            ["collection", "reason"],
            registry=reg,
        )
        self.compare_errors = Counter(
            "dualvec_compare_errors",
            "Failures inside shadow comparison or publishing (bugs in dualvec, not in a store).",
            ["collection"],
            registry=reg,
        )
        self.write_failures = Counter(
            "dualvec_write_failures",
            "Writes a store refused, by store and operation.",
            ["collection", "store", "op"],
            registry=reg,
        )
        self.read_failures = Counter(
            "dualvec_read_failures",
            "Reads a store failed, by store and operation, whether served or shadow.",
            ["collection", "store", "op"],
            registry=reg,
        )
        self.outbox_depth = Gauge(
            "dualvec_outbox_depth",
            "Ids whose write has not yet reached both stores.",
            ["collection"],
            registry=reg,
            multiprocess_mode="livemostrecent",
        )
        self.outbox_age = Gauge(
            "dualvec_outbox_oldest_age_seconds",
            "Age of the oldest pending outbox intent; 0 when the outbox is empty.",
            ["collection"],
            registry=reg,
            multiprocess_mode="livemostrecent",
        )
        self.repairs = Counter(
            "dualvec_repairs",
            "Ids the replayer copied from the primary to the secondary, by kind.",
            ["collection", "kind"],
            registry=reg,
        )
        self.read_percent = Gauge(
            "dualvec_flag_read_percent",
            "Percent of routing keys read from the target (0-100).",
            ["collection"],
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.shadow_percent = Gauge(
            "dualvec_flag_shadow_percent",
            "Percent of reads also run on the other store and compared (0-100).",
            ["collection"],
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.phase = Gauge(
            "dualvec_phase",
            "1 for the migration phase in force, 0 for the others.",
            ["collection", "phase"],
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.flags_refused = Counter(
            "dualvec_flags_refused",
            "Flag values refused (a flag file that does not parse or validate, a flag service value "
            "of the wrong type or out of range); the last good flags stayed in force.",
            ["collection"],
            registry=reg,
        )
        self.guard_checks = Counter(
            "dualvec_guard_checks",
            "Guard checks evaluated at the end of an interval, by check and result.",
            ["collection", "check", "result"],
            registry=reg,
        )
        self.guard_value = Gauge(
            "dualvec_guard_value",
            "What each guard check last measured (comparisons: a count; the others: ratios).",
            ["collection", "check"],
            registry=reg,
            multiprocess_mode="livemostrecent",
        )
        self.guard_threshold = Gauge(
            "dualvec_guard_threshold",
            "The limit each guard check was last held to (a minimum or a maximum, see the check).",
            ["collection", "check"],
            registry=reg,
            multiprocess_mode="livemostrecent",
        )
        self.guard_rollbacks = Counter(
            "dualvec_guard_rollbacks",
            "Collections the guard rolled back, by the reason.",
            ["collection", "reason"],
            registry=reg,
        )
        build_info = Gauge(
            "dualvec_build_info",
            "Always 1; the labels name the running versions.",
            ["version", "python", "sqlite_vec"],
            registry=reg,
            multiprocess_mode="livemax",
        )
        build_info.labels(
            version=_package_version("dualvec"),
            python=platform.python_version(),
            sqlite_vec=_package_version("sqlite-vec"),
        ).set(1)

    def collection(self, name: str) -> CollectionMetrics:
        """The metrics of collection `name`, its series created at zero on first use."""
        view = self._collections.get(name)
        if view is None:
            view = self._collections.setdefault(name, CollectionMetrics(self, name))
        return view

    def render(self) -> bytes:
        """The text a /metrics endpoint returns: in multiprocess mode the sum over every
        process's files, otherwise this registry (content type:
        ``prometheus_client.CONTENT_TYPE_LATEST``)."""
        return generate_latest(self._exposed())

    def collect(self) -> Iterable[Metric]:
        """The families /metrics shows (every process's in multiprocess mode), as objects: what
        an in-process reader such as the guard takes, without rendering and parsing text."""
        return self._exposed().collect()

    def _exposed(self) -> CollectorRegistry:
        return multiprocess_registry() if _multiprocess_dir() is not None else self.registry


class CollectionMetrics:
    """What one collection records, every child labelled with its name and made up front."""

    def __init__(self, families: DualvecMetrics, name: str) -> None:
        self.name = name
        self._registry = families.registry
        f = families
        self._duration = {
            (s, o, r): f.duration.labels(collection=name, store=s, op=o, role=r)
            for s in STORES
            for o in OPS
            for r in ROLES
        }
        self._reads = {s: f.reads.labels(collection=name, store=s) for s in STORES}
        self._comparisons = {o: f.comparisons.labels(collection=name, outcome=o) for o in OUTCOMES}
        self._recall = f.recall.labels(collection=name)
        self._distance_delta = f.distance_delta.labels(collection=name)
        self._dropped = {r: f.dropped.labels(collection=name, reason=r) for r in DROP_REASONS}
        self._compare_errors = f.compare_errors.labels(collection=name)
        self._write_failures = {
            (s, o): f.write_failures.labels(collection=name, store=s, op=o) for s in STORES for o in WRITE_OPS
        }
        self._read_failures = {
            (s, o): f.read_failures.labels(collection=name, store=s, op=o) for s in STORES for o in READ_OPS
        }
        self._outbox_depth = f.outbox_depth.labels(collection=name)
        self._outbox_age = f.outbox_age.labels(collection=name)
        self._repairs = {k: f.repairs.labels(collection=name, kind=k) for k in WRITE_OPS}
        self._read_percent = f.read_percent.labels(collection=name)
        self._shadow_percent = f.shadow_percent.labels(collection=name)
        self._phase = {p: f.phase.labels(collection=name, phase=p) for p in PHASES}
        self._flags_refused = f.flags_refused.labels(collection=name)
        self._guard_checks = {
            (c, r): f.guard_checks.labels(collection=name, check=c, result=r)
            for c in GUARD_CHECKS
            for r in GUARD_RESULTS
        }
        self._guard_value = {c: f.guard_value.labels(collection=name, check=c) for c in GUARD_CHECKS}
        self._guard_threshold = {c: f.guard_threshold.labels(collection=name, check=c) for c in GUARD_CHECKS}
        self._guard_rollbacks = {
            r: f.guard_rollbacks.labels(collection=name, reason=r) for r in ROLLBACK_REASONS
        }

    def value(self, metric: str, **labels: str) -> float:
        """A sample of this collection as this process's registry holds it (0 when absent):
        what the dashboard would show, for reports and benchmarks."""
        return self._registry.get_sample_value(metric, {"collection": self.name, **labels}) or 0.0

    # latency

    def observe(self, store: Store, op: Op, role: Role, seconds: float) -> None:
        """Record one operation's duration, whether it succeeded or raised."""
        _child(self._duration, (store, op, role)).observe(seconds)

    @contextmanager
    def time(self, store: Store, op: Op, role: Role) -> Iterator[None]:
        """Time the block with `observe`, failures included: a slow failure is still slow."""
        start = perf_counter()
        try:
            yield
        finally:
            self.observe(store, op, role, perf_counter() - start)

    # reads and shadows

    def served(self, store: Store) -> None:
        """One read answered to the caller by `store`."""
        _child(self._reads, store).inc()

    def shadow_compared(self, outcome: Outcome, recall: float, max_distance_delta: float | None) -> None:
        """Publish one comparison. `max_distance_delta` is None when the answers share no id.

        One delta per comparison (the worst) rather than one per id, so the histogram's count is
        the number of comparisons and its buckets read as "share of queries worse than x". A
        comparison set aside as in flight (its differences are ids being written between the
        two reads) says nothing about the target, so its recall and delta are not observed.
        """
        _child(self._comparisons, outcome).inc()
        if outcome == "in_flight":
            return
        self._recall.observe(recall)
        if max_distance_delta is not None:
            self._distance_delta.observe(max_distance_delta)

    def shadow_dropped(self, reason: DropReason) -> None:
        """A shadow read that was not compared, and why."""
        _child(self._dropped, reason).inc()

    def compare_error(self) -> None:
        """A failure inside comparison or publishing."""
        self._compare_errors.inc()

    def read_failed(self, store: Store, op: ReadOp) -> None:
        """A read (search or get) that `store` failed, served to a caller or run as a shadow."""
        _child(self._read_failures, (store, op)).inc()

    # writes and repair

    def write_failed(self, store: Store, op: WriteOp) -> None:
        """A write (upsert or delete) that `store` refused."""
        _child(self._write_failures, (store, op)).inc()

    def set_outbox(self, depth: int, oldest_age_seconds: float) -> None:
        """The outbox's pending ids and the age of the oldest (0 when empty)."""
        self._outbox_depth.set(depth)
        self._outbox_age.set(oldest_age_seconds)

    def repaired(self, kind: WriteOp, n: int = 1) -> None:
        """`n` ids the replayer repaired."""
        _child(self._repairs, kind).inc(n)

    # flags

    def set_flags(self, phase: Phase, read_percent: float, shadow_percent: float) -> None:
        """The flags this process applies now; call on start and after every flag change."""
        current = _child(self._phase, phase)
        for gauge in self._phase.values():
            gauge.set(1 if gauge is current else 0)
        self._read_percent.set(read_percent)
        self._shadow_percent.set(shadow_percent)

    def flags_refused(self) -> None:
        """New flags for this collection were refused; its last good flags stay in force."""
        self._flags_refused.inc()

    # the guard

    def guard_checked(
        self, check: GuardCheck, result: GuardResult, value: float | None, threshold: float
    ) -> None:
        """One check at the end of an interval; `value` None when there was nothing to measure
        (the last measured value stays)."""
        _child(self._guard_checks, (check, result)).inc()
        _child(self._guard_threshold, check).set(threshold)
        if value is not None:
            _child(self._guard_value, check).set(value)

    def guard_rolled_back(self, reason: RollbackReason) -> None:
        """The guard rolled this collection back."""
        _child(self._guard_rollbacks, reason).inc()
