"""`AsyncRouter`: the sync router's answers, routing, shadows and errors, with every store call in
a bounded pool off the event loop, and cancellation that never leaves a write half-recorded.

Every test drives real SQLite stores (sqlite-blob legacy, sqlite-vec target) from `asyncio.run`.
A slow store is the real sqlite-blob store whose calls first sleep, as a loaded server's do.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import threading
import time

import numpy as np
import pytest

from dualvec import AsyncRouter, ConfigError, Record, StoreError, ValidationError, open_store
from dualvec.router import routing_key
from dualvec.settings import Settings
from dualvec.stores.sqlite_blob import SqliteBlobStore
from dualvec.testing import make_records, sample_spec

DIM = 8
SPEC = sample_spec(dim=DIM)


class SlowSqliteBlobStore(SqliteBlobStore):
    """A real sqlite-blob store whose writes and searches take `delay` seconds longer. It notes
    when a call starts and how many run at once, so a test can cancel a write mid-call and count
    store calls in flight."""

    delay = 0.0

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.started = threading.Event()
        self._gauge = threading.Lock()
        self.active = 0
        self.most_active = 0

    def _slowly(self, call, *args):
        with self._gauge:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        self.started.set()
        try:
            time.sleep(self.delay)
            return call(*args)
        finally:
            with self._gauge:
                self.active -= 1

    def _upsert(self, records):
        self._slowly(super()._upsert, records)

    def _delete(self, ids):
        self._slowly(super()._delete, ids)

    def _search(self, query, k, conditions):
        return self._slowly(super()._search, query, k, conditions)


@pytest.fixture
def make_arouter(tmp_path):
    opened = []

    def make(phase="dual", read_percent=0.0, shadow_percent=0.0, slow_legacy=0.0, concurrency=4):
        legacy_path = tmp_path / "legacy.db"
        if slow_legacy:
            legacy = SlowSqliteBlobStore(legacy_path, SPEC)
            legacy.delay = slow_legacy
        else:
            legacy = open_store(f"sqlite-blob://{legacy_path}", SPEC)
        target = open_store(f"sqlite-vec://{tmp_path}/target.db", SPEC)
        settings = Settings(
            phase=phase,
            read_percent=read_percent,
            shadow_percent=shadow_percent,
            flag_file=tmp_path / "flags.json",
            outbox_path=tmp_path / "outbox.db",
            replay_interval_seconds=3600,
        )
        arouter = AsyncRouter.over(legacy, target, settings, concurrency=concurrency, start_replayer=False)
        opened.append(arouter)
        return arouter

    yield make
    for arouter in opened:
        asyncio.run(arouter.aclose())


def held(arouter: AsyncRouter, ids) -> dict[str, set[str]]:
    """Which of `ids` each store holds."""
    return {role: {r.id for r in store.get(list(ids))} for role, store in arouter.router.stores.items()}


def outbox_depth(arouter: AsyncRouter) -> int:
    return arouter.router.outbox.stats().depth


def test_answers_routing_and_metrics_match_the_sync_router(make_arouter):
    arouter = make_arouter(read_percent=50)
    router = arouter.router
    records = make_records(60, DIM, seed=1)
    # One record only each store holds, so every answer shows which store served it.
    only = {role: make_records(1, DIM, seed=7, prefix=f"only-{role}-")[0] for role in router.stores}
    for role, record in only.items():
        router.stores[role].upsert([record])
    queries = [only["legacy"].vector, *(r.vector for r in records[:5])]
    keys = [f"tenant-{i}" for i in range(40)]

    async def scenario():
        await arouter.upsert(records)
        answers = []
        for key in keys:
            for query in queries:
                answers.append(await arouter.search(query, k=4, routing_key=key))
            with routing_key(key):  # the caller's context reaches the worker
                answers.append(await arouter.search(queries[0], k=4, filter={"lang": {"$in": ["en", "fr"]}}))
                answers.append(await arouter.get([only["legacy"].id, only["target"].id, records[3].id]))
        batches = [batch async for batch in arouter.scan(batch_size=7)]
        return answers, await arouter.count(), batches

    def reads():
        """Reads served, and primary search latencies observed, per store so far."""
        return {
            (role, name): router.metrics.value(name, store=role)
            if name == "dualvec_reads_total"
            else router.metrics.value(name, store=role, op="search", role="primary")
            for role in router.stores
            for name in ("dualvec_reads_total", "dualvec_operation_duration_seconds_count")
        }

    before = reads()
    answers, count, batches = asyncio.run(scenario())
    after_async = reads()
    expected = []
    for key in keys:
        expected += [router.search(query, k=4, routing_key=key) for query in queries]
        expected.append(
            router.search(queries[0], k=4, filter={"lang": {"$in": ["en", "fr"]}}, routing_key=key)
        )
        expected.append(router.get([only["legacy"].id, only["target"].id, records[3].id], routing_key=key))
    after_sync = reads()

    assert answers == expected
    served_by = {"legacy": 0, "target": 0}
    for key in keys:
        served_by[router.search(only["target"].vector, k=1, routing_key=key)[0].id.split("-")[1]] += 1
    assert served_by["legacy"] > 5 and served_by["target"] > 5, "read_percent=50 should split the tenants"
    # The same reads, counted the same way: served per store and timed per store.
    assert {m: after_async[m] - before[m] for m in before} == {
        m: after_sync[m] - after_async[m] for m in before
    }
    assert count == router.count() == 61
    assert [r.id for batch in batches for r in batch] == [r.id for batch in router.scan(7) for r in batch]
    ids = {r.id for r in records}
    assert held(arouter, ids) == {"legacy": ids, "target": ids}
    assert outbox_depth(arouter) == 0


def test_shadow_reads_run_and_are_compared(make_arouter):
    arouter = make_arouter(read_percent=0, shadow_percent=100)
    records = make_records(30, DIM, seed=2)

    async def scenario():
        await arouter.upsert(records)
        for record in records[:10]:
            await arouter.search(record.vector, k=5)

    asyncio.run(scenario())
    metrics = arouter.router.metrics
    deadline = time.monotonic() + 10
    while metrics.value("dualvec_shadow_comparisons_total", outcome="match") < 10:
        assert time.monotonic() < deadline, "the shadow comparisons never ran"
        time.sleep(0.02)
    assert metrics.value("dualvec_shadow_comparisons_total", outcome="mismatch") == 0


def _bad_calls():
    """Calls the sync router refuses, each with valid records around the bad one."""
    good = make_records(3, DIM, seed=3)
    meta = good[0].metadata
    nan = Record("nan", np.full(DIM, np.nan, np.float32), meta)
    short = Record("short", np.ones(DIM - 1, np.float32), meta)
    stray = Record("stray", np.ones(DIM, np.float32), {**meta, "colour": "red"})
    return {
        "nan vector": ("upsert", ([good[0], nan, good[1]],), {}),
        "wrong dimension": ("upsert", ([good[0], short],), {}),
        "duplicate id": ("upsert", ([good[0], good[1], good[0]],), {}),
        "unknown field": ("upsert", ([good[0], stray],), {}),
        "a single record": ("upsert", (good[0],), {}),
        "another model": ("upsert", (good,), {"model": "other-embedder"}),
        "ids as one str": ("delete", ("doc-0",), {}),
        "empty id": ("delete", (["doc-0", ""],), {}),
        "k of 0": ("search", (good[0].vector,), {"k": 0}),
        "unknown filter field": ("search", (good[0].vector,), {"filter": {"colour": "red"}}),
        "query of another model": ("search", (good[0].vector,), {"model": "other-embedder"}),
        "query of wrong dimension": ("search", (np.ones(DIM + 1),), {}),
        "get with a non-str id": ("get", (["doc-0", 7],), {}),
    }


@pytest.mark.parametrize("case", list(_bad_calls()))
def test_bad_input_raises_the_sync_error_and_writes_nothing(make_arouter, case):
    arouter = make_arouter()
    method, args, kwargs = _bad_calls()[case]
    with pytest.raises(ValidationError) as sync_error:
        getattr(arouter.router, method)(*args, **kwargs)

    async def call():
        return await getattr(arouter, method)(*args, **kwargs)

    with pytest.raises(type(sync_error.value), match=f"^{re.escape(str(sync_error.value))}$"):
        asyncio.run(call())
    assert arouter.router.stores["legacy"].count() == arouter.router.stores["target"].count() == 0
    assert outbox_depth(arouter) == 0


def test_bad_input_raises_at_once_even_when_every_worker_is_busy(make_arouter):
    arouter = make_arouter(slow_legacy=1.0, concurrency=1)
    slow, bad = make_records(2, DIM, seed=4), make_records(2, DIM, seed=5, prefix="bad-")
    bad[1] = Record(bad[1].id, np.zeros(DIM, np.float32), bad[1].metadata)  # no cosine distance

    async def scenario():
        writing = asyncio.create_task(arouter.upsert(slow))
        await asyncio.to_thread(arouter.router.stores["legacy"].started.wait)
        start = time.perf_counter()
        with pytest.raises(ValidationError, match="zero vector"):
            await arouter.upsert(bad)
        refused_after = time.perf_counter() - start
        await writing
        return refused_after

    assert asyncio.run(scenario()) < 0.5  # not after the 1 s write holding the only worker
    ids = {"doc-0", "doc-1"}
    assert held(arouter, [r.id for r in slow + bad]) == {"legacy": ids, "target": ids}


@pytest.mark.parametrize("op", ["upsert", "delete"])
@pytest.mark.parametrize("how", ["cancel", "wait_for"])
def test_a_write_cancelled_while_it_runs_is_fully_recorded(make_arouter, op, how):
    arouter = make_arouter(slow_legacy=0.5)
    records = make_records(5, DIM, seed=6)
    ids = {r.id for r in records}
    if op == "delete":
        for store in arouter.router.stores.values():
            store.upsert(records)
    legacy = arouter.router.stores["legacy"]

    async def scenario():
        write = arouter.upsert(records) if op == "upsert" else arouter.delete(sorted(ids))
        if how == "wait_for":
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(write, timeout=0.1)
        else:
            task = asyncio.create_task(write)
            await asyncio.to_thread(legacy.started.wait)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        # What the caller sees the moment the cancellation reaches it.
        return held(arouter, ids), outbox_depth(arouter)

    start = time.perf_counter()
    stores, depth = asyncio.run(scenario())
    assert legacy.started.is_set()
    assert time.perf_counter() - start >= 0.5, "the cancellation waited for the write in flight"
    expected = ids if op == "upsert" else set()
    assert stores == {"legacy": expected, "target": expected}
    assert depth == 0


def test_a_write_cancelled_before_it_starts_records_nothing(make_arouter):
    arouter = make_arouter(slow_legacy=0.5, concurrency=1)
    first, queued = (
        make_records(2, DIM, seed=7, prefix="first-"),
        make_records(2, DIM, seed=8, prefix="queued-"),
    )

    async def scenario():
        running = asyncio.create_task(arouter.upsert(first))
        await asyncio.to_thread(arouter.router.stores["legacy"].started.wait)
        waiting = asyncio.create_task(arouter.upsert(queued))
        await asyncio.sleep(0.05)  # queued behind the only worker
        start = time.perf_counter()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        cancelled_after = time.perf_counter() - start
        await running
        return cancelled_after

    assert asyncio.run(scenario()) < 0.25, "a queued write is dropped at once, not after the one running"
    first_ids = {r.id for r in first}
    assert held(arouter, [r.id for r in first + queued]) == {"legacy": first_ids, "target": first_ids}
    assert outbox_depth(arouter) == 0


def test_cancelled_writes_are_all_or_nothing_under_load(make_arouter):
    """Twelve writes queue on two workers; all are cancelled while some run and some wait."""
    arouter = make_arouter(slow_legacy=0.03, concurrency=2)
    batches = [make_records(3, DIM, seed=10 + n, prefix=f"w{n}-") for n in range(12)]

    async def scenario():
        tasks = [asyncio.create_task(arouter.upsert(batch)) for batch in batches]
        await asyncio.sleep(0.1)
        for task in tasks:
            task.cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    outcomes = asyncio.run(scenario())
    everything = held(arouter, [r.id for batch in batches for r in batch])
    landed = []
    for batch, outcome in zip(batches, outcomes, strict=True):
        ids = {r.id for r in batch}
        in_legacy, in_target = ids & everything["legacy"], ids & everything["target"]
        assert in_legacy == in_target and in_legacy in (set(), ids), f"batch {sorted(ids)} half-recorded"
        if outcome is None:
            assert in_legacy == ids, "an acknowledged write is in both stores"
        landed.append(bool(in_legacy))
        assert outcome is None or isinstance(outcome, asyncio.CancelledError)
    assert any(isinstance(o, asyncio.CancelledError) and hit for o, hit in zip(outcomes, landed, strict=True))
    assert not all(landed), "some writes were cancelled before they started"
    assert outbox_depth(arouter) == 0


def test_at_most_concurrency_store_calls_run_at_once(make_arouter):
    arouter = make_arouter(phase="legacy", slow_legacy=0.1, concurrency=3)
    arouter.router.stores["legacy"].upsert(make_records(5, DIM))
    query = make_records(1, DIM, seed=9)[0].vector

    async def scenario():
        start = time.perf_counter()
        answers = await asyncio.gather(*(arouter.search(query, k=2) for _ in range(12)))
        return answers, time.perf_counter() - start

    answers, took = asyncio.run(scenario())
    assert len(answers) == 12 and all(len(a) == 2 for a in answers)
    assert arouter.router.stores["legacy"].most_active == 3
    assert took >= 4 * 0.1  # twelve calls, three at a time


def test_the_loop_keeps_running_while_the_stores_work(make_arouter):
    """While a 0.3 s store call runs, a 10 ms ticker on the same loop keeps ticking."""
    arouter = make_arouter(phase="legacy", slow_legacy=0.3)
    arouter.router.stores["legacy"].upsert(make_records(5, DIM))

    async def scenario():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticking = asyncio.create_task(ticker())
        await arouter.search(make_records(1, DIM)[0].vector, k=1)
        ticking.cancel()
        return ticks

    assert asyncio.run(scenario()) >= 10


def test_closing_refuses_new_calls_and_closes_what_it_opened(make_arouter):
    arouter = make_arouter()
    legacy = arouter.router.stores["legacy"]

    async def scenario():
        async with arouter:
            await arouter.upsert(make_records(2, DIM))
        with pytest.raises(StoreError, match="async router of collection 'docs' is closed"):
            await arouter.count()

    asyncio.run(scenario())
    with pytest.raises(StoreError):  # opened by AsyncRouter.over, so closed with it
        legacy.count()


def test_wrapping_a_router_leaves_it_open(make_arouter, tmp_path):
    router = make_arouter().router

    async def scenario():
        async with AsyncRouter(router, concurrency=2) as arouter:
            await arouter.upsert(make_records(3, DIM))

    asyncio.run(scenario())
    assert router.count() == 3


def test_from_settings_opens_the_configured_collection(tmp_path, monkeypatch):
    from helpers import write_config

    from dualvec.settings import load_settings

    write_config(tmp_path, monkeypatch, f"sqlite-blob://{tmp_path}/legacy.db", phase="dual")
    records = make_records(4, DIM)

    async def scenario():
        arouter = await asyncio.to_thread(AsyncRouter.from_settings, load_settings(), start_replayer=False)
        async with arouter:
            await arouter.upsert(records)
            return await arouter.search(records[2].vector, k=1), arouter.flags.flags.phase.value

    hits, phase = asyncio.run(scenario())
    assert (hits[0].id, phase) == ("doc-2", "dual")
    with open_store(f"sqlite-vec://{tmp_path}/target.db", SPEC) as target:
        assert target.count() == 4


@pytest.mark.parametrize("concurrency", [0, -1, 1.5, True])
def test_concurrency_must_be_a_positive_int(make_arouter, concurrency):
    router = make_arouter().router
    with pytest.raises(ConfigError, match="concurrency: expected an int of at least 1"):
        AsyncRouter(router, concurrency=concurrency)


@pytest.mark.parametrize("niceness", [-1, 20, 2.5, True])
def test_niceness_must_be_an_int_from_0_to_19(make_arouter, niceness):
    router = make_arouter().router
    with pytest.raises(ConfigError, match="niceness: expected an int from 0 to 19"):
        AsyncRouter(router, niceness=niceness)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")
@pytest.mark.parametrize("niceness", [0, 10])
def test_store_calls_run_below_the_event_loops_priority(make_arouter, monkeypatch, niceness):
    """On a host whose cores the stores keep busy, the loop must win a core from the workers."""
    router = make_arouter(phase="legacy").router
    store = router.stores["legacy"]
    count = store.count
    seen = []

    def noting_priority():
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return count()

    monkeypatch.setattr(store, "count", noting_priority)

    async def scenario():
        async with AsyncRouter(router, niceness=niceness) as arouter:
            assert await arouter.count() == 0
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    loop_niceness = asyncio.run(scenario())
    assert seen == [min(19, loop_niceness + niceness)]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_makes_its_own_workers(make_arouter):
    """Made before fork() (gunicorn --preload), used in the child: the parent's pool threads do
    not exist there, so the child must start its own rather than queue calls forever."""
    arouter = make_arouter(phase="legacy")
    records = make_records(3, DIM)
    asyncio.run(arouter.upsert(records))  # the parent's pool now has a thread
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if the call completes
        try:
            count = asyncio.run(asyncio.wait_for(arouter.count(), timeout=10))
            os._exit(0 if count == 3 else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
