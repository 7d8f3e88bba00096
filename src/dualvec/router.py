"""The router: one `VectorStore` in front of the legacy store and sqlite-vec.

Writes (phases `dual` and `target-primary`) record an intent in the outbox, write the primary,
then the secondary, then clear the intent; a primary failure raises to the caller, a secondary
failure never does (the replayer repairs it). Reads go to the target for a sticky
`read_percent` of routing keys, and a `shadow_percent` sample also runs on the other store in
the background, compared and published, never delaying or failing the caller.

Flags come from a `FlagWatcher`, so `dualvec flags set` and `dualvec rollback` reach a running
router within a second.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar

import structlog

from dualvec.closing import Closing
from dualvec.compare import CompareThresholds
from dualvec.errors import ConfigError
from dualvec.filters import Filter, parse_filter
from dualvec.flags import FlagSnapshot, FlagWatcher
from dualvec.metrics import DualvecMetrics
from dualvec.mismatch_log import MismatchLog
from dualvec.outbox import Op, Outbox, Role, other_role
from dualvec.protocol import VectorStore
from dualvec.records import Hit, Record
from dualvec.registry import open_store
from dualvec.replay import ReplayResult, replay_once
from dualvec.routing import in_percent, key_fingerprint
from dualvec.settings import Flags, Phase, Settings
from dualvec.shadow import ShadowRunner
from dualvec.spec import CollectionSpec
from dualvec.validation import check_ids, check_k, check_model, check_query_vector, check_records

__all__ = ["Router", "routing_key", "write_roles"]

log = structlog.get_logger("dualvec.router")

_routing_key: ContextVar[str | None] = ContextVar("dualvec_routing_key", default=None)


@contextmanager
def routing_key(key: str | None) -> Iterator[None]:
    """Route every read in this context by `key` (a tenant, user or request id)."""
    token = _routing_key.set(key)
    try:
        yield
    finally:
        _routing_key.reset(token)


def write_roles(phase: Phase) -> tuple[Role, Role | None]:
    """(primary, secondary) for a phase; secondary None when only one store is written."""
    roles: dict[Phase, tuple[Role, Role | None]] = {
        Phase.LEGACY: ("legacy", None),
        Phase.DUAL: ("legacy", "target"),
        Phase.TARGET_PRIMARY: ("target", "legacy"),
        Phase.TARGET: ("target", None),
    }
    return roles[phase]


def _check_compatible(legacy: CollectionSpec, target: CollectionSpec) -> None:
    def shape(spec: CollectionSpec) -> tuple[object, ...]:
        fields = {n: (f.type, f.filterable, f.optional) for n, f in spec.fields.items()}
        return spec.dim, spec.metric, spec.model, spec.id_type, fields

    if shape(legacy) != shape(target):
        raise ConfigError(
            f"legacy and target collections differ (dim, metric, model, id_type, fields): "
            f"{shape(legacy)} vs {shape(target)}; both must describe the same data"
        )


class Router(Closing):
    """A `VectorStore` that migrates reads and writes between two stores by flag.

    The router owns the stores it is given and closes them with itself.
    """

    def __init__(
        self,
        legacy: VectorStore,
        target: VectorStore,
        settings: Settings,
        *,
        metrics: DualvecMetrics | None = None,
        start_replayer: bool = True,
    ) -> None:
        # Whatever is opened is closed again, newest first, on close or on a failed start.
        with ExitStack() as opened:
            opened.callback(legacy.close)
            opened.callback(target.close)
            _check_compatible(legacy.spec, target.spec)
            self.spec = target.spec
            self.stores: dict[Role, VectorStore] = {"legacy": legacy, "target": target}
            self.settings = settings
            self.metrics = metrics or DualvecMetrics()
            self.outbox = opened.enter_context(Outbox(settings.outbox_path, self.spec.name))
            shadow = settings.shadow
            self.shadow = opened.enter_context(
                ShadowRunner(
                    metrics=self.metrics,
                    workers=shadow.workers,
                    max_pending=shadow.max_pending,
                    timeout_seconds=shadow.timeout_seconds,
                    niceness=shadow.niceness,
                    thresholds=CompareThresholds(
                        min_recall=shadow.min_recall, max_distance_delta=shadow.max_distance_delta
                    ),
                    mismatch_log=MismatchLog(shadow.mismatch_log),
                )
            )
            self._secondary_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dualvec-secondary")
            opened.callback(self._secondary_writer.shutdown)
            self._read_salt = f"read:{self.spec.name}"
            self._flags = FlagWatcher(
                settings.flag_file,
                settings.flags,
                poll_seconds=settings.flag_poll_seconds,
                on_change=self._publish_flags,
            )
            opened.callback(self._flags.close)
            self._publish_flags(self._flags.current)
            self._opened = opened.pop_all()
        self._stop = threading.Event()
        self._replayer: threading.Thread | None = None
        if start_replayer:
            self._replayer = threading.Thread(target=self._replay_loop, name="dualvec-replay", daemon=True)
            self._replayer.start()

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: object) -> Router:
        """Open both stores named in `settings` and route between them."""
        if not settings.legacy_url or not settings.target_url:
            raise ConfigError("set legacy_url and target_url (DUALVEC_LEGACY_URL, DUALVEC_TARGET_URL)")
        legacy_spec, target_spec = settings.specs()
        legacy = open_store(settings.legacy_url, legacy_spec)
        try:
            target = open_store(settings.target_url, target_spec)
        except BaseException:
            legacy.close()
            raise
        return cls(legacy, target, settings, **kwargs)  # type: ignore[arg-type]

    @property
    def exact(self) -> bool:
        """Both stores answer exactly (a LanceDB table turns approximate once it gets an index)."""
        return all(store.exact for store in self.stores.values())

    # flags

    @property
    def flags(self) -> FlagSnapshot:
        return self._flags.current

    def _publish_flags(self, snapshot: FlagSnapshot) -> None:
        flags = snapshot.flags
        self.metrics.set_flags(flags.phase.value, flags.read_percent, flags.shadow_percent)

    def reads_target(self, flags: Flags, key: str | None) -> bool:
        if flags.phase is Phase.LEGACY:
            return False
        if flags.phase is Phase.TARGET:
            return True
        return in_percent(key, self._read_salt, flags.read_percent)

    # reads

    def search(
        self,
        vector: object,
        k: int = 10,
        filter: Filter | None = None,
        *,
        model: str | None = None,
        routing_key: str | None = None,
    ) -> list[Hit]:
        """Search the store this caller is routed to; maybe shadow it on the other one."""
        check_model(self.spec, model)
        query = check_query_vector(self.spec, vector)
        limit = check_k(k)
        parse_filter(self.spec, filter)
        flags = self._flags.current.flags
        key = routing_key if routing_key is not None else _routing_key.get()
        served: Role = "target" if self.reads_target(flags, key) else "legacy"
        store = self.stores[served]
        start = time.perf_counter()  # timed inline: the hot path pays no context manager
        try:
            hits = store.search(query, limit, filter)
        finally:
            self.metrics.observe(served, "search", "primary", time.perf_counter() - start)
        self.metrics.served(served)
        # Sampled per read, not per key: every tenant gets compared, at the same rate, and the
        # sample is independent of which store served the read.
        if flags.phase in (Phase.DUAL, Phase.TARGET_PRIMARY) and in_percent(None, "", flags.shadow_percent):
            other = other_role(served)
            other_store = self.stores[other]
            self.shadow.submit(
                served_store=served,
                served_hits=hits,
                other_store=other,
                run_other=lambda: other_store.search(query, limit, filter),
                run_served=lambda: store.search(query, limit, filter),
                k=limit,
                query_id=uuid.uuid4().hex,
                routing_key_hash=key_fingerprint(key),
            )
        return hits

    def get(self, ids: Sequence[str], *, routing_key: str | None = None) -> list[Record]:
        clean = check_ids(self.spec, ids)
        key = routing_key if routing_key is not None else _routing_key.get()
        served: Role = "target" if self.reads_target(self._flags.current.flags, key) else "legacy"
        with self.metrics.time(served, "get", "primary"):
            return self.stores[served].get(clean)

    def count(self) -> int:
        primary, _ = write_roles(self._flags.current.flags.phase)
        with self.metrics.time(primary, "count", "primary"):
            return self.stores[primary].count()

    def scan(self, batch_size: int = 1000) -> Iterator[list[Record]]:
        primary, _ = write_roles(self._flags.current.flags.phase)
        return self.stores[primary].scan(batch_size)

    # writes

    def upsert(self, records: Iterable[Record], *, model: str | None = None) -> None:
        """Write both stores; a primary failure raises, a secondary failure never does."""
        check_model(self.spec, model)
        clean = check_records(self.spec, records)
        if clean:
            self._write("upsert", [r.id for r in clean], lambda store: store.upsert(clean))

    def delete(self, ids: Sequence[str]) -> None:
        clean = check_ids(self.spec, ids)
        if clean:
            self._write("delete", clean, lambda store: store.delete(clean))

    def _write(self, op: Op, ids: list[str], apply: Callable[[VectorStore], None]) -> None:
        primary, secondary = write_roles(self._flags.current.flags.phase)
        if secondary is None:
            self._apply_primary(primary, op, apply)
            return
        with self.outbox.write_lock():
            self.outbox.record(ids, op, primary)
            # Both stores are written at once (each releases the GIL inside its engine), so a
            # dual write costs about the slower store's time, not the sum. The intent, already
            # durable, covers any outcome: if the primary fails while the secondary succeeds,
            # the replayer reverts the secondary to what the primary holds.
            second = self._secondary_writer.submit(self._apply_secondary, secondary, op, apply)
            try:
                self._apply_primary(primary, op, apply)
            finally:
                failure = second.result()
            if failure is not None:
                self.metrics.write_failed(secondary, op)
                log.warning(
                    "secondary_write_failed", store=secondary, op=op, ids=len(ids), error=repr(failure)
                )
                self.outbox.failed(ids, repr(failure))
                return
            self.outbox.clear(ids)

    def _apply_secondary(
        self, secondary: Role, op: Op, apply: Callable[[VectorStore], None]
    ) -> Exception | None:
        """Write the secondary; hand back its failure instead of raising it."""
        try:
            with self.metrics.time(secondary, op, "secondary"):
                apply(self.stores[secondary])
        except Exception as exc:
            return exc
        return None

    def _apply_primary(self, primary: Role, op: Op, apply: Callable[[VectorStore], None]) -> None:
        try:
            with self.metrics.time(primary, op, "primary"):
                apply(self.stores[primary])
        except Exception:
            self.metrics.write_failed(primary, op)
            raise

    # repair

    def replay(self, limit: int | None = None) -> ReplayResult:
        """Repair up to `limit` intents (default: the configured batch) now."""
        result = replay_once(self.outbox, self.stores, limit or self.settings.replay_batch_size)
        if result.upserted:
            self.metrics.repaired("upsert", result.upserted)
        if result.deleted:
            self.metrics.repaired("delete", result.deleted)
        self._publish_outbox()
        return result

    def _publish_outbox(self) -> None:
        stats = self.outbox.stats()
        self.metrics.set_outbox(stats.depth, stats.oldest_age_seconds)

    def _replay_loop(self) -> None:
        while not self._stop.wait(self.settings.replay_interval_seconds):
            try:
                # Published before repairing too: a repair that takes a while must not hide the
                # backlog it is working through from the dashboard.
                self._publish_outbox()
                if self.outbox.stats().depth:
                    self.replay()
            except Exception as exc:  # the replayer must outlive any one failure
                log.error("replayer_failed", error=repr(exc))

    # lifecycle

    def close(self) -> None:
        self._stop.set()
        if self._replayer is not None:
            self._replayer.join(timeout=30)
        self._opened.close()
