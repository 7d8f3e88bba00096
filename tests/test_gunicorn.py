"""A real gunicorn with --preload and three workers, all sharing one Migration built by the master
at import time (tests/gunicorn_app.py) over a sqlite-blob legacy file and a sqlite-vec target:
every worker writes and searches, a `dualvec rollback` reaches every worker within a second, the
multiprocess /metrics adds up to the requests made, a worker killed with SIGKILL is replaced by a
fresh fork that works and whose dead predecessor leaves the live gauges, and SIGTERM stops it
all cleanly. Nothing says "database is locked"."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from dualvec import open_store
from dualvec.cli.main import cli
from dualvec.settings import load_settings

pytest.importorskip("gunicorn")

WORKERS = 3
CONFIG = """
legacy_url = "sqlite-blob://{tmp}/legacy.db"
target_url = "sqlite-vec://{tmp}/target.db"
collection = "docs"
phase = "dual"
read_percent = 50
shadow_percent = 100
flag_file = "{tmp}/flags.json"
outbox_path = "{tmp}/outbox.db"
replay_interval_seconds = 0.5

[shadow]
mismatch_log = "{tmp}/mismatches.jsonl"

[collections.docs]
dim = 8
model = "m"
metric = "l2"
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    def __init__(self, port: int) -> None:
        self.port = port

    def get(self, path: str) -> tuple[int, bytes]:
        """One request on a connection of its own, so that any worker may take it."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def answer(self, path: str) -> dict:
        status, body = self.get(path)
        assert status == 200, body
        return json.loads(body)

    def metrics(self) -> dict[tuple[str, frozenset], float]:
        status, body = self.get("/metrics")
        assert status == 200
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples
        }


def total(metrics: dict, name: str, **labels: str) -> float:
    """The sum of `name`'s samples carrying `labels` (over the labels not named)."""
    wanted = set(labels.items())
    return sum(value for (sample, got), value in metrics.items() if sample == name and wanted <= got)


@pytest.fixture
def gunicorn(tmp_path, monkeypatch):
    config = tmp_path / "dualvec.toml"
    config.write_text(CONFIG.format(tmp=tmp_path))
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    monkeypatch.setenv("DUALVEC_CONFIG", str(config))
    port = free_port()
    env = {
        **os.environ,
        "DUALVEC_CONFIG": str(config),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "HOME": str(tmp_path),  # gunicorn's control socket goes under $HOME/.gunicorn
    }
    log = (tmp_path / "gunicorn.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:dualvec.gunicorn",
            "--preload",
            "--workers",
            str(WORKERS),
            "--worker-class",
            "gthread",
            "--threads",
            "2",
            "--graceful-timeout",
            "10",
            "--bind",
            f"127.0.0.1:{port}",
            "--pythonpath",
            str(Path(__file__).parent),
            "gunicorn_app:app",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Server(port)
    server.process = process
    server.log = tmp_path / "gunicorn.log"
    server.metrics_dir = metrics_dir
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, server.log.read_text()
            try:
                server.get("/flags")
                break
            except OSError:
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


def until_every_worker(server: Server, paths, workers: set[int], limit: int = 600) -> list[dict]:
    """Send `paths` (one after another, round and round) until each of `workers` answered one."""
    answers, seen = [], set()
    for i in range(limit):
        answer = server.answer(paths(i))
        answers.append(answer)
        seen.add(answer["pid"])
        if workers <= seen:
            return answers
    raise AssertionError(f"workers {sorted(workers - seen)} never answered in {limit} requests")


@pytest.mark.slow
def test_one_migration_preloaded_into_three_gunicorn_workers(gunicorn, tmp_path):
    server = gunicorn
    # Every worker is up: each has answered.
    workers: set[int] = set()
    deadline = time.monotonic() + 30
    while len(workers) < WORKERS:
        assert time.monotonic() < deadline, f"only workers {workers} answered"
        workers.add(server.answer("/flags")["pid"])

    # Writes and searches from every worker.
    upserts = until_every_worker(server, lambda i: f"/upsert?n={i}", workers)
    written = len(upserts)
    searches = until_every_worker(server, lambda i: f"/search?n={i % written}", workers)
    for i, answer in enumerate(searches):
        assert answer["ids"][0] == f"doc-{i % written}"
    settings = load_settings()
    for url in settings.urls("docs"):
        with open_store(url, settings.specs("docs")[0]) as store:
            assert store.count() == written

    # A rollback reaches every worker within a second.
    assert {a["read_percent"] for a in searches} == {50.0}
    result = CliRunner().invoke(cli, ["rollback"])
    assert result.exit_code == 0, result.output
    rolled_back_at = time.time()
    last_old: dict[int, float] = {}
    while time.time() - rolled_back_at < 1.5:
        answer = server.answer("/flags")
        if answer["read_percent"] != 0:
            last_old[answer["pid"]] = time.time() - rolled_back_at
    assert not last_old or max(last_old.values()) < 1.0, last_old
    assert all(a["read_percent"] == 0 for a in until_every_worker(server, lambda i: "/flags", workers))

    # One exposition, summed over the master and every worker.
    metrics = server.metrics()
    made = len(searches) + 1  # and the app's warm-up search in the master
    assert total(metrics, "dualvec_reads_total", collection="docs") == made
    upserts_timed = total(
        metrics, "dualvec_operation_duration_seconds_count", collection="docs", op="upsert", role="primary"
    )
    assert upserts_timed == written
    assert total(metrics, "dualvec_flag_read_percent", collection="docs") == 0
    compared = total(metrics, "dualvec_shadow_comparisons_total", collection="docs")
    assert compared > 0
    assert total(metrics, "dualvec_shadow_comparisons_total", collection="docs", outcome="mismatch") == 0

    # A worker killed outright: the master forks a new one (with its own threads running), the
    # dead one's live gauges leave the sums, and what it counted stays counted.
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while any(f"_{victim}.db" in p.name and "live" in p.name for p in server.metrics_dir.iterdir()):
        assert time.monotonic() < deadline, "child_exit did not mark the killed worker dead"
        time.sleep(0.1)
    replacement = set()
    more = 0
    while not replacement:
        assert time.monotonic() < deadline, "no replacement worker answered"
        answer = server.answer(f"/upsert?n={written + more}")
        more += 1
        if answer["pid"] not in workers:
            replacement.add(answer["pid"])
            assert answer["read_percent"] == 0
    hits = Counter()
    while not hits[next(iter(replacement))]:
        assert time.monotonic() < deadline, "the replacement worker never searched"
        answer = server.answer(f"/search?n={written}")
        assert answer["ids"][0] == f"doc-{written}"
        hits[answer["pid"]] += 1
    metrics = server.metrics()
    assert total(metrics, "dualvec_reads_total", collection="docs") == made + sum(hits.values())
    assert (
        total(
            metrics,
            "dualvec_operation_duration_seconds_count",
            collection="docs",
            op="upsert",
            role="primary",
        )
        == written + more
    )
    assert total(metrics, "dualvec_flag_read_percent", collection="docs") == 0

    # SIGTERM: a clean stop.
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=30) == 0
    log = server.log.read_text()
    assert "database is locked" not in log
    assert "Traceback" not in log, log
    assert "after_fork_failed" not in log
