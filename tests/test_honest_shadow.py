"""Signals you can trust, proven both ways against real stores: a healthy migration under live
upserts, updates and deletes shows no mismatch over thousands of shadow comparisons (the
differences writes in flight make are counted as `in_flight`), and real divergences made behind
the router's back are each reported as mismatches, naming the id."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from helpers import SlowSearches, sqlite_locked

from dualvec import Record, VectorStore, open_store
from dualvec.flags import Flags, Phase, write_flag_file
from dualvec.mismatch_log import MismatchLog
from dualvec.router import Router
from dualvec.settings import Settings, ShadowSettings
from dualvec.testing import make_records, sample_spec

DIM = 16
LIVE = 300  # few records, so that the ids being written are often in a top 10


def settings(tmp_path, read_percent: float = 50) -> Settings:
    return Settings(
        phase="dual",
        read_percent=read_percent,
        shadow_percent=100,
        flag_file=tmp_path / "flags.json",
        outbox_path=tmp_path / "outbox.db",
        shadow=ShadowSettings(
            workers=4, niceness=0, max_pending=10_000, mismatch_log=tmp_path / "mismatches.jsonl"
        ),
    )


class HeldSearches(SlowSearches):
    """A real store whose searches wait until the test releases them: what places a shadow read
    after a flag change, whatever the machine's load."""

    def __init__(self, store) -> None:
        super().__init__(store, 0.0)
        self.release = threading.Event()

    def search(self, *args, **kwargs):
        assert self.release.wait(timeout=30), "never released"
        return self._store.search(*args, **kwargs)


def filled_stores(tmp_path, legacy_url: str) -> tuple[VectorStore, VectorStore, list[Record]]:
    """Legacy and a sqlite-vec target holding the same records, as backfill would leave them."""
    spec = sample_spec(dim=DIM, metric="l2")
    legacy = open_store(legacy_url, spec)
    target = open_store(f"sqlite-vec://{tmp_path}/target.db?busy_timeout=0.05", spec)
    start = make_records(LIVE, DIM, seed=1)
    legacy.upsert(start)
    target.upsert(start)
    return legacy, target, start


def open_router(tmp_path, legacy_url: str, *, target_delay: float = 0.0, read_percent: float = 50) -> Router:
    legacy, target, _ = filled_stores(tmp_path, legacy_url)
    if target_delay:
        target = SlowSearches(target, target_delay)
    return Router.over(legacy, target, settings(tmp_path, read_percent), start_replayer=False)


def outcomes(router: Router) -> dict[str, float]:
    return {
        o: router.metrics.value("dualvec_shadow_comparisons_total", outcome=o)
        for o in ("match", "mismatch", "in_flight")
    }


# LanceDB searches and merge-inserts take 10-30 ms each here, so its run compares fewer reads
# in the suite's time budget.
@pytest.mark.slow
@pytest.mark.parametrize(("legacy", "comparisons"), [("sqlite-blob", 2000), ("lancedb", 400)])
def test_a_healthy_migration_under_live_writes_shows_no_mismatch(tmp_path, legacy, comparisons):
    url = f"sqlite-blob://{tmp_path}/legacy.db" if legacy == "sqlite-blob" else f"lancedb://{tmp_path}/lance"
    router = open_router(tmp_path, url)
    stop = threading.Event()
    errors: list[Exception] = []

    def write() -> None:
        rng = np.random.default_rng(5)
        step = 0
        while not stop.wait(0.01):  # about 100 writes a second, one at a time, as an app does
            step += 1
            ids = [f"doc-{i}" for i in rng.choice(LIVE, 3, replace=False)]
            try:
                if step % 4 == 0:
                    router.delete(ids[:1])
                else:
                    fresh = make_records(3, DIM, seed=step)
                    router.upsert([Record(i, r.vector, r.metadata) for i, r in zip(ids, fresh, strict=True)])
            except Exception as exc:
                errors.append(exc)

    def read(seed: int) -> None:
        rng = np.random.default_rng(seed)
        queries = make_records(64, DIM, seed=seed)
        while not stop.is_set():
            try:
                router.search(
                    queries[int(rng.integers(64))].vector, k=10, routing_key=f"user-{rng.integers(100)}"
                )
            except Exception as exc:
                errors.append(exc)

    threads = [threading.Thread(target=write), *(threading.Thread(target=read, args=(s,)) for s in (1, 2))]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 120
        while sum(outcomes(router).values()) < comparisons and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        router.shadow.close()
        counts = outcomes(router)
        router.close()
    assert errors == []
    assert sum(counts.values()) >= comparisons, counts
    assert counts["mismatch"] == 0, (
        counts,
        [s.reasons for s in MismatchLog(tmp_path / "mismatches.jsonl").latest(5)],
    )
    # Whether a write lands between the two reads here depends on timing; the next test makes it
    # happen on purpose.


def test_writes_between_a_read_its_shadow_and_the_recheck_are_in_flight_not_a_mismatch(tmp_path):
    """Served from legacy at once; the target's shadow answers 0.5 s later. A record written
    before the shadow read differs once, and the re-check clears it; a second one, written
    while the re-check waits on the target, leaves a difference only a write explains."""
    router = open_router(tmp_path, f"sqlite-blob://{tmp_path}/legacy.db", target_delay=0.5, read_percent=0)
    query = make_records(LIVE, DIM, seed=1)[3]
    try:
        router.search(query.vector, k=10)
        time.sleep(0.1)
        router.upsert([Record("new-1", query.vector + 0.001, query.metadata)])
        time.sleep(0.65)  # the shadow read is done; the re-check's target read is waiting
        router.upsert([Record("new-2", query.vector + 0.002, query.metadata)])
        router.shadow.close()
        counts = outcomes(router)
    finally:
        router.close()
    assert counts == {"match": 0, "mismatch": 0, "in_flight": 1}


@pytest.mark.parametrize("divergence", ["deleted", "vector", "metadata", "lost during an outage"])
def test_a_real_divergence_is_a_mismatch_naming_the_id(tmp_path, divergence):
    router = open_router(tmp_path, f"sqlite-blob://{tmp_path}/legacy.db")
    target = router.stores["target"]
    victim = make_records(LIVE, DIM, seed=1)[7]
    try:
        if divergence == "deleted":
            target.delete([victim.id])
        elif divergence == "vector":
            target.upsert([Record(victim.id, victim.vector + 0.5, victim.metadata)])
        elif divergence == "metadata":
            # A different value for a filterable field: the filtered answers differ.
            target.upsert([Record(victim.id, victim.vector, {**victim.metadata, "lang": "zz"})])
        else:
            moved = Record(victim.id, victim.vector + 0.5, victim.metadata)
            with sqlite_locked(tmp_path / "target.db"):
                router.upsert([moved])  # acknowledged: legacy has it; the target missed it
            assert router.outbox.stats().depth == 1  # not yet repaired
            victim = moved
        query_filter = {"lang": victim.metadata["lang"]} if divergence == "metadata" else None
        for key in ("a", "b", "c", "d", "e", "f"):
            router.search(victim.vector, k=10, filter=query_filter, routing_key=key)
        router.shadow.close()
        counts = outcomes(router)
    finally:
        router.close()
    assert counts["mismatch"] > 0 and counts["in_flight"] == 0, counts
    samples = MismatchLog(tmp_path / "mismatches.jsonl").latest(10)
    assert samples and all(victim.id in {h.id for h in (*s.legacy, *s.target)} for s in samples), samples


def test_a_shadow_that_runs_after_the_collection_left_dual_writes_is_dropped_not_a_mismatch(tmp_path):
    """The demo's last phase: shadows queued in target-primary run after the flip to `target`,
    when legacy no longer receives writes. Comparing against it would report the writes it
    missed as mismatches; the comparison is dropped and counted instead."""
    legacy, target, start = filled_stores(tmp_path, f"sqlite-blob://{tmp_path}/legacy.db")
    # Every read served by the target (read_percent 100), so only the shadow reads legacy.
    config = settings(tmp_path, read_percent=100).model_copy(update={"phase": "target-primary"})
    held = HeldSearches(legacy)
    router = Router.over(held, target, config, start_replayer=False)
    query = start[3]
    try:
        router.search(query.vector, k=10)  # served by the target; legacy's shadow waits
        write_flag_file(tmp_path / "flags.json", Flags(phase=Phase.TARGET))
        deadline = time.monotonic() + 5.0
        while router.flags.flags.phase is not Phase.TARGET:
            assert time.monotonic() < deadline, "flag change not seen"
            time.sleep(0.02)
        router.upsert([Record("after-the-flip", query.vector, query.metadata)])  # target only now
        held.release.set()  # legacy's shadow answers only now, after the flip
        router.shadow.close()
        counts = outcomes(router)
        dropped = router.metrics.value("dualvec_shadow_dropped_total", reason="phase_changed")
    finally:
        router.close()
    assert counts == {"match": 0, "mismatch": 0, "in_flight": 0}
    assert dropped == 1


class FailingSearches(SlowSearches):
    """A real store whose searches raise, as a store whose file went away does (a fault made on
    purpose: what the guard's error ratio must see)."""

    def search(self, *args, **kwargs):
        raise OSError("disk I/O error")


def test_failed_reads_are_counted_per_store_whether_served_or_shadowed(tmp_path):
    legacy, target, start = filled_stores(tmp_path, f"sqlite-blob://{tmp_path}/legacy.db")
    router = Router.over(legacy, FailingSearches(target, 0), settings(tmp_path, 100), start_replayer=False)
    try:
        with pytest.raises(OSError, match="disk I/O"):
            router.search(start[0].vector, k=10, routing_key="served-by-target")
        write_flag_file(tmp_path / "flags.json", Flags(phase=Phase.DUAL, read_percent=0, shadow_percent=100))
        deadline = time.monotonic() + 5.0
        while router.flags.flags.read_percent != 0:
            assert time.monotonic() < deadline, "flag change not seen"
            time.sleep(0.02)
        assert [h.id for h in router.search(start[0].vector, k=1)] == [start[0].id]  # legacy serves
        router.shadow.close()
        target_failed = router.metrics.value("dualvec_read_failures_total", store="target", op="search")
        legacy_failed = router.metrics.value("dualvec_read_failures_total", store="legacy", op="search")
    finally:
        router.close()
    assert target_failed == 2  # the read it served, and the shadow of the one legacy served
    assert legacy_failed == 0


def test_a_write_in_flight_lowers_no_recall_the_guard_reads(tmp_path):
    """A target judged with min_recall 0.8 (as a quantized one is): a record written between the
    served read and its shadow makes the two answers differ by one id in ten, a match either way;
    the recall observed is the target's (1.0), not 0.9 because of the write."""
    legacy, target, start = filled_stores(tmp_path, f"sqlite-blob://{tmp_path}/legacy.db")
    config = settings(tmp_path, read_percent=0).model_copy(
        update={"shadow": ShadowSettings(workers=1, niceness=0, min_recall=0.8)}
    )
    router = Router.over(legacy, SlowSearches(target, 0.5), config, start_replayer=False)
    try:
        router.search(start[3].vector, k=10)
        time.sleep(0.1)
        router.upsert([Record("new-1", start[3].vector + 0.001, start[3].metadata)])
        router.shadow.close()
        counts = outcomes(router)
        recall = {n: router.metrics.value(f"dualvec_shadow_recall_{n}") for n in ("sum", "count")}
    finally:
        router.close()
    assert counts == {"match": 1, "mismatch": 0, "in_flight": 0}
    assert recall == {"sum": 1.0, "count": 1.0}
