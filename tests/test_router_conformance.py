"""The conformance suite over the Router itself, in each phase (issue #10, item 7).

A sqlite-blob legacy store (cosine, l2, dot) and a sqlite-vec target (cosine, l2): the Router
supports what both do, and refuses dot at open. In dual and target-primary both stores serve
reads (read_percent 50, no routing key: each read picks at random) and every read is shadowed.
After every test the outbox is empty and, in those two phases, both stores hold the same records.
"""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from pathlib import Path

import pytest
from prometheus_client import Counter

from dualvec import open_store
from dualvec.metrics import DualvecMetrics
from dualvec.outbox import Outbox
from dualvec.records import Record
from dualvec.router import Router
from dualvec.settings import Settings
from dualvec.testing import make_records, sample_spec
from dualvec.testing.conformance import PersistentStoreConformance

SHM = Path("/dev/shm")


def held(store) -> dict:
    """Every record of a store, exactly: id to (vector bytes, metadata)."""
    return {r.id: (r.vector.tobytes(), r.metadata) for batch in store.scan(1000) for r in batch}


def total(counter: Counter, **labels: str) -> float:
    """A counter's total over every collection, among its samples with these labels."""
    samples = [s for family in counter.collect() for s in family.samples if s.name.endswith("_total")]
    return sum(s.value for s in samples if labels.items() <= s.labels.items())


@pytest.fixture
def folder(tmp_path):
    """The outbox fsyncs every intent; on tmpfs that costs nothing and the file runs twice as
    fast (durability is not under test here)."""
    if not SHM.is_dir():
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir=SHM) as scratch:
        yield Path(scratch)


@pytest.fixture(params=["legacy", "dual", "target-primary", "target"])
def phase(request) -> str:
    return request.param


@pytest.fixture
def open_router(folder, phase):
    """Open a Router in `phase` over both stores of a spec, on the same files every time."""
    settings = Settings(
        flag_file=folder / "flags.json",
        outbox_path=folder / "outbox.db",
        phase=phase,
        read_percent=50,
        shadow_percent=100,
    )
    metrics, opened = DualvecMetrics(), []

    def open_one(spec):
        with ExitStack() as failed:
            legacy = open_store(f"sqlite-blob://{folder}/legacy.db", spec)
            failed.callback(legacy.close)
            target = open_store(f"sqlite-vec://{folder}/target.db", spec)
            failed.callback(target.close)
            router = Router.over(legacy, target, settings, metrics=metrics, start_replayer=False)
            failed.pop_all()
        opened.append(spec)
        return router

    open_one.metrics = metrics
    yield open_one
    # Beyond the suite: whatever a test did, no store refused a write the router let through,
    # no shadow comparison broke, no write is left to repair and, in the dual write phases,
    # both stores hold exactly the same records. (Not: no shadow mismatch. A write right after
    # a read can land between the shadow's two confirming reads and count as one.)
    assert total(metrics.write_failures) == 0
    assert total(metrics.compare_errors) == 0
    for spec in {s.name: s for s in opened}.values():
        assert Outbox.peek(folder / "outbox.db", spec.name).depth == 0
        if phase in ("dual", "target-primary"):
            with (
                open_store(f"sqlite-blob://{folder}/legacy.db", spec) as legacy,
                open_store(f"sqlite-vec://{folder}/target.db", spec) as target,
            ):
                assert held(legacy) == held(target)


class TestRouter(PersistentStoreConformance):
    metrics = frozenset({"cosine", "l2"})

    @pytest.fixture
    def open_collection(self, open_router):
        return open_router


@pytest.mark.parametrize("phase", ["dual", "target-primary"])
def test_dual_writes_leave_both_stores_alike(open_router, phase):
    """The same check, on the router's own open stores, after inserts, replacements and deletes."""
    router = open_router(sample_spec(dim=16))
    try:
        records = make_records(300, 16, seed=1)
        router.upsert(records)
        router.upsert([Record(r.id, -r.vector, {**r.metadata, "lang": "xx"}) for r in records[::3]])
        router.delete([r.id for r in records[1::5]] + ["never-existed"])
        assert held(router.stores["legacy"]) == held(router.stores["target"])
        assert router.count() == 240
        for record in records[:20]:
            router.search(record.vector, k=5)
    finally:
        router.close()  # after the shadow reads queued
    metrics = open_router.metrics
    assert total(metrics.reads, store="legacy") > 0
    assert total(metrics.reads, store="target") > 0
    assert total(metrics.comparisons, outcome="match") > 0
