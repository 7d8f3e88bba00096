"""The router for asyncio applications: the event loop never waits on a store.

`AsyncRouter` wraps a `Router`, so routing, dual writes, the outbox, shadow reads and metrics
are the sync router's own; it adds only where each call runs and what cancellation means.

- Input is validated on the event loop, before any thread is involved: a bad batch raises the
  same error as with the sync router, at once (even when every worker is busy), and nothing is
  written to either store or to the outbox. Validating costs about 10 microseconds a record, so
  a batch of thousands holds the loop for milliseconds: split it where that matters.
- Every store call runs in a thread pool of its own with `concurrency` workers: at most that
  many of this router's calls touch the stores at once, and the rest wait their turn in a queue
  without holding a thread. A pool of its own, rather than asyncio's default executor or
  `anyio.to_thread`, because those are shared with the application (FastAPI runs its sync
  endpoints there): the application's own blocking work cannot starve store calls of threads,
  nor can a burst of store calls starve it. It is also plain `concurrent.futures`, so the
  bound holds whatever the event loop (asyncio, uvloop) and needs no extra dependency.
- Cancelling a write (a task cancelled, `asyncio.wait_for` timing out, a client gone) never
  leaves it half-recorded. Cancelled while it waits for a worker, it never starts: nothing is
  written. Cancelled once a worker runs it, the write cannot be interrupted (a store call in a
  thread cannot be), so the cancellation waits for it to finish and is raised after: both
  stores hold it and its outbox intent is cleared (or, if the secondary failed, the intent
  stays for the replayer, exactly as for a sync write). Either way, by the time the caller sees
  `CancelledError`, the write is settled.
- Cancelling a read is immediate: a read still queued never runs; one already running finishes
  in its worker (still counted against `concurrency`) and its answer is dropped.
- The workers run at a lower CPU priority than the thread that starts them (`niceness`, Linux,
  per thread), as shadow workers do. The event loop holds the GIL whenever it runs Python; a
  worker at the loop's own priority, busy in a store's C code, can take the core from the loop
  mid-request, and then every thread waits for the GIL until the loop is scheduled again. At a
  lower priority the kernel gives the loop a core as soon as it wakes. Measured with the FastAPI
  test's load on 2 idle cores: p99 lag 5.7 ms at niceness 0, 4.6 ms at 10 (medians of 6 runs).

Routing keys set with `dualvec.routing_key(...)` in the calling task reach the worker: each call
runs in a copy of the caller's context.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import TypeVar

from dualvec.errors import ConfigError, StoreError
from dualvec.filters import Filter
from dualvec.flags import FlagSnapshot
from dualvec.logs import get_logger
from dualvec.metrics import DualvecMetrics
from dualvec.priority import lower_priority
from dualvec.protocol import VectorStore
from dualvec.records import Hit, Record
from dualvec.router import Router
from dualvec.search_checks import check_search
from dualvec.settings import Settings
from dualvec.spec import CollectionSpec
from dualvec.validation import check_ids, check_model, check_records

__all__ = ["DEFAULT_CONCURRENCY", "DEFAULT_NICENESS", "AsyncRouter"]

log = get_logger("dualvec.async_router")

T = TypeVar("T")

# Each SQLite-backed store runs one call at a time behind its own lock, so a collection rarely
# uses more than a worker per store plus one for writes; more threads would mostly queue on
# those locks, where a cancelled call can no longer be taken back.
DEFAULT_CONCURRENCY = 4
# As for shadow workers (`ShadowSettings.niceness`): store calls yield the CPU to the event loop.
DEFAULT_NICENESS = 10


class AsyncRouter:
    """A `Router` for asyncio code: the same methods, awaited, with every store call off the loop.

    Wrap a router you already have (`AsyncRouter(migration["docs"])`: closing this one leaves the
    migration's router open), or open one with `AsyncRouter.over` or `AsyncRouter.from_settings`
    (closed with this one). Close with `await arouter.aclose()` or `async with`.
    """

    def __init__(
        self, router: Router, *, concurrency: int = DEFAULT_CONCURRENCY, niceness: int = DEFAULT_NICENESS
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError(f"concurrency: expected an int of at least 1, got {concurrency!r}")
        if isinstance(niceness, bool) or not isinstance(niceness, int) or not 0 <= niceness <= 19:
            raise ConfigError(f"niceness: expected an int from 0 to 19, got {niceness!r}")
        self.router = router
        self.concurrency = concurrency
        self.niceness = niceness
        self._owns_router = False
        self._closed = False
        self._executor = self._new_executor()
        # A pool made before fork() has no threads in the child; a child makes its own.
        self._pid = os.getpid()

    @classmethod
    def over(
        cls,
        legacy: VectorStore,
        target: VectorStore,
        settings: Settings,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        niceness: int = DEFAULT_NICENESS,
        metrics: DualvecMetrics | None = None,
        start_replayer: bool = True,
    ) -> AsyncRouter:
        """Route between two open stores (see `Router.over`); closing this router closes them."""
        router = Router.over(legacy, target, settings, metrics=metrics, start_replayer=start_replayer)
        return cls._owning(router, concurrency, niceness)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        niceness: int = DEFAULT_NICENESS,
        **kwargs: object,
    ) -> AsyncRouter:
        """Open the settings' collection (see `Router.from_settings`); closed with this router.

        Opening stores is blocking work: in a running loop, call it via `asyncio.to_thread`."""
        return cls._owning(Router.from_settings(settings, **kwargs), concurrency, niceness)

    @classmethod
    def _owning(cls, router: Router, concurrency: int, niceness: int) -> AsyncRouter:
        try:
            arouter = cls(router, concurrency=concurrency, niceness=niceness)
        except BaseException:
            router.close()
            raise
        arouter._owns_router = True
        return arouter

    # what the sync router knows without touching a store

    @property
    def spec(self) -> CollectionSpec:
        return self.router.spec

    @property
    def flags(self) -> FlagSnapshot:
        """The flags this collection follows now."""
        return self.router.flags

    # reads

    async def search(
        self,
        vector: object,
        k: int = 10,
        filter: Filter | None = None,
        *,
        model: str | None = None,
        routing_key: str | None = None,
    ) -> list[Hit]:
        """`Router.search`, awaited: the caller's store, maybe a shadow read on the other one."""
        query, limit = check_search(self.spec, vector, k, filter, model)
        return await self._read(self.router.search, query, limit, filter, routing_key=routing_key)

    async def get(self, ids: Sequence[str], *, routing_key: str | None = None) -> list[Record]:
        clean = check_ids(self.spec, ids)
        return await self._read(self.router.get, clean, routing_key=routing_key)

    async def count(self) -> int:
        return await self._read(self.router.count)

    async def scan(self, batch_size: int = 1000) -> AsyncIterator[list[Record]]:
        """Every record of the primary store, in batches; each batch is read in a worker.

        Each step runs to its end even when cancelled, so the scan's own connection is never
        closed under a worker still reading it."""
        batches = await self._settled(self.router.scan, batch_size)
        try:
            while (batch := await self._settled(next, batches, None)) is not None:
                yield batch
        finally:
            if isinstance(batches, Generator):
                await self._settled(batches.close)

    # writes

    async def upsert(self, records: Iterable[Record], *, model: str | None = None) -> None:
        """`Router.upsert`, awaited; a cancelled call is either fully written or not at all."""
        check_model(self.spec, model)
        clean = check_records(self.spec, records)  # checked records pass the router's check as is
        if clean:
            await self._settled(self.router.upsert, clean)

    async def delete(self, ids: Sequence[str]) -> None:
        """`Router.delete`, awaited; a cancelled call is either fully applied or not at all."""
        clean = check_ids(self.spec, ids)
        if clean:
            await self._settled(self.router.delete, clean)

    # lifecycle

    async def aclose(self) -> None:
        """Refuse new calls, let the running and queued ones end, then close the router if this
        one opened it. The waiting happens in a thread: the loop keeps serving meanwhile."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        self._executor.shutdown(wait=True)
        if self._owns_router:
            self.router.close()

    async def __aenter__(self) -> AsyncRouter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # running calls in the pool

    def _new_executor(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(
            max_workers=self.concurrency,
            thread_name_prefix="dualvec-async",
            initializer=lower_priority,
            initargs=(self.niceness,),
        )

    def _submit(self, call: Callable[..., T], *args: object, **kwargs: object) -> Future[T]:
        if self._closed:
            raise StoreError(f"the async router of collection {self.spec.name!r} is closed")
        if os.getpid() != self._pid:
            self._executor, self._pid = self._new_executor(), os.getpid()
        context = contextvars.copy_context()
        return self._executor.submit(partial(context.run, call, *args, **kwargs))

    async def _read(self, call: Callable[..., T], *args: object, **kwargs: object) -> T:
        # Cancelling the wrapper cancels the pool's future, which stops a call still queued.
        return await asyncio.wrap_future(self._submit(call, *args, **kwargs))

    async def _settled(self, call: Callable[..., T], *args: object) -> T:
        """Run `call` in the pool; a cancellation waits until it either never started or ended."""
        future = self._submit(call, *args)
        done = asyncio.wrap_future(future)
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            if not future.cancel():  # already running: it cannot be stopped, so let it end
                await _outlast(done)
            raise


async def _outlast(done: asyncio.Future[T]) -> None:
    """Wait for `done`, through any further cancellations, without raising its outcome: the
    caller is cancelled, and a failure is already counted by the router's metrics."""
    while not done.done():
        try:
            await asyncio.wait([done])
        except asyncio.CancelledError:
            continue
    if not done.cancelled() and (failure := done.exception()) is not None:
        log.warning("cancelled_call_failed", error=repr(failure))
