"""The dashboard and alert rules against a real Prometheus scraping a real dualvec process.

The checks in test_dashboards.py prove that every name a panel or rule uses is exported; these
prove that every expression, as Prometheus evaluates it over a live migration (dual writes,
half the reads on sqlite-vec, every read shadowed, sqlite-vec outages repaired by the
replayer), returns numbers, and that `dualvec serve` really serves /metrics.
"""

from __future__ import annotations

import json
import math
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import require
from test_dashboards import ALERTS, data_panels

ROUTER_PROCESS = Path(__file__).with_name("router_process.py")
SCRAPES = 16  # one a second: enough for every [15s] window and for deriv()
RATE_INTERVAL = "15s"  # what $__rate_interval stands for in the queries below
TOP_LEVEL_LOGIC = re.compile(r"\b(?:and|or|unless)\b")
TOP_LEVEL_COMPARISON = re.compile(r"(?:==|!=|>=|<=|>|<)(?:\s*bool\b)?")


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


def top_level_split(expr: str, operator: re.Pattern[str]) -> list[str]:
    """`expr` cut at each `operator` outside parentheses, brackets and braces."""
    depth = 0
    masked = []
    for char in expr:
        depth += char in "([{"
        masked.append(" " if depth else char)
        depth -= char in ")]}"
    cuts = [m.span() for m in operator.finditer("".join(masked))]
    starts = [0] + [end for _, end in cuts]
    ends = [start for start, _ in cuts] + [len(expr)]
    return [expr[a:b].strip() for a, b in zip(starts, ends, strict=True)]


def compared_series(expr: str) -> list[str]:
    """What an alert compares: both sides of every top-level comparison in every and/or/unless
    branch, thresholds (no dualvec_ metric) left out."""
    sides = [
        s
        for part in top_level_split(expr, TOP_LEVEL_LOGIC)
        for s in top_level_split(part, TOP_LEVEL_COMPARISON)
    ]
    return [s for s in sides if "dualvec_" in s]


def alert_names() -> list[str]:
    return re.findall(r"^\s*- alert:\s*(\w+)", ALERTS.read_text(), re.MULTILINE)


class Prometheus:
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

    def query(self, expr: str) -> list[float]:
        """Every value an instant query returns now."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return [float(sample["value"][1]) for sample in data["result"]]

    def rules(self) -> dict[str, dict]:
        return {rule["name"]: rule for group in self.api("rules")["groups"] for rule in group["rules"]}


def assert_returns_data(prometheus: Prometheus, expr: str) -> None:
    values = prometheus.query(expr)
    # NaN is what a ratio over no traffic gives: a panel shows it as no data.
    assert any(math.isfinite(v) for v in values), f"{expr} returned {values}"


@pytest.fixture(scope="module")
def dualvec_process(tmp_path_factory):
    data = tmp_path_factory.mktemp("dualvec")
    proc = subprocess.Popen(
        [sys.executable, str(ROUTER_PROCESS), "serve", str(data), "120"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        url = proc.stdout.readline().strip() if ready else ""
        assert url.startswith("http://127.0.0.1:"), f"the router process printed {url!r}"
        yield url
    finally:
        stop(proc)
        proc.stdout.close()


@pytest.fixture(scope="module")
def prometheus(request, tmp_path_factory):
    require(shutil.which("prometheus") is not None, "prometheus")
    scraped = urllib.parse.urlsplit(request.getfixturevalue("dualvec_process"))
    home = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {
                "job_name": "dualvec",
                "metrics_path": scraped.path,
                "static_configs": [{"targets": [scraped.netloc]}],
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
        scrapes = server.query("count_over_time(up[1m])")
        evaluated = all(rule["health"] != "unknown" for rule in server.rules().values())
        return bool(scrapes) and scrapes[0] >= SCRAPES and evaluated

    try:
        wait_until(proc, lambda: http_get(f"{server.url}/-/ready") is not None, 30, "/-/ready")
        wait_until(proc, settled, 60, f"{SCRAPES} scrapes and evaluated rules")
        assert server.query("up") == [1.0]
        yield server
    finally:
        stop(proc)


def test_the_workload_moves_every_kind_of_metric(prometheus):
    # Otherwise a rate() of 0 would make the checks below pass on a process doing nothing.
    for expr in (
        'sum(increase(dualvec_reads_total{store="legacy"}[1m]))',
        'sum(increase(dualvec_reads_total{store="target"}[1m]))',
        "sum(increase(dualvec_shadow_comparisons_total[1m]))",
        'sum(increase(dualvec_write_failures_total{store="target"}[1m]))',
        "max_over_time(dualvec_outbox_depth[1m])",
        "max_over_time(dualvec_outbox_oldest_age_seconds[1m])",
        "sum(increase(dualvec_repairs_total[1m]))",
    ):
        values = prometheus.query(expr)
        assert values and values[0] > 0, (expr, values)
    assert prometheus.query('dualvec_phase{phase="dual"}') == [1.0]
    assert prometheus.query("dualvec_flag_read_percent") == [50.0]
    assert prometheus.query("dualvec_flag_shadow_percent") == [100.0]


@pytest.mark.parametrize(
    "expr",
    [pytest.param(t["expr"], id=f"{p['title']}/{t['refId']}") for p in data_panels() for t in p["targets"]],
)
def test_every_dashboard_query_returns_data(prometheus, expr):
    query = expr.replace("$__rate_interval", RATE_INTERVAL)
    assert "$" not in query, f"a template variable this test does not know: {expr}"
    assert_returns_data(prometheus, query)


@pytest.mark.parametrize("alert", alert_names())
def test_every_alert_rule_evaluates_and_what_it_compares_returns_data(prometheus, alert):
    rule = prometheus.rules()[alert]
    assert (rule["health"], rule.get("lastError", "")) == ("ok", ""), rule
    sides = compared_series(rule["query"])
    assert sides, rule["query"]
    for side in sides:
        assert_returns_data(prometheus, side)


def test_the_rules_prometheus_loaded_are_the_alert_file(prometheus):
    assert sorted(prometheus.rules()) == sorted(alert_names())


def test_dualvec_serve_serves_metrics_and_stops_on_sigterm(tmp_path):
    (tmp_path / "dualvec.toml").write_text('[collections.docs]\ndim = 8\nmodel = "test-embedder"\n')
    env = {
        **os.environ,
        "DUALVEC_CONFIG": str(tmp_path / "dualvec.toml"),
        "DUALVEC_COLLECTION": "docs",
        "DUALVEC_LEGACY_URL": f"sqlite-blob://{tmp_path}/legacy.db",
        "DUALVEC_TARGET_URL": f"sqlite-vec://{tmp_path}/target.db",
    }
    port = free_port()
    dualvec = Path(sys.executable).with_name("dualvec")  # the console script; no __main__ module
    proc = subprocess.Popen([str(dualvec), "serve", "--port", str(port)], cwd=tmp_path, env=env)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        wait_until(proc, lambda: http_get(url) is not None, 30, url)
        exposition = http_get(url).decode()
    finally:
        code = stop(proc)
    assert re.search(r"^dualvec_outbox_depth 0\.0$", exposition, re.MULTILINE), exposition
    assert re.search(r'^dualvec_phase\{phase="legacy"\} 1\.0$', exposition, re.MULTILINE), exposition
    assert code == 0


pytestmark = pytest.mark.slow
