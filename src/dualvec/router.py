"""The router: one `VectorStore` in front of the legacy store and sqlite-vec.

Writes (phases `dual` and `target-primary`) record an intent in the outbox, write the primary,
then the secondary, then clear the intent; a primary failure raises to the caller, a secondary
failure never does (the replayer repairs it). Reads go to the target for a sticky
`read_percent` of routing keys, and a `shadow_percent` sample also runs on the other store in
the background, compared and published, never delaying or failing the caller.

Flags come from a `FlagSource` (the flag file's `FlagWatcher` by default), so `dualvec flags
set` and `dualvec rollback` reach a running router within a second.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar

from dualvec.closing import Closing
from dualvec.errors import ConfigError
from dualvec.filters import Filter
from dualvec.flags import FlagSnapshot, FlagSource, FlagSourceFactory
from dualvec.logs import get_logger
from dualvec.metrics import CollectionMetrics, DualvecMetrics
from dualvec.outbox import Op, Outbox, Role, other_role
from dualvec.phases import write_roles
from dualvec.protocol import VectorStore
from dualvec.recent_writes import RecentWrites
from dualvec.records import Hit, Record
from dualvec.replay import ReplayResult, replay_once
from dualvec.routing import in_percent, key_fingerprint
from dualvec.search_checks import check_search
from dualvec.settings import Flags, Phase, Settings
from dualvec.shadow import ShadowRunner
from dualvec.spec import CollectionSpec
from dualvec.validation import check_ids, check_model, check_records

__all__ = ["Router", "routing_key"]

log = get_logger("dualvec.router")

_routing_key: ContextVar[str | None] = ContextVar("dualvec_routing_key", default=None)


@contextmanager
def routing_key(key: str | None) -> Iterator[None]:
    """Route every read in this context by `key` (a tenant, user or request id)."""
    token = _routing_key.set(key)
    try:
        yield
    finally:
        _routing_key.reset(token)


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

    A router is given its collaborators (outbox, flags, shadow pool, metrics, secondary writer)
    by the `Migration` it belongs to, which several routers share; it owns only its two stores.
    `Router.from_settings` and `Router.over` build a one-collection migration that the router
    closes with itself.
    """

    def __init__(
        self,
        legacy: VectorStore,
        target: VectorStore,
        settings: Settings,
        *,
        outbox: Outbox,
        flags: FlagSource,
        shadow: ShadowRunner,
        metrics: CollectionMetrics,
        secondary_writer: ThreadPoolExecutor,
    ) -> None:
        _check_compatible(legacy.spec, target.spec)
        self.spec = target.spec
        self.stores: dict[Role, VectorStore] = {"legacy": legacy, "target": target}
        self.settings = settings
        self.outbox = outbox
        self.metrics = metrics
        self._read_salt = f"read:{self.spec.name}"
        self.use(flags=flags, shadow=shadow, secondary_writer=secondary_writer)
        # Set when this router was opened alone: closing it closes that migration.
        self._owner: Closing | None = None

    def use(self, *, flags: FlagSource, shadow: ShadowRunner, secondary_writer: ThreadPoolExecutor) -> None:
        """Follow these flags and run shadows and secondary writes on these pools: a forked
        child's `Migration` hands its routers the threads of its own (the parent's are gone)."""
        self._flags = flags
        self.shadow = shadow
        self._secondary_writer = secondary_writer
        # Ids this router is writing, so a shadow comparison can tell a write in flight.
        self.recent = RecentWrites()

    @classmethod
    def over(
        cls,
        legacy: VectorStore,
        target: VectorStore,
        settings: Settings,
        *,
        metrics: DualvecMetrics | None = None,
        start_replayer: bool = True,
        flag_source: FlagSourceFactory | None = None,
    ) -> Router:
        """Route between two open stores, with a migration of their own (closed with the router)."""
        from dualvec.migration import Migration

        migration = Migration(
            {target.spec.name: (legacy, target)},
            settings,
            metrics=metrics,
            start_replayer=start_replayer,
            flag_source=flag_source,
        )
        router = migration[target.spec.name]
        router._owner = migration
        return router

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: object) -> Router:
        """Open both stores of the settings' collection (`collection`, or the only one declared)
        and route between them."""
        from dualvec.migration import Migration

        name = settings.default_collection()
        migration = Migration.from_settings(settings, collections=[name], **kwargs)
        router = migration[name]
        router._owner = migration
        return router

    @property
    def exact(self) -> bool:
        """Both stores answer exactly (a LanceDB table turns approximate once it gets an index)."""
        return all(store.exact for store in self.stores.values())

    # flags

    @property
    def flags(self) -> FlagSnapshot:
        """The flags this collection follows now."""
        return self._flags.current(self.spec.name)

    def _writes_both(self) -> bool:
        """Whether every write still reaches both stores, so their answers should agree."""
        return write_roles(self.flags.flags.phase)[1] is not None

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
        query, limit = check_search(self.spec, vector, k, filter, model)
        flags = self.flags.flags
        key = routing_key if routing_key is not None else _routing_key.get()
        served: Role = "target" if self.reads_target(flags, key) else "legacy"
        store = self.stores[served]
        since = time.monotonic()
        start = time.perf_counter()  # timed inline: the hot path pays no context manager
        try:
            hits = store.search(query, limit, filter)
        except Exception:
            self.metrics.read_failed(served, "search")
            raise
        finally:
            self.metrics.observe(served, "search", "primary", time.perf_counter() - start)
        self.metrics.served(served)
        # Sampled per read, not per key: every tenant gets compared, at the same rate, and the
        # sample is independent of which store served the read.
        if write_roles(flags.phase)[1] is not None and in_percent(None, "", flags.shadow_percent):
            other = other_role(served)
            other_store = self.stores[other]
            self.shadow.submit(
                metrics=self.metrics,
                served_store=served,
                served_hits=hits,
                other_store=other,
                run_other=lambda: other_store.search(query, limit, filter),
                run_served=lambda: store.search(query, limit, filter),
                k=limit,
                query_id=uuid.uuid4().hex,
                routing_key_hash=key_fingerprint(key),
                recent=self.recent,
                since=since,
                comparable=self._writes_both,
            )
        return hits

    def get(self, ids: Sequence[str], *, routing_key: str | None = None) -> list[Record]:
        clean = check_ids(self.spec, ids)
        key = routing_key if routing_key is not None else _routing_key.get()
        served: Role = "target" if self.reads_target(self.flags.flags, key) else "legacy"
        try:
            with self.metrics.time(served, "get", "primary"):
                return self.stores[served].get(clean)
        except Exception:
            self.metrics.read_failed(served, "get")
            raise

    def count(self) -> int:
        primary, _ = write_roles(self.flags.flags.phase)
        with self.metrics.time(primary, "count", "primary"):
            return self.stores[primary].count()

    def scan(self, batch_size: int = 1000) -> Iterator[list[Record]]:
        primary, _ = write_roles(self.flags.flags.phase)
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
        primary, secondary = write_roles(self.flags.flags.phase)
        if secondary is None:
            self._apply_primary(primary, op, apply)
            return
        with self.outbox.write_lock(), self.recent.writing(ids):
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
                # The stores differ for these ids until a repair: no longer a write in flight.
                self.recent.discard(ids)
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
        self.publish_outbox()
        return result

    def publish_outbox(self) -> int:
        """Publish the outbox's depth and oldest age; return the depth."""
        stats = self.outbox.stats()
        self.metrics.set_outbox(stats.depth, stats.oldest_age_seconds)
        return stats.depth

    # lifecycle

    def close_stores(self) -> None:
        """Close both stores (the migration does, once nothing shared uses them any more)."""
        with ExitStack() as closing:
            closing.callback(self.stores["legacy"].close)
            closing.callback(self.stores["target"].close)

    def close(self) -> None:
        """A router opened alone closes its migration; one of a `Migration` closes with it."""
        if self._owner is not None:
            self._owner.close()
