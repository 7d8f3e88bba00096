"""Test helpers: a comparison of what two stores hold, a store made slow, subprocess handling, a
real Prometheus scraping real processes (and the real lock fault, re-exported)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from conftest import require

from dualvec.distance import same_vector
from dualvec.testing.faults import sqlite_locked

__all__ = [
    "Prometheus",
    "SlowSearches",
    "assert_same_contents",
    "contents",
    "docs",
    "free_port",
    "http_get",
    "migrate_through_cli",
    "prometheus_scraping",
    "sqlite_locked",
    "stop",
    "wait_until",
    "write_config",
]


def docs(output: str) -> dict:
    """The `docs` collection's entry in a command's `--json` report."""
    return json.loads(output)["collections"]["docs"]


def contents(store) -> dict[str, tuple[np.ndarray, dict]]:
    """Every record of a store: its vector and its metadata."""
    return {
        r.id: (np.asarray(r.vector, dtype=np.float32), r.metadata) for batch in store.scan(500) for r in batch
    }


def assert_same_contents(a, b) -> None:
    """Both stores hold the same ids, metadata and vectors (in cosine collections, directions)."""
    left, right = contents(a), contents(b)
    assert left.keys() == right.keys(), (
        f"only in first: {sorted(left.keys() - right.keys())[:5]}, "
        f"only in second: {sorted(right.keys() - left.keys())[:5]}"
    )
    differing = [
        i
        for i in left
        if left[i][1] != right[i][1] or not same_vector(left[i][0], right[i][0], a.spec.metric, 1e-5)
    ]
    assert not differing, f"{len(differing)} records differ, e.g. {differing[:5]}"


CONFIG = """
legacy_url = "{legacy_url}"
target_url = "{target_url}"
collection = "docs"
phase = "{phase}"
flag_file = "{data}/flags.json"
outbox_path = "{data}/outbox.db"
replay_interval_seconds = 3600

[collections.docs]
dim = {dim}
metric = "cosine"
model = "test-embedder"

[collections.docs.fields]
lang = {{ type = "str" }}
year = {{ type = "int" }}
score = {{ type = "float" }}
public = {{ type = "bool" }}
title = {{ type = "str", filterable = false }}
"""


def write_config(
    tmp_path: Path, monkeypatch, legacy_url: str, target_url: str | None = None, phase: str = "legacy"
) -> Path:
    """A TOML config for the CLI (and `load_settings`) naming these stores; state in tmp_path/.dualvec."""
    path = tmp_path / "dualvec.toml"
    path.write_text(
        CONFIG.format(
            legacy_url=legacy_url,
            target_url=target_url or f"sqlite-vec://{tmp_path}/target.db",
            data=tmp_path / ".dualvec",
            dim=8,
            phase=phase,
        )
    )
    monkeypatch.setenv("DUALVEC_CONFIG", str(path))
    return tmp_path / ".dualvec"


LAYOUT_CONFIG = """
legacy_url = "{legacy_url}"
target_url = "sqlite-vec://{data}/target.db"
collection = "{name}"
flag_file = "{data}/flags.json"
outbox_path = "{data}/outbox.db"
replay_interval_seconds = 3600

[collections.{name}]
{collection}
"""


def migrate_through_cli(tmp_path: Path, monkeypatch, legacy_url: str, name: str, collection: str) -> dict:
    """Run a whole migration of an application's own store from the command line, as a user
    would: config naming the layout (`collection` is the body of its TOML table), `flags set
    phase=dual`, `backfill`, then `verify`. Returns verify's JSON report (clean asserted)."""
    from dualvec.cli.main import cli

    data = tmp_path / ".dualvec"
    path = tmp_path / "dualvec.toml"
    path.write_text(LAYOUT_CONFIG.format(legacy_url=legacy_url, data=data, name=name, collection=collection))
    monkeypatch.setenv("DUALVEC_CONFIG", str(path))
    runner = CliRunner()
    for command in (
        ["flags", "set", "--force", "phase=dual"],
        ["backfill", "--silent", "--json"],
        ["verify", "--silent", "--json"],
    ):
        result = runner.invoke(cli, command)
        assert result.exit_code == 0, (command, result.output)
    report = json.loads(result.stdout)
    assert report["clean"], report
    return report


class SlowSearches:
    """A real store whose searches take `delay` seconds longer, as a loaded server's do: what
    lets a test place writes between a served read and its shadow, and its re-check, and what
    stands in for a target that became slow."""

    def __init__(self, store, delay: float) -> None:
        self._store = store
        self.delay = delay

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def search(self, *args, **kwargs):
        time.sleep(self.delay)
        return self._store.search(*args, **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(proc: subprocess.Popen, check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check` while `proc` runs; fail as soon as it exits or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None, f"exited with {proc.returncode} while waiting for {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.2)


def http_get(url: str) -> bytes | None:
    """The body of a 200 answer; None while the server is not up or not ready yet."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read()
    except (urllib.error.URLError, ConnectionError):
        return None


def stop(proc: subprocess.Popen) -> int:
    """SIGTERM, then SIGKILL if it does not exit within 30 s; the exit code."""
    proc.terminate()
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=30)


class Prometheus:
    """A running Prometheus server, queried through its HTTP API."""

    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log

    def api(self, path: str, **params: str) -> dict:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as exc:  # a bad query: the JSON body says why
            answer = json.load(exc)
        assert answer["status"] == "success", (answer, self.log.read_text()[-3000:])
        return answer["data"]

    def series(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """Every series an instant query returns now: its labels and value."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return [(sample["metric"], float(sample["value"][1])) for sample in data["result"]]

    def query(self, expr: str) -> list[float]:
        """Every value an instant query returns now."""
        return [value for _, value in self.series(expr)]

    def by_collection(self, expr: str) -> dict[str, float]:
        """The value of each collection's series (one each)."""
        found: dict[str, float] = {}
        for labels, value in self.series(expr):
            assert labels["collection"] not in found, (expr, labels)
            found[labels["collection"]] = value
        return found

    def rules(self) -> dict[str, dict]:
        return {rule["name"]: rule for group in self.api("rules")["groups"] for rule in group["rules"]}


@contextmanager
def prometheus_scraping(
    home: Path,
    targets: Sequence[str],
    job: str,
    *,
    scrapes: int = 3,
    rule_files: Sequence[Path] = (),
    timeout: float = 60,
) -> Iterator[Prometheus]:
    """A real Prometheus scraping every `targets` URL (each a process's /metrics) once a second
    under one `job`, its data and log in `home`; yielded once it is ready, has scraped every
    target `scrapes` times and found each up, and has evaluated every rule of `rule_files`
    (evaluated each second); stopped on exit. Skipped without the `prometheus` package, failed
    under CI=true."""
    require(shutil.which("prometheus") is not None, "prometheus")
    scraped = [urllib.parse.urlsplit(url) for url in targets]
    paths = {target.path or "/metrics" for target in scraped}
    assert len(paths) == 1, f"one job scrapes one metrics path, not {sorted(paths)}"
    home.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {
                "job_name": job,
                "metrics_path": paths.pop(),
                "static_configs": [{"targets": [target.netloc for target in scraped]}],
            }
        ],
    }
    (home / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    address = f"127.0.0.1:{free_port()}"
    log = home / "prometheus.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={home / 'prometheus.yml'}",
                f"--storage.tsdb.path={home / 'data'}",
                f"--web.listen-address={address}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Prometheus(f"http://{address}", log)

    def settled() -> bool:
        counts = server.query(f'count_over_time(up{{job="{job}"}}[1m])')
        up = server.query(f'up{{job="{job}"}}')
        evaluated = all(rule["health"] != "unknown" for rule in server.rules().values())
        every_target = len(counts) == len(targets) and min(counts) >= scrapes
        return every_target and up == [1.0] * len(targets) and evaluated

    try:
        wait_until(proc, lambda: http_get(f"{server.url}/-/ready") is not None, timeout, "/-/ready")
        wait_until(proc, settled, timeout, f"{scrapes} scrapes of every target up and evaluated rules")
        yield server
    finally:
        stop(proc)
