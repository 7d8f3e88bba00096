"""A Migration made before fork() works in every child, for real: a parent process builds one,
keeps a thread writing and searching through it, forks three children in the middle of that
work, then closes its own migration, so whatever the children do runs on their own threads and
connections. Each child writes, searches, gets its shadow reads compared, has a lost secondary
write repaired by its replayer and sees a rollback of the flag file within a second. Stores
that cannot follow a fork (qdrant-local, LanceDB) are refused in the child with a clear error
while the parent keeps them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest

CONFIG = """
legacy_url = "{legacy_url}"
target_url = "sqlite-vec://{tmp}/target.db"
collection = "docs"
phase = "dual"
read_percent = 100
shadow_percent = 100
flag_file = "{tmp}/flags.json"
outbox_path = "{tmp}/outbox.db"
flag_poll_seconds = 0.05
replay_interval_seconds = 0.1

[shadow]
mismatch_log = "{tmp}/mismatches.jsonl"
niceness = 0

[collections.docs]
dim = 8
model = "m"
metric = "l2"
fields = {{ lang = "str" }}
"""

# Run as its own process: the parent must be able to close its migration and still wait for
# its children, and a child must never return into pytest.
FORKING = textwrap.dedent(
    """
    import json, os, sys, threading, time
    from pathlib import Path

    import numpy as np

    from dualvec import Record
    from dualvec.flags import write_flag_file
    from dualvec.migration import Migration
    from dualvec.settings import Flags, Phase, load_settings

    CHILDREN = 3
    tmp = Path(sys.argv[1])
    closed = tmp / "parent-closed"
    migration = Migration.from_settings(load_settings())
    router = migration["docs"]


    def record(name, rng):
        return Record(name, rng.standard_normal(8).astype(np.float32), {"lang": "en"})

    seeds = np.random.default_rng(0)
    router.upsert([record(f"seed-{i}", seeds) for i in range(50)])


    def wait_for(check, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if check():
                return True
            time.sleep(0.01)
        return False


    def child(i):
        report = {"pid": os.getpid(), "index": i}
        rolled_back = {}

        def watch_flags():
            while router.flags.flags.read_percent != 0:
                time.sleep(0.005)
            rolled_back["seen_at"] = time.time()

        threading.Thread(target=watch_flags, daemon=True).start()
        mine = Record(f"child-{i}", np.full(8, 50.0 + 10 * i, np.float32), {"lang": "en"})
        router.upsert([mine])
        report["found"] = router.search(mine.vector, k=1)[0].id
        report["in_both"] = [len(router.stores[s].get([mine.id])) for s in ("legacy", "target")]
        # From here on nothing of the parent's runs: its threads and connections are closed.
        wait_for(closed.exists, 10)
        matched = lambda: router.metrics.value("dualvec_shadow_comparisons_total", outcome="match")
        before = matched()
        for _ in range(3):
            router.search(mine.vector, k=3)
        report["shadows_compared"] = wait_for(lambda: matched() >= before + 3, 5)
        # A write the secondary missed: legacy has it, the outbox says so; the replayer repairs.
        # Its own generator: numpy's holds a lock, which the parent's busy thread may have held.
        lost = record(f"lost-{i}", np.random.default_rng(100 + i))
        router.stores["legacy"].upsert([lost])
        router.outbox.record([lost.id], "upsert", "legacy")
        report["repaired"] = wait_for(lambda: len(router.stores["target"].get([lost.id])) == 1, 5)
        report["rolled_back"] = wait_for(lambda: "seen_at" in rolled_back, 5)
        report["rollback_delay"] = rolled_back.get("seen_at", 0.0) - json.loads(
            (tmp / "flags.json").read_text())["updated_at"]
        report["read_percent_gauge"] = router.metrics.value("dualvec_flag_read_percent")
        return report


    stop = threading.Event()

    def busy():
        n, rng = 0, np.random.default_rng(1)
        while not stop.is_set():
            r = record(f"busy-{n % 20}", rng)
            router.upsert([r])
            router.search(r.vector, k=5)
            n += 1

    worker = threading.Thread(target=busy)
    worker.start()
    time.sleep(0.2)
    pids = []
    for i in range(CHILDREN):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                print(json.dumps(child(i)), flush=True)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
        time.sleep(0.05)
    stop.set()
    worker.join()
    migration.close()
    closed.touch()
    time.sleep(0.5)
    write_flag_file(tmp / "flags.json", Flags(phase=Phase.DUAL, read_percent=0, shadow_percent=100))
    deadline = time.monotonic() + 30
    codes = {}
    while len(codes) < len(pids) and time.monotonic() < deadline:
        for pid in pids:
            if pid not in codes:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    codes[pid] = os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    for pid in set(pids) - set(codes):
        os.kill(pid, 9)
    print(json.dumps({"exit_codes": [codes.get(pid, "hung") for pid in pids]}), flush=True)
    """
)


def run_forking(tmp_path, legacy_url: str) -> tuple[list[dict], dict]:
    (tmp_path / "dualvec.toml").write_text(CONFIG.format(tmp=tmp_path, legacy_url=legacy_url))
    env = {"DUALVEC_CONFIG": str(tmp_path / "dualvec.toml"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", FORKING, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert "database is locked" not in done.stderr
    return lines[:-1], lines[-1]


@pytest.mark.slow
def test_a_migration_made_before_fork_works_in_every_child(tmp_path):
    children, parent = run_forking(tmp_path, f"sqlite-blob://{tmp_path}/legacy.db")

    assert parent["exit_codes"] == [0, 0, 0], "a child hung or failed after fork"
    assert len({c["pid"] for c in children}) == 3
    for child in children:
        assert child["found"] == f"child-{child['index']}"
        assert child["in_both"] == [1, 1]
        assert child["shadows_compared"], "the child's shadow pool compared nothing"
        assert child["repaired"], "the child's replayer did not repair a lost secondary write"
        assert child["rolled_back"], "the child never saw the rollback"
        assert child["rollback_delay"] < 1.0
        assert child["read_percent_gauge"] == 0


REFUSING_CHILD = textwrap.dedent(
    """
    import json, os, subprocess, sys

    from dualvec import open_store
    from dualvec.errors import StoreError
    from dualvec.spec import CollectionSpec

    url = sys.argv[1]
    spec = CollectionSpec(name="docs", dim=4, model="m", metric="l2")
    store = open_store(url, spec)
    pid = os.fork()
    if pid == 0:
        try:
            store.count()
            print(json.dumps({"child": "used the parent's store"}), flush=True)
        except StoreError as exc:
            print(json.dumps({"child": f"{type(exc).__name__}: {exc}"}), flush=True)
        if url.startswith("lancedb"):
            os._exit(0)  # LanceDB's own exit handler hangs in a forked child
        try:  # nor may the child open the folder anew: the parent holds it
            open_store(url, spec)
            print(json.dumps({"reopened": "opened"}), flush=True)
        except StoreError as exc:
            print(json.dumps({"reopened": f"{type(exc).__name__}: {exc}"}), flush=True)
        # A full exit, closing and collecting everything: the parent must keep its folder lock.
        store.close()
        del store
        sys.exit(0)
    os.waitpid(pid, 0)
    # The child let go of nothing: the store is still this process's.
    print(json.dumps({"parent_count": store.count()}), flush=True)
    if url.startswith("qdrant-local"):  # the folder is still locked to every other process
        opener = "import sys; from dualvec import open_store; from dualvec.spec import CollectionSpec; " + (
            "open_store(sys.argv[1], CollectionSpec(name='docs', dim=4, model='m', metric='l2'))"
        )
        other = subprocess.run([sys.executable, "-c", opener, url], capture_output=True, text=True)
        print(json.dumps({"other_process": (other.stderr.strip().splitlines() or ["opened"])[-1]}))
    store.close()
    """
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "why"),
    [
        ("qdrant-local", "StoreLockedError: .* Qdrant's local mode lets one process use a folder"),
        ("lancedb", "StoreError: .* LanceDB is not safe to use after fork"),
    ],
)
def test_a_store_that_cannot_follow_a_fork_is_refused_in_the_child(tmp_path, backend, why):
    """Qdrant local mode allows one process per folder, and LanceDB crashed or hung in forked
    children: the child gets a clear error naming the fix, and the parent keeps its store (a
    Qdrant folder stays locked to every other process)."""
    pytest.importorskip({"qdrant-local": "qdrant_client", "lancedb": "lancedb"}[backend])
    url = f"{backend}://{tmp_path / 'store'}"
    done = subprocess.run(
        [sys.executable, "-c", REFUSING_CHILD, url], capture_output=True, text=True, timeout=90, check=False
    )
    assert done.returncode == 0, done.stderr
    report = {}
    for line in done.stdout.splitlines():
        report.update(json.loads(line))
    assert re.search(why, report["child"]), report["child"]
    assert "after forking" in report["child"]
    assert report["parent_count"] == 0
    if backend == "qdrant-local":
        assert report["reopened"].startswith("StoreLockedError: qdrant-local folder")
        assert "StoreLockedError" in report["other_process"]
