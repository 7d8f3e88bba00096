"""Backfill and verify, for real: live writers, updaters and deleters run through a Router in
phase dual while backfill copies; backfill is SIGKILLed and restarted; verify finds planted
differences, repairs them, and resumes without skipping rows that moved."""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import assert_same_contents, docs, sqlite_locked, write_config

from dualvec import Record, open_store
from dualvec.backfill import backfill
from dualvec.cli.main import cli
from dualvec.flags import write_flag_file
from dualvec.outbox import Outbox
from dualvec.router import Router
from dualvec.settings import Flags, Phase, load_settings
from dualvec.testing import make_records, sample_spec
from dualvec.verify import verify

DIM = 8
SPEC = sample_spec(dim=DIM)
SHM = Path("/dev/shm")


def set_phase(data: Path, phase: str) -> None:
    write_flag_file(data / "flags.json", Flags(phase=Phase(phase)))


def load(url: str, n: int) -> list[str]:
    """The legacy collection as it was before dual writes: `n` records written straight to it."""
    store = open_store(url, SPEC)
    try:
        records = make_records(n, DIM, seed=1)
        for start in range(0, n, 500):
            store.upsert(records[start : start + 500])
    finally:
        store.close()
    return [r.id for r in records]


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


DUALVEC = [sys.executable, "-c", "from dualvec.cli import main; main()"]


class Churn:
    """Live traffic through a Router in phase dual, as threads: one writes new ids, two update
    ids that backfill is copying (new vector and metadata), one deletes them."""

    def __init__(self, router: Router, ids: list[str]) -> None:
        self.router, self.ids = router, ids
        self.stop = threading.Event()
        self.ops: Counter[str] = Counter()
        self.errors: list[Exception] = []
        kinds = ("write", "update", "update", "delete")
        self.threads = [threading.Thread(target=self._run, args=(k, n)) for n, k in enumerate(kinds)]

    def _run(self, kind: str, worker: int) -> None:
        rng = np.random.default_rng(worker)
        step = 0
        while not self.stop.is_set():
            step += 1
            seed = worker * 1_000_000 + step
            try:
                if kind == "write":
                    self.router.upsert(make_records(3, DIM, seed=seed, prefix=f"live-{worker}-{step}-"))
                elif kind == "update":
                    ids = rng.choice(self.ids, size=3, replace=False)
                    fresh = make_records(3, DIM, seed=seed)
                    self.router.upsert(
                        [
                            Record(str(i), r.vector, {**r.metadata, "year": 3000 + step})
                            for i, r in zip(ids, fresh, strict=True)
                        ]
                    )
                else:
                    self.router.delete([str(rng.choice(self.ids))])
                self.ops[kind] += 1
            except Exception as exc:
                self.errors.append(exc)
            time.sleep(0.002)  # leave the write lock to the backfill now and then

    def __enter__(self) -> Churn:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()
        assert self.errors == []


def open_router() -> Router:
    return Router.from_settings(load_settings(), start_replayer=False)


def verify_clean_after_repair(router: Router) -> None:
    """`verify --repair` finds nothing to repair (backfill alone was exact), then `verify` is clean."""
    code, output = run_cli("verify", "--repair", "--json", "--silent")
    assert code == 0, output
    report = docs(output)
    assert report["before"] == {"missing": 0, "extra": 0, "vector": 0, "metadata": 0}, report
    assert report["clean"]
    code, output = run_cli("verify", "--silent")
    assert code == 0, output
    assert output.strip().endswith("clean")
    assert_same_contents(router.stores["legacy"], router.stores["target"])


@pytest.mark.slow
def test_backfill_process_beside_live_writes_lancedb(tmp_path, monkeypatch):
    """LanceDB -> sqlite-vec: `dualvec backfill` runs in its own process while threads write,
    update and delete the same ids through a Router in this one."""
    data = write_config(tmp_path, monkeypatch, f"lancedb://{tmp_path}/lance")
    ids = load(f"lancedb://{tmp_path}/lance", 1500)
    set_phase(data, "dual")
    router = open_router()
    try:
        with Churn(router, ids) as churn:
            time.sleep(0.3)
            before = sum(churn.ops.values())
            done = subprocess.run(
                [*DUALVEC, "backfill", "--batch-size", "100", "--silent", "--json"],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            during = sum(churn.ops.values()) - before
        assert done.returncode == 0, done.stderr
        assert docs(done.stdout)["copied"] > 1000
        assert during > 20, f"only {during} live writes overlapped the backfill"
        verify_clean_after_repair(router)
    finally:
        router.close()


@pytest.fixture
def qdrant_folder(tmp_path):
    """On tmpfs when there is one: Qdrant local commits each point with its own fsync."""
    if not SHM.is_dir():
        yield tmp_path / "qdrant"
        return
    with tempfile.TemporaryDirectory(dir=SHM) as scratch:
        yield Path(scratch) / "qdrant"


@pytest.mark.slow
def test_backfill_beside_live_writes_qdrant_local(tmp_path, monkeypatch, qdrant_folder):
    """Qdrant local -> sqlite-vec. Local mode allows one client per folder and none across
    processes, so the live writers are threads sharing the Router and backfill runs in this
    process through the library, with an outbox object of its own (the flock still serialises)."""
    data = write_config(tmp_path, monkeypatch, f"qdrant-local://{qdrant_folder}")
    ids = load(f"qdrant-local://{qdrant_folder}", 4000)
    set_phase(data, "dual")
    router = open_router()
    outbox = Outbox(data / "outbox.db", "docs")
    try:
        with Churn(router, ids) as churn:
            time.sleep(0.2)
            before = sum(churn.ops.values())
            result = backfill(router.stores["legacy"], router.stores["target"], outbox, batch_size=20)
            during = sum(churn.ops.values()) - before
        assert result.copied > 3000
        assert during > 20, f"only {during} live writes overlapped the backfill"
        found = verify(router.stores["legacy"], router.stores["target"], outbox, repair=True)
        assert found.before == {"missing": 0, "extra": 0, "vector": 0, "metadata": 0}
        assert found.clean, found.summary()
    finally:
        outbox.close()
        router.close()
    code, output = run_cli("verify", "--silent")  # the CLI opens the folder once the router let go
    assert code == 0, output


def checkpoint_scanned(path: Path) -> int:
    try:
        return int(json.loads(path.read_text())["scanned"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


@pytest.mark.slow
def test_backfill_killed_at_random_moments_resumes_and_ends_identical(tmp_path, monkeypatch):
    """SIGKILL a `dualvec backfill` process at random moments while live writes go on (rewrites
    move rows to the end of the BLOB table's scan, deletes move later rows up); every restart
    continues from the checkpoint, and the end state verifies clean without any repair."""
    legacy_url = f"sqlite-blob://{tmp_path}/legacy.db"
    data = write_config(tmp_path, monkeypatch, legacy_url)
    ids = load(legacy_url, 6000)
    set_phase(data, "dual")
    checkpoint = data / "backfill-docs.json"
    command = [*DUALVEC, "backfill", "--batch-size", "20", "--silent", "--json"]
    rng = random.Random(3)
    reached = []
    router = open_router()
    try:
        with Churn(router, ids):
            for _ in range(6):
                proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                last = checkpoint_scanned(checkpoint)
                deadline = time.monotonic() + 30
                while checkpoint_scanned(checkpoint) <= last and proc.poll() is None:
                    assert time.monotonic() < deadline, "backfill made no progress"
                    time.sleep(0.005)
                time.sleep(rng.uniform(0, 0.15))
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                reached.append(checkpoint_scanned(checkpoint))
            final = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
            # verify beside live writes: a write landing between its two reads of an id must
            # not be reported (differences are re-read under the write lock)
            checked = subprocess.run(
                [*DUALVEC, "verify", "--batch-size", "50"],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert final.returncode == 0, final.stderr
        summary = docs(final.stdout)
        assert all(a < b for a, b in itertools.pairwise(reached)) and reached[0] > 0, reached
        assert reached[-1] < 6000, f"killed too late to test anything: {reached}"
        assert summary["resumed_from"] == reached[-1]
        assert summary["skipped_present"] > 0  # records before the checkpoint were not copied again
        assert_same_contents(router.stores["legacy"], router.stores["target"])
    finally:
        router.close()


def test_backfill_never_overwrites_a_write_whose_legacy_copy_failed(tmp_path, monkeypatch):
    """In target-primary, a write whose legacy copy failed (legacy really locked) leaves legacy
    behind for that id; backfill must leave the target's newer record alone."""
    legacy_url = f"sqlite-blob://{tmp_path}/legacy.db?busy_timeout=0.05"
    data = write_config(tmp_path, monkeypatch, legacy_url)
    load(legacy_url, 200)
    set_phase(data, "target-primary")
    router = open_router()
    try:
        old = router.stores["legacy"].get(["doc-7"])[0]
        newer = Record("doc-7", make_records(1, DIM, seed=77)[0].vector, {**old.metadata, "year": 2999})
        with sqlite_locked(tmp_path / "legacy.db"):
            router.upsert([newer])
        assert router.outbox.stats().depth == 1
        result = backfill(router.stores["legacy"], router.stores["target"], router.outbox)
        assert result.skipped_pending == 1 and result.copied == 199
        assert router.stores["target"].get(["doc-7"]) == [newer]
        router.replay()
        assert router.stores["legacy"].get(["doc-7"]) == [newer]
        assert verify(router.stores["legacy"], router.stores["target"], router.outbox, primary="target").clean
    finally:
        router.close()


# Run in another process after backfill's first batch: a live update and delete, through a
# Router, of ids in a later batch that backfill's scan has already read as they were.
LATE_WRITER = """
from dualvec import Record
from dualvec.router import Router
from dualvec.settings import load_settings
from dualvec.testing import make_records
router = Router.from_settings(load_settings(), start_replayer=False)
old = router.stores["legacy"].get(["doc-250"])[0]
router.upsert([Record("doc-250", make_records(1, 8, seed=77)[0].vector, {**old.metadata, "year": 2999})])
router.delete(["doc-260"])
router.close()
"""


def test_backfill_neither_overwrites_nor_brings_back_what_a_write_after_its_scan_changed(
    tmp_path, monkeypatch
):
    """Backfill copies scanned records as they are only while no write has been made since its
    scan began. Here another process updates and deletes ids after the scan's snapshot was
    taken (the BLOB table's scan reads one snapshot): the update must survive and the deleted
    id must stay deleted."""
    legacy_url = f"sqlite-blob://{tmp_path}/legacy.db"
    data = write_config(tmp_path, monkeypatch, legacy_url)
    load(legacy_url, 300)
    set_phase(data, "dual")
    router = open_router()
    legacy, target = router.stores["legacy"], router.stores["target"]
    newer = Record(
        "doc-250",
        make_records(1, DIM, seed=77)[0].vector,
        {**legacy.get(["doc-250"])[0].metadata, "year": 2999},
    )

    def write_after_first_batch(progress) -> None:
        if progress.done == 100:
            subprocess.run([sys.executable, "-c", LATE_WRITER], check=True, timeout=60)

    try:
        result = backfill(legacy, target, router.outbox, batch_size=100, on_progress=write_after_first_batch)
        assert (result.scanned, result.copied, result.skipped_deleted) == (300, 299, 1)
        assert target.get(["doc-250", "doc-260"]) == [newer]
        assert_same_contents(legacy, target)
    finally:
        router.close()


def test_backfill_refuses_unless_writes_reach_the_target(tmp_path, monkeypatch):
    write_config(tmp_path, monkeypatch, f"sqlite-blob://{tmp_path}/legacy.db")
    load(f"sqlite-blob://{tmp_path}/legacy.db", 50)
    code, output = run_cli("backfill", "--silent")
    assert code == 1
    assert "phase legacy" in output and "dualvec flags set phase=dual" in output
    code, output = run_cli("backfill", "--silent", "--force", "--json")
    assert code == 0, output
    assert docs(output)["copied"] == 50


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, monkeypatch):
    data = write_config(tmp_path, monkeypatch, f"sqlite-blob://{tmp_path}/legacy.db")
    load(f"sqlite-blob://{tmp_path}/legacy.db", 1234)
    open_store(f"sqlite-vec://{tmp_path}/target.db", SPEC).close()
    set_phase(data, "dual")
    before = sorted(p.name for p in data.iterdir())
    code, output = run_cli("backfill", "--dry-run", "--batch-size", "100", "--json")
    assert code == 0, output
    plan = docs(output)
    assert (plan["legacy_count"], plan["target_count"], plan["batches"]) == (1234, 0, math.ceil(1234 / 100))
    assert (plan["resume_from"], plan["dry_run"], plan["refused"]) == (0, True, None)
    code, output = run_cli("backfill", "--dry-run")
    assert code == 0 and "would scan 1234 legacy records in 3 batches of 500" in output
    assert sorted(p.name for p in data.iterdir()) == before  # no checkpoint, no outbox
    target = open_store(f"sqlite-vec://{tmp_path}/target.db", SPEC)
    assert target.count() == 0
    target.close()


def plant_differences(tmp_path: Path) -> None:
    """One difference of each kind, made directly in the target behind dualvec's back."""
    target = open_store(f"sqlite-vec://{tmp_path}/target.db", SPEC)
    try:
        target.delete(["doc-1", "doc-2"])
        [three, four] = target.get(["doc-3", "doc-4"])
        target.upsert(
            [
                Record("doc-3", three.vector * 2, three.metadata),  # same direction: equal in cosine
                Record("doc-4", four.vector + 1, four.metadata),
                Record("doc-5", target.get(["doc-5"])[0].vector, {**four.metadata, "year": 1}),
                Record("stray", four.vector, four.metadata),
            ]
        )
    finally:
        target.close()


def test_verify_exit_codes_samples_repair_and_state_file(tmp_path, monkeypatch):
    data = write_config(tmp_path, monkeypatch, f"sqlite-blob://{tmp_path}/legacy.db")
    load(f"sqlite-blob://{tmp_path}/legacy.db", 300)
    set_phase(data, "dual")
    assert run_cli("backfill", "--silent")[0] == 0
    code, output = run_cli("verify", "--silent")
    assert code == 0 and output.strip().endswith("clean"), output
    plant_differences(tmp_path)

    code, output = run_cli("verify", "--json", "--silent", "--sample", "1")
    assert code == 3, output
    report = docs(output)
    assert report["counts"] == {"missing": 2, "extra": 1, "vector": 1, "metadata": 1}
    assert report["samples"] == {
        "missing": ["doc-1"],
        "extra": ["stray"],
        "vector": ["doc-4"],
        "metadata": ["doc-5"],
    }
    state = json.loads((data / "verify-docs.json").read_text())
    assert (state["clean"], state["differences"], state["collection"]) == (False, 5, "docs")
    code, output = run_cli("verify", "--silent")
    assert code == 3 and "missing in target" in output and "e.g. doc-1, doc-2" in output

    code, output = run_cli("verify", "--repair", "--json", "--silent")
    assert code == 0, output
    report = docs(output)
    assert report["before"] == {"missing": 2, "extra": 1, "vector": 1, "metadata": 1}
    assert report["repaired"] == {"upserted": 4, "deleted": 1, "failed": 0}
    assert run_cli("verify", "--silent")[0] == 0
    assert json.loads((data / "verify-docs.json").read_text())["clean"] is True
    assert not list(data.glob("verify-progress-*"))  # the checkpoint goes once a verify finishes


def test_verify_errors_exit_1(tmp_path, monkeypatch):
    write_config(tmp_path, monkeypatch, "nosuch:///legacy")
    code, output = run_cli("verify", "--silent")
    assert code == 1 and output.startswith("error:") and "nosuch" in output, output


class StopAfter:
    """A progress callback that interrupts a run after `batches` batches, as Ctrl-C would."""

    def __init__(self, batches: int) -> None:
        self.left = batches

    def __call__(self, progress) -> None:
        self.left -= 1
        if not self.left:
            raise KeyboardInterrupt


def test_verify_resumes_from_its_checkpoint_without_skipping_rows_that_moved(tmp_path):
    """Interrupted after 1200 of 2000 records, then rows before that point are deleted and
    rewritten (the BLOB table moves rewritten rows to the end): a resumed verify must still
    compare the rows that moved up across the old offset, and count nothing twice."""
    legacy = open_store(f"sqlite-blob://{tmp_path}/legacy.db", SPEC)
    target = open_store(f"sqlite-vec://{tmp_path}/target.db", SPEC)
    outbox = Outbox(tmp_path / "outbox.db", "docs")
    checkpoint = tmp_path / "verify-progress.db"
    try:
        records = make_records(2000, DIM, seed=1)
        legacy.upsert(records)
        target.upsert(records)
        target.delete(["doc-1250"])  # beyond the interruption, but it will move up across it
        with pytest.raises(KeyboardInterrupt):
            verify(legacy, target, outbox, batch_size=100, checkpoint=checkpoint, on_progress=StopAfter(12))
        gone = [r.id for r in records[:300]]
        for store in (legacy, target):
            store.delete(gone)
            store.upsert(records[300:400])  # rewritten: to the end of the scan
        result = verify(legacy, target, outbox, batch_size=100, checkpoint=checkpoint)
        assert result.counts == {"missing": 1, "extra": 0, "vector": 0, "metadata": 0}
        assert result.samples["missing"] == ["doc-1250"]
        # Each record compared once: both sides had compared doc-0..doc-1199 when interrupted
        # (the scans are read side by side); then legacy holds 1700 records and the target 1699,
        # of which doc-1200..doc-1999 (less doc-1250 in the target) are new to the resumed run.
        assert result.checked == {"primary": 1200 + 800, "secondary": 1200 + 799}
        assert not checkpoint.exists()
    finally:
        outbox.close()
        legacy.close()
        target.close()


@pytest.mark.parametrize("order", ["same", "shuffled"])
def test_verify_finds_each_difference_once_whatever_order_the_stores_scan_in(tmp_path, order):
    """Verify reads both scans side by side and looks up what does not meet its counterpart
    within a few batches: with the target in the legacy's order (shifted by the ids it lacks)
    or in another order entirely, every planted difference is found once and every record is
    compared once."""
    legacy = open_store(f"sqlite-blob://{tmp_path}/legacy.db", SPEC)
    target = open_store(f"sqlite-vec://{tmp_path}/target.db", SPEC)
    outbox = Outbox(tmp_path / "outbox.db", "docs")
    try:
        records = make_records(1000, DIM, seed=1)
        copies = {r.id: r for r in records}
        for i in ("doc-3", "doc-500", "doc-999"):
            del copies[i]
        for i in ("doc-10", "doc-600"):
            copies[i] = Record(i, copies[i].vector + 1, copies[i].metadata)
        for i in ("doc-20", "doc-700"):
            copies[i] = Record(i, copies[i].vector, {**copies[i].metadata, "year": 1})
        strays = make_records(2, DIM, seed=2, prefix="stray-")
        in_target = [*copies.values(), *strays]
        if order == "shuffled":
            random.Random(5).shuffle(in_target)
        for start in range(0, 1000, 100):
            legacy.upsert(records[start : start + 100])
            target.upsert(in_target[start : start + 100])
        result = verify(legacy, target, outbox, batch_size=50)
        assert result.counts == {"missing": 3, "extra": 2, "vector": 2, "metadata": 2}
        assert {kind: sorted(ids) for kind, ids in result.samples.items()} == {
            "missing": ["doc-3", "doc-500", "doc-999"],
            "extra": ["stray-0", "stray-1"],
            "vector": ["doc-10", "doc-600"],
            "metadata": ["doc-20", "doc-700"],
        }
        assert result.checked == {"primary": 1000, "secondary": 999}
    finally:
        outbox.close()
        legacy.close()
        target.close()
