"""Many collections, one migration: the machinery every collection of a process shares.

One outbox connection, one flag watcher thread, one `DualvecMetrics`, one shadow pool, one
secondary-writer pool and one replayer thread serve every collection, so six collections do
not cost six sets of threads. `migration["claims"]` is that collection's `Router`; each
router follows its own collection's flags (defaults plus per-collection overrides in the
flag file) and records into its own `collection`-labelled metrics.

A migration built before `fork()` (gunicorn ``--preload``) works in every child: each starts
its own threads, and the stores and outbox re-open their connections (`dualvec.forking`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass

from dualvec.closing import Closing
from dualvec.compare import CompareThresholds
from dualvec.errors import ConfigError
from dualvec.flags import FlagSnapshot, FlagSource, FlagSourceFactory, FlagWatcher
from dualvec.forking import keep, register, working
from dualvec.logs import get_logger
from dualvec.metrics import DualvecMetrics
from dualvec.mismatch_log import MismatchLog
from dualvec.outbox import Outbox
from dualvec.protocol import VectorStore
from dualvec.registry import open_store
from dualvec.router import Router
from dualvec.settings import Settings
from dualvec.shadow import ShadowRunner

__all__ = ["Migration"]

log = get_logger("dualvec.migration")

# Secondary writes of different collections run side by side; one collection's writes are
# already serialised by its outbox lock, so more threads than collections would idle.
_MAX_SECONDARY_WRITERS = 8


@dataclass(frozen=True)
class _Machinery(Closing):
    """What the routers share that runs threads: a process forked from this one builds its own."""

    shadow: ShadowRunner
    writer: ThreadPoolExecutor
    flags: FlagSource

    def close(self) -> None:
        with ExitStack() as closing:
            closing.callback(self.shadow.close)
            closing.callback(self.writer.shutdown)
            closing.callback(self.flags.close)


class Migration(Closing):
    """Routers for several collections over shared machinery; owns their stores.

    Safe after `fork()` (gunicorn ``--preload``): a child starts its own flag source, shadow
    pool, secondary writers and replayer, and the stores and the outbox re-open their
    connections there (see `dualvec.forking`).
    """

    def __init__(
        self,
        stores: Mapping[str, tuple[VectorStore, VectorStore]],
        settings: Settings,
        *,
        metrics: DualvecMetrics | None = None,
        start_replayer: bool = True,
        flag_source: FlagSourceFactory | None = None,
    ) -> None:
        """`flag_source` replaces the flag file as where flags come from (e.g.
        `dualvec.openfeature_flags`); by default the settings' flag file is watched."""
        if not stores:
            raise ConfigError("a migration needs at least one collection")
        self.settings = settings
        self.metrics = metrics or DualvecMetrics()
        self._flag_source = flag_source
        self._closed = False
        # Whatever is opened is closed again, newest first, on close or on a failed start.
        with ExitStack() as opened:
            for legacy, target in stores.values():
                opened.callback(legacy.close)
                opened.callback(target.close)
            names = list(stores)
            self.outbox = opened.enter_context(Outbox(settings.outbox_path, names[0]))
            self._machinery = self._start_machinery(names)
            # Closes whichever machinery is current then: a forked child's own, not its parent's.
            opened.callback(self._close_machinery)
            self.routers = {
                name: Router(
                    legacy,
                    target,
                    settings,
                    outbox=self.outbox.for_collection(name),
                    flags=self.flags,
                    shadow=self.shadow,
                    metrics=self.metrics.collection(name),
                    secondary_writer=self._machinery.writer,
                )
                for name, (legacy, target) in stores.items()
            }
            self._publish_all_flags()
            self._opened = opened.pop_all()
        self._stop = threading.Event()
        self._replayer: threading.Thread | None = None
        if start_replayer:
            self._start_replayer()
        register(self, "machinery")

    def _start_machinery(self, names: list[str]) -> _Machinery:
        settings = self.settings
        shadow = settings.shadow
        with ExitStack() as started:
            runner = started.enter_context(
                ShadowRunner(
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
            writer = ThreadPoolExecutor(
                max_workers=min(len(names), _MAX_SECONDARY_WRITERS), thread_name_prefix="dualvec-secondary"
            )
            started.callback(writer.shutdown)
            base = dict.fromkeys(names, settings.flags)
            flags = (
                self._flag_source(base, self._publish_flags, self._count_refusal)
                if self._flag_source is not None
                else FlagWatcher(
                    settings.flag_file,
                    base,
                    poll_seconds=settings.flag_poll_seconds,
                    on_change=self._publish_flags,
                    on_refused=self._count_refusal,
                )
            )
            started.pop_all()
        return _Machinery(runner, writer, flags)

    def _close_machinery(self) -> None:
        self._machinery.close()

    def _start_replayer(self) -> None:
        self._replayer = threading.Thread(target=self._replay_loop, name="dualvec-replay", daemon=True)
        self._replayer.start()

    @property
    def flags(self) -> FlagSource:
        """Where every collection's flags come from."""
        return self._machinery.flags

    @property
    def shadow(self) -> ShadowRunner:
        """The shadow pool every collection shares."""
        return self._machinery.shadow

    @classmethod
    def from_settings(
        cls, settings: Settings, *, collections: Sequence[str] | None = None, **kwargs: object
    ) -> Migration:
        """Open both stores of every declared collection (or of `collections`) and route each."""
        names = list(collections) if collections is not None else list(settings.collections)
        if not names:
            raise ConfigError("no collection is declared: add a [collections.NAME] table to the config")
        stores: dict[str, tuple[VectorStore, VectorStore]] = {}
        with ExitStack() as opened:
            for name in names:
                legacy_url, target_url = settings.urls(name)
                legacy_spec, target_spec = settings.specs(name)
                legacy = open_store(legacy_url, legacy_spec)
                opened.callback(legacy.close)
                target = open_store(target_url, target_spec)
                opened.callback(target.close)
                stores[name] = (legacy, target)
            migration = cls(stores, settings, **kwargs)  # type: ignore[arg-type]
            opened.pop_all()
        return migration

    def __getitem__(self, name: str) -> Router:
        try:
            return self.routers[name]
        except KeyError:
            raise ConfigError(
                f"collection {name!r} is not part of this migration (collections: {sorted(self.routers)})"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.routers)

    def __len__(self) -> int:
        return len(self.routers)

    def _publish_flags(self, name: str, snapshot: FlagSnapshot) -> None:
        flags = snapshot.flags
        with working():
            self.metrics.collection(name).set_flags(
                flags.phase.value, flags.read_percent, flags.shadow_percent
            )

    def _count_refusal(self, name: str) -> None:
        with working():
            self.metrics.collection(name).flags_refused()

    def _publish_all_flags(self) -> None:
        for name in self.routers:
            self._publish_flags(name, self.flags.current(name))

    def _replay_loop(self) -> None:
        while not self._stop.wait(self.settings.replay_interval_seconds):
            for name, router in self.routers.items():
                try:
                    with working():
                        # Published before repairing too: a repair that takes a while must not
                        # hide the backlog it is working through from the dashboard.
                        if router.publish_outbox():
                            router.replay()
                except Exception as exc:  # the replayer must outlive any one failure
                    log.error("replayer_failed", collection=name, error=repr(exc))

    def after_fork(self, clean: bool) -> None:
        """In a forked child: the parent's threads are gone, so its flag source would never
        change again, its pools never run what they are given, its replayer never repair.
        Start this process's own and hand them to the routers; publish the flags again (a
        child's metrics start from zero)."""
        if self._closed:
            return
        # Never closed here: closing would wait on threads this process does not have.
        keep(self._machinery)
        self._machinery = self._start_machinery(list(self.routers))
        for router in self.routers.values():
            router.use(
                flags=self._machinery.flags,
                shadow=self._machinery.shadow,
                secondary_writer=self._machinery.writer,
            )
        self._publish_all_flags()
        self._stop = threading.Event()
        if self._replayer is not None:
            self._start_replayer()

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        if self._replayer is not None:
            self._replayer.join(timeout=30)
        self._opened.close()
