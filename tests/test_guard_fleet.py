"""A fleet rolled back by `dualvec ramp --prometheus`: two real application processes (see
fleet_process.py) serve shadowed reads of two collections, a real Prometheus scrapes both, and
two ramps run at once, judged only through PromQL over the fleet.

docs' target answers every search 250 ms late (a real sleep in a wrapped store, the only fake
part); notes' target had half its vectors changed in its sqlite-vec file behind the routers'
back. Each ramp must roll its collection back for its own cause, and every process must see the
rollback within interval x failure_limit of seeing the step, plus one flag poll and a slack for
the ramp's PromQL queries and a busy machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fleet_process import COLLECTIONS, DELAY_SECONDS, DIM, WATCH_SECONDS, write_config
from helpers import Prometheus, free_port, prometheus_scraping, stop, wait_until
from service_process import dualvec_command

from dualvec import Record, open_store
from dualvec.cli.main import cli
from dualvec.settings import Settings, load_settings

pytestmark = pytest.mark.slow

FLEET_PROCESS = Path(__file__).with_name("fleet_process.py")
JOB = "fleet"
RECORDS = 200
INTERVAL_SECONDS = 4.0  # four scrapes a window, as for any rate()
FAILURE_LIMIT = 1
# How late a process sees a flag change: one poll of the flag file (fleet_process's config) and
# its own look every WATCH_SECONDS.
ONE_POLL_SECONDS = 0.1 + WATCH_SECONDS
# What the ramp adds to its interval before the rollback is in the flag file (its PromQL queries,
# the flag file's lock and write: 0.02-0.16 s measured), and how much later than one poll a
# process on a busy 2-core machine may get to read it (up to 0.45 s measured).
SLACK_SECONDS = 1.0
MIN_COMPARISONS = 20
# docs' target p99 reads ~0.5 s (its searches all in the 0.25-0.5 s bucket) against legacy's
# 7-135 ms on this busy machine: a ratio of 3.7-140. Two equal stores read 0.1-4.4 here, so the
# ratio alone could trip without the delay: the fleet's target p99 is checked against it too.
MAX_P99_RATIO = 2
GUARD = [
    f"failure_limit={FAILURE_LIMIT}",
    f"min_comparisons={MIN_COMPARISONS}",
    f"max_p99_ratio={MAX_P99_RATIO}",
    "on_no_data=fail",  # an interval without data fails at once instead of waiting for traffic
]


def vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def upsert(url: str, settings: Settings, name: str, records: list[Record]) -> None:
    store = open_store(url, settings.specs(name)[0])
    try:
        store.upsert(records)
    finally:
        store.close()


def dualvec(*args: str) -> None:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, (args, result.output)


def migrated(settings: Settings) -> None:
    """Both collections as after a backfill, as a user gets there: legacy's records copied into
    the targets, a clean verify, phase dual with every read shadowed and none on the target."""
    for name in COLLECTIONS:
        legacy_url, _ = settings.urls(name)
        upsert(
            legacy_url, settings, name, [Record(f"r{i}", v, {}) for i, v in enumerate(vectors(RECORDS, 1))]
        )
    dualvec("flags", "set", "phase=dual", "shadow_percent=100")
    dualvec("backfill", "--silent")
    dualvec("verify", "--silent")


def corrupt(settings: Settings, name: str) -> None:
    """Change every other vector in the target's file, as a bad write path would."""
    _, target_url = settings.urls(name)
    changed = vectors(RECORDS, seed=2)
    upsert(target_url, settings, name, [Record(f"r{i}", changed[i], {}) for i in range(0, RECORDS, 2)])


class FleetProcess:
    """fleet_process.py running, and every flag change it reported seeing."""

    def __init__(self, data: Path, number: int) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.log = data / f"fleet-{number}.log"
        with self.log.open("w") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, str(FLEET_PROCESS), str(data), str(port)],
                stdout=subprocess.PIPE,
                stderr=sink,
                text=True,
            )
        self.seen: list[dict] = []
        self._reader = threading.Thread(target=self._read)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.seen.append(json.loads(line))

    def changes(self, collection: str) -> list[tuple[str, float, float]]:
        """(phase, read_percent, when seen) of each change of `collection`'s flags."""
        return [
            (s["phase"], s["read_percent"], s["time"]) for s in self.seen if s["collection"] == collection
        ]

    def stop(self) -> int:
        code = stop(self.proc)
        self._reader.join(timeout=10)
        self.proc.stdout.close()
        return code


def ramp(collection: str, prometheus: Prometheus) -> subprocess.Popen:
    """`dualvec ramp --prometheus URL --job JOB ... --json` on the deployment's flag file."""
    guard = [arg for setting in GUARD for arg in ("--guard", setting)]
    return subprocess.Popen(
        [
            dualvec_command(), "ramp", "--collection", collection, "--steps", "50",
            "--interval", f"{INTERVAL_SECONDS:g}s", "--prometheus", prometheus.url, "--job", JOB,
            "--json", *guard,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def rolled_back(ramp: subprocess.Popen, cause: str, prometheus: Prometheus) -> dict:
    """The interval a finished ramp judged, once its --json says it rolled back for `cause`."""
    out, err = ramp.communicate(timeout=60)
    assert ramp.returncode == 4, err
    summary = json.loads(out)
    assert (summary["outcome"], summary["cause"], summary["phase"], summary["read_percent"]) == (
        "rolled_back",
        cause,
        "dual",
        0,
    ), err
    assert summary["source"] == f"Prometheus at {prometheus.url} (job {JOB})"
    [interval] = summary["intervals"]  # failure_limit 1: the first failed interval rolls back
    assert (interval["read_percent"], interval["action"]) == (50, "rollback")
    assert interval["checks"]["comparisons"]["value"] >= MIN_COMPARISONS, interval
    return interval


def test_a_slow_and_a_corrupted_target_are_rolled_back_in_every_process(tmp_path, monkeypatch):
    monkeypatch.setenv("DUALVEC_CONFIG", str(write_config(tmp_path)))
    settings = load_settings()
    migrated(settings)
    corrupt(settings, "notes")
    fleet = [FleetProcess(tmp_path, number) for number in range(2)]
    ramps: dict[str, subprocess.Popen] = {}
    try:
        for process in fleet:
            wait_until(process.proc, lambda p=process: len(p.seen) == len(COLLECTIONS), 30, "its flags")
        with prometheus_scraping(tmp_path / "prometheus", [p.url for p in fleet], JOB) as prometheus:
            ramps.update((name, ramp(name, prometheus)) for name in COLLECTIONS)  # at once
            docs = rolled_back(ramps["docs"], "p99_ratio", prometheus)
            notes = rolled_back(ramps["notes"], "mismatch_ratio", prometheus)
        for process in fleet:  # until each has seen both rollbacks
            wait_until(process.proc, lambda p=process: len(p.seen) >= 3 * len(COLLECTIONS), 10, "rollbacks")
    finally:
        for proc in ramps.values():  # a ramp left running by a failed assertion
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        codes = [process.stop() for process in fleet]
    assert codes == [0, 0], [p.log.read_text()[-3000:] for p in fleet]
    assert docs["checks"]["mismatch_ratio"]["value"] == 0  # slow, not wrong
    assert docs["checks"]["p99_ratio"]["value"] > MAX_P99_RATIO
    assert docs["target_p99_seconds"] >= DELAY_SECONDS  # the fleet's p99, as Prometheus sums it
    assert notes["checks"]["mismatch_ratio"]["value"] > 0.5  # half the vectors differ

    # The ramp writes the rollback one interval after the step (failure_limit 1): each process
    # sees it that long after the step, give or take one poll and the slack.
    expected = INTERVAL_SECONDS * FAILURE_LIMIT
    delays = {}
    for index, process in enumerate(fleet):
        for name in COLLECTIONS:
            changes = process.changes(name)
            assert [(phase, percent) for phase, percent, _ in changes] == [
                ("dual", 0),
                ("dual", 50),
                ("dual", 0),
            ], (index, name, changes)
            delays[index, name] = changes[2][2] - changes[1][2]
    print(
        "judged:",
        {
            name: {
                **{c: round(interval["checks"][c]["value"], 3) for c in ("comparisons", "p99_ratio")},
                **{p: round(interval[f"{p}_p99_seconds"], 4) for p in ("target", "legacy")},
            }
            for name, interval in (("docs", docs), ("notes", notes))
        },
        "seconds from seeing read_percent 50 to seeing the rollback:",
        {key: round(delay, 3) for key, delay in delays.items()},
    )
    assert all(abs(delay - expected) <= ONE_POLL_SECONDS + SLACK_SECONDS for delay in delays.values()), delays
