from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from helpers import assert_same_contents, sqlite_locked

from dualvec import Record, StoreError, ValidationError, open_store
from dualvec.flags import write_flag_file
from dualvec.router import Router, routing_key
from dualvec.settings import Flags, Phase, Settings
from dualvec.testing import make_records, sample_spec

DIM = 8


@pytest.fixture
def make_router(tmp_path):
    routers = []

    def make(phase="dual", read_percent=0.0, shadow_percent=0.0, target_options="", **settings):
        spec = sample_spec(dim=DIM)
        legacy = open_store(f"sqlite-blob://{tmp_path}/legacy.db", spec)
        target = open_store(f"sqlite-vec://{tmp_path}/target.db{target_options}", spec)
        config = Settings(
            phase=phase,
            read_percent=read_percent,
            shadow_percent=shadow_percent,
            flag_file=tmp_path / "flags.json",
            outbox_path=tmp_path / "outbox.db",
            replay_interval_seconds=3600,
            **settings,
        )
        router = Router.over(legacy, target, config, start_replayer=False)
        routers.append(router)
        return router

    yield make
    for router in routers:
        router.close()


def test_router_is_a_vector_store(make_router):
    from dualvec import VectorStore

    assert isinstance(make_router(), VectorStore)


@pytest.mark.parametrize(
    ("phase", "legacy_has", "target_has"),
    [("legacy", True, False), ("dual", True, True), ("target-primary", True, True), ("target", False, True)],
)
def test_phases_decide_where_writes_go(make_router, phase, legacy_has, target_has):
    router = make_router(phase=phase)
    records = make_records(20, DIM)
    router.upsert(records)
    router.delete([records[0].id])
    assert router.stores["legacy"].count() == (19 if legacy_has else 0)
    assert router.stores["target"].count() == (19 if target_has else 0)
    assert router.outbox.stats().depth == 0


def _marker(router, role):
    """A record only one store holds, so a read tells which store served it."""
    record = make_records(1, DIM, seed=42, prefix=f"only-{role}-")[0]
    router.stores[role].upsert([record])
    return record


@pytest.mark.parametrize(
    ("phase", "read_percent", "served"),
    [
        ("legacy", 100, "legacy"),
        ("dual", 0, "legacy"),
        ("dual", 100, "target"),
        ("target-primary", 0, "legacy"),
        ("target-primary", 100, "target"),
        ("target", 0, "target"),
    ],
)
def test_phase_and_percent_decide_who_serves_reads(make_router, phase, read_percent, served):
    router = make_router(phase=phase, read_percent=read_percent)
    legacy_only, target_only = _marker(router, "legacy"), _marker(router, "target")
    marker = legacy_only if served == "legacy" else target_only
    hits = router.search(marker.vector, k=1, routing_key="tenant-1")
    assert hits[0].id == marker.id
    assert [r.id for r in router.get([legacy_only.id, target_only.id])] == [marker.id]


def test_reads_are_sticky_per_routing_key(make_router):
    router = make_router(read_percent=50)
    legacy_only, target_only = _marker(router, "legacy"), _marker(router, "target")
    served = {}
    for i in range(200):
        with routing_key(f"user-{i}"):
            first = router.search(legacy_only.vector, k=1)[0].id
            for _ in range(3):
                assert router.search(legacy_only.vector, k=1)[0].id == first
        served[i] = first
    on_target = sum(v == target_only.id or v != legacy_only.id for v in served.values())
    assert 60 < on_target < 140


def test_flag_file_changes_reach_a_running_router(make_router, tmp_path):
    router = make_router(read_percent=0)
    _marker(router, "legacy")
    target_only = _marker(router, "target")
    assert router.search(target_only.vector, k=1)[0].id != target_only.id
    write_flag_file(tmp_path / "flags.json", Flags(phase=Phase.DUAL, read_percent=100))
    deadline = time.monotonic() + 1.0
    while router.search(target_only.vector, k=1)[0].id != target_only.id:
        assert time.monotonic() < deadline, "flag change not seen within a second"
        time.sleep(0.02)
    assert router.flags.source == str(tmp_path / "flags.json")


def test_invalid_batch_writes_to_no_store(make_router):
    router = make_router()
    good = make_records(3, DIM)
    bad = Record("bad", np.full(DIM, np.nan, np.float32), good[0].metadata)
    with pytest.raises(ValidationError, match="record 1"):
        router.upsert([good[0], bad, good[2]])
    assert router.stores["legacy"].count() == router.stores["target"].count() == 0
    assert router.outbox.stats().depth == 0


def test_primary_failure_raises_and_secondary_is_repaired_from_primary(make_router, tmp_path):
    router = make_router(phase="target-primary", target_options="?busy_timeout=0.05")
    router.upsert(make_records(5, DIM))
    with sqlite_locked(tmp_path / "target.db"), pytest.raises(StoreError):  # the primary fails for real
        router.upsert(make_records(2, DIM, seed=9, prefix="late-"))
    assert router.outbox.stats().depth == 2
    router.replay()  # the secondary may have taken the write; the primary is the truth
    assert router.stores["legacy"].get(["late-0", "late-1"]) == []
    assert_same_contents(router.stores["legacy"], router.stores["target"])


def test_secondary_outage_is_invisible_to_callers_and_replay_repairs_it(make_router, tmp_path):
    router = make_router(phase="dual", target_options="?busy_timeout=0.05")
    records = make_records(40, DIM)
    router.upsert(records[:10])
    with sqlite_locked(tmp_path / "target.db"):
        router.upsert(records[10:30])
        router.delete([records[0].id, records[1].id])
        stats = router.outbox.stats()
        assert stats.depth == 22
    assert router.stores["target"].count() == 10
    result = router.replay()
    assert (result.upserted, result.deleted, result.failed) == (20, 2, 0)
    assert router.outbox.stats().depth == 0
    assert_same_contents(router.stores["legacy"], router.stores["target"])
    assert router.replay().upserted == 0  # idempotent


def test_multithreaded_writes_through_an_outage_lose_nothing(make_router, tmp_path):
    """Four threads write and delete before, during and until the end of a target outage."""
    router = make_router(phase="dual", target_options="?busy_timeout=0.02")
    errors = []
    stop = threading.Event()

    def writer(worker):
        rng = np.random.default_rng(worker)
        step = 0
        while not stop.is_set():
            step += 1
            batch = make_records(5, DIM, seed=worker * 100_000 + step, prefix=f"w{worker}-{step % 12}-")
            try:
                if rng.random() < 0.2:
                    router.delete([r.id for r in batch[:2]])
                else:
                    router.upsert(batch)
            except Exception as exc:
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    with sqlite_locked(tmp_path / "target.db"):
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
        assert router.stores["legacy"].count() > 0
    assert errors == []
    assert router.outbox.stats().depth > 0, "the outage should have left ids to repair"
    while router.outbox.stats().depth:
        assert router.replay().failed == 0
    assert_same_contents(router.stores["legacy"], router.stores["target"])


def test_one_unreadable_record_does_not_block_the_repair_of_others(make_router, tmp_path):
    from dualvec.sqlite_driver import connect

    router = make_router(phase="dual", target_options="?busy_timeout=0.05")
    records = make_records(20, DIM)
    with sqlite_locked(tmp_path / "target.db"):
        router.upsert(records)
    # The legacy row of one id is damaged behind dualvec's back: the target refuses it.
    raw = connect(tmp_path / "legacy.db", vec=False)  # the same SQLite library as the stores
    raw.execute("UPDATE docs SET lang = NULL WHERE id = ?", (records[7].id,))
    raw.close()
    result = router.replay()
    assert (result.upserted, result.failed) == (19, 1)
    assert [i.id for i in router.outbox.pending(10)] == [records[7].id]
    assert router.stores["target"].count() == 19
    later = make_records(3, DIM, seed=8, prefix="later-")
    with sqlite_locked(tmp_path / "target.db"):
        router.upsert(later)
    # The stuck id has been tried before, so the fresh ones come first.
    assert [i.id for i in router.outbox.pending(3)] == [r.id for r in later]
    assert router.replay().upserted == 3


def test_shadow_sampling_is_per_read_so_every_tenant_is_compared(make_router):
    from collections import Counter

    from dualvec.routing import key_fingerprint

    router = make_router(read_percent=50, shadow_percent=20)
    router.upsert(make_records(50, DIM))
    shadowed = Counter()
    router.shadow.submit = lambda **job: shadowed.update([job["routing_key_hash"]]) or True
    tenants = ["a", "b", "c", "d"]
    for tenant in tenants:
        for _ in range(500):
            router.search(np.ones(DIM, np.float32), k=3, routing_key=tenant)
    for tenant in tenants:
        assert 60 < shadowed[key_fingerprint(tenant)] < 140  # 20% of 500, each tenant alike


def test_a_router_that_cannot_start_closes_what_it_was_given(tmp_path):
    from dualvec import ConfigError

    legacy = open_store(f"sqlite-blob://{tmp_path}/legacy.db", sample_spec(dim=DIM))
    target = open_store(f"sqlite-vec://{tmp_path}/target.db", sample_spec(dim=DIM * 2))
    config = Settings(flag_file=tmp_path / "flags.json", outbox_path=tmp_path / "outbox.db")
    with pytest.raises(ConfigError, match="differ"):
        Router.over(legacy, target, config, start_replayer=False)
    for store in (legacy, target):
        with pytest.raises(StoreError):
            store.count()
