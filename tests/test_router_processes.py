"""The router's durability and concurrency claims, proven with real processes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from helpers import assert_same_contents
from router_process import SPEC, open_router

from dualvec import open_store
from dualvec.cli.main import cli
from dualvec.flags import write_flag_file
from dualvec.settings import Flags, Phase
from dualvec.testing import make_records

SCRIPT = Path(__file__).with_name("router_process.py")


def spawn(mode: str, data: Path, seconds: float = 3600) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), mode, str(data), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def expected_states(data: Path) -> dict[str, set[int]]:
    """Per id, the states the stores may hold: the last acknowledged one, or an attempt made
    after it (a write in flight when the process died may or may not have landed)."""
    allowed: dict[str, set[int]] = {}
    events: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for log in data.glob("acks-*.log"):
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:  # a torn last line was never acknowledged
                events[parts[1]].append((parts[0], int(parts[2])))
    for record_id, history in events.items():
        acked = [v for kind, v in history if kind == "ack"]
        last_ack_at = max((i for i, (kind, _) in enumerate(history) if kind == "ack"), default=-1)
        states = {acked[-1]} if acked else {-1}
        states |= {v for kind, v in history[last_ack_at + 1 :] if kind == "try"}
        allowed[record_id] = states
    return allowed


def test_sigkill_during_writes_loses_nothing_acknowledged(tmp_path):
    rng = random.Random(7)
    for round_ in range(20):
        proc = spawn("writer", tmp_path)
        time.sleep(rng.uniform(0.05, 0.6))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        router = open_router(tmp_path)
        try:
            while router.outbox.stats().depth:
                assert router.replay().failed == 0
            legacy, target = router.stores["legacy"], router.stores["target"]
            assert_same_contents(legacy, target)
            held = {r.id: r.metadata["year"] for batch in legacy.scan(1000) for r in batch}
            for record_id, states in expected_states(tmp_path).items():
                assert held.get(record_id, -1) in states, f"round {round_}: {record_id}"
        finally:
            router.close()


def test_four_processes_on_one_sqlite_vec_file_never_see_database_locked(tmp_path):
    procs = [spawn("mixed", tmp_path, seconds=30) for _ in range(4)]
    results = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert all(r["ops"] > 50 for r in results)
    assert [r["errors"] for r in results] == [{}, {}, {}, {}]
    router = open_router(tmp_path)
    try:
        assert router.outbox.stats().depth == 0
        assert_same_contents(router.stores["legacy"], router.stores["target"])
    finally:
        router.close()


def test_replay_racing_writers_on_the_same_ids_converges(tmp_path):
    """Writers in two processes update and delete the same ids while replays run beside them;
    the target is made to fail for real (another process holds its lock) part of the time."""
    from helpers import sqlite_locked

    writers = [spawn("mixed", tmp_path, seconds=6) for _ in range(2)]
    stop_at = time.monotonic() + 6
    router = open_router(tmp_path)
    try:
        while time.monotonic() < stop_at:
            with sqlite_locked(tmp_path / "target.db"):
                time.sleep(0.3)
            router.replay()
        for proc in writers:
            proc.communicate(timeout=60)
        while router.outbox.stats().depth:
            assert router.replay().failed == 0
        assert_same_contents(router.stores["legacy"], router.stores["target"])
    finally:
        router.close()


def test_rollback_reaches_four_serving_processes_within_a_second(tmp_path, monkeypatch):
    from click.testing import CliRunner

    marker = make_records(1, 8, seed=4242, prefix="target-only-")[0]
    target = open_store(f"sqlite-vec://{tmp_path}/target.db", SPEC)
    target.upsert([marker])
    target.close()
    write_flag_file(tmp_path / "flags.json", Flags(phase=Phase.DUAL, read_percent=100))
    readers = [spawn("reader", tmp_path, seconds=60) for _ in range(4)]
    first = [proc.stdout.readline().split() for proc in readers]
    assert [served for _, served in first] == ["target"] * 4
    monkeypatch.setenv("DUALVEC_FLAG_FILE", str(tmp_path / "flags.json"))
    monkeypatch.setenv("DUALVEC_OUTBOX_PATH", str(tmp_path / "outbox.db"))
    result = CliRunner().invoke(cli, ["rollback"])
    returned = time.time()
    assert result.exit_code == 0, result.output
    outputs = [
        head + proc.communicate(timeout=60)[0].split() for head, proc in zip(first, readers, strict=True)
    ]
    lags = []
    for lines in outputs:
        changes = list(zip(map(float, lines[::2]), lines[1::2], strict=True))
        assert changes[-1][1] == "legacy", (outputs, returned)
        last_target = max(t for t, served in changes if served == "target")
        to_legacy = min(t for t, served in changes if served == "legacy" and t > last_target)
        lags.append(max(0.0, to_legacy - returned))
    print(f"rollback reached all 4 processes in {max(lags) * 1000:.0f} ms")
    assert max(lags) < 1.0


pytestmark = pytest.mark.slow
