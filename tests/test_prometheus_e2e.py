"""The dashboard and alert rules against a real Prometheus scraping a real dualvec process.

The checks in test_dashboards.py prove that every name a panel or rule uses is exported; these
prove that every expression, as Prometheus evaluates it over a live migration of two collections
at different stages (see migration_process.py: claims in dual with half the reads on sqlite-vec,
faq in target-primary with every read there; both shadowed, both with secondary outages
repaired by the replayer), returns numbers for each collection, and that `dualvec serve` really
serves /metrics.
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
from migration_process import FLAGS, SECONDARY
from test_dashboards import ALERTS, COLLECTION_VARIABLE, collection_variable, data_panels, grafana_regex

from dualvec.flags import FlagFile, FlagOverrides, write_flag_file

MIGRATION_PROCESS = Path(__file__).with_name("migration_process.py")
COLLECTIONS = sorted(FLAGS)
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


def data_by_collection(prometheus: Prometheus, expr: str) -> dict[str | None, int]:
    """How many finite values `expr` returns per collection label (None: series without one).
    NaN is what a ratio over no traffic gives: a panel shows it as no data."""
    found: dict[str | None, int] = {}
    for labels, value in prometheus.series(expr):
        if math.isfinite(value):
            found[labels.get("collection")] = found.get(labels.get("collection"), 0) + 1
    return found


def substitute(expr: str, collections: list[str]) -> str:
    """A dashboard query as Grafana sends it with `collections` picked in the variable."""
    query = expr.replace("$__rate_interval", RATE_INTERVAL).replace(
        COLLECTION_VARIABLE, grafana_regex(collections)
    )
    assert "$" not in query, f"a template variable this test does not know: {expr}"
    return query


@pytest.fixture(scope="module")
def dualvec_process(tmp_path_factory):
    data = tmp_path_factory.mktemp("dualvec")
    proc = subprocess.Popen(
        [sys.executable, str(MIGRATION_PROCESS), str(data), "120"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=data,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        url = proc.stdout.readline().strip() if ready else ""
        assert url.startswith("http://127.0.0.1:"), f"the migration process printed {url!r}"
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


def test_the_workload_moves_every_kind_of_metric_in_each_collection(prometheus):
    # Otherwise a rate() of 0 would make the checks below pass on a collection doing nothing.
    for expr in (
        'sum by (collection) (increase(dualvec_reads_total{store="target"}[1m]))',
        "sum by (collection) (increase(dualvec_shadow_comparisons_total[1m]))",
        "max by (collection) (max_over_time(dualvec_outbox_depth[1m]))",
        "max by (collection) (max_over_time(dualvec_outbox_oldest_age_seconds[1m]))",
        "sum by (collection) (increase(dualvec_repairs_total[1m]))",
    ):
        found = prometheus.by_collection(expr)
        assert sorted(found) == COLLECTIONS and all(v > 0 for v in found.values()), (expr, found)
    # Each collection's writes fail on its own secondary store, and only there.
    failures = prometheus.series("sum by (collection, store) (increase(dualvec_write_failures_total[1m]))")
    assert {(s["collection"], s["store"]) for s, v in failures if v > 0} == set(SECONDARY.items())
    # Each collection's reads follow its own flags: faq reads every key from sqlite-vec.
    legacy_reads = prometheus.by_collection(
        'sum by (collection) (increase(dualvec_reads_total{store="legacy"}[1m]))'
    )
    assert legacy_reads["claims"] > 0 and legacy_reads["faq"] == 0, legacy_reads


def test_each_collection_reports_its_own_flags(prometheus):
    phases = {labels["collection"]: labels["phase"] for labels, _ in prometheus.series("dualvec_phase == 1")}
    assert phases == {name: flags["phase"] for name, flags in FLAGS.items()}
    for flag in ("read_percent", "shadow_percent"):
        found = prometheus.by_collection(f"dualvec_flag_{flag}")
        assert found == {name: flags[flag] for name, flags in FLAGS.items()}, flag


def test_the_collection_variable_lists_every_collection(prometheus):
    # label_values(metric, label) is what Grafana asks Prometheus's label values API.
    metric, label = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", collection_variable()["query"]).groups()
    assert prometheus.api(f"label/{label}/values", **{"match[]": metric}) == COLLECTIONS


DASHBOARD_TARGETS = [(p["title"], t) for p in data_panels() for t in p["targets"]]


@pytest.mark.parametrize("collection", COLLECTIONS)
@pytest.mark.parametrize(
    "target", [pytest.param(t, id=f"{title}/{t['refId']}") for title, t in DASHBOARD_TARGETS]
)
def test_every_dashboard_query_returns_data_for_each_collection(prometheus, target, collection):
    found = data_by_collection(prometheus, substitute(target["expr"], [collection]))
    # Picking a collection shows that collection's data, and only it; build info, per process,
    # shows the processes serving it.
    per_collection = "{{collection}}" in target["legendFormat"]
    assert set(found) == ({collection} if per_collection else {None}), (collection, found)


@pytest.mark.parametrize(
    "target", [pytest.param(t, id=f"{title}/{t['refId']}") for title, t in DASHBOARD_TARGETS]
)
def test_with_all_collections_picked_each_line_names_its_collection(prometheus, target):
    found = data_by_collection(prometheus, substitute(target["expr"], COLLECTIONS))
    if "{{collection}}" in target["legendFormat"]:
        assert sorted(found) == COLLECTIONS, found
    else:  # lines of several collections under one legend would be indistinguishable
        assert set(found) == {None}, found


@pytest.mark.parametrize("alert", alert_names())
def test_every_alert_rule_evaluates_and_what_it_compares_returns_data_per_collection(prometheus, alert):
    rule = prometheus.rules()[alert]
    assert (rule["health"], rule.get("lastError", "")) == ("ok", ""), rule
    sides = compared_series(rule["query"])
    assert sides, rule["query"]
    for side in sides:
        found = data_by_collection(prometheus, side)
        # Every series names its collection: an alert fires for the collection in trouble.
        assert sorted(found) == COLLECTIONS, (side, found)


def test_the_rules_prometheus_loaded_are_the_alert_file(prometheus):
    assert sorted(prometheus.rules()) == sorted(alert_names())


def test_dualvec_serve_serves_every_collection_and_stops_on_sigterm(tmp_path):
    (tmp_path / "dualvec.toml").write_text(
        '[collections.docs]\ndim = 8\nmodel = "test-embedder"\n'
        f'[collections.notes]\ndim = 4\nmodel = "m"\nlegacy_url = "sqlite-blob://{tmp_path}/notes.db"\n'
    )
    write_flag_file(tmp_path / "flags.json", FlagFile(collections={"notes": FlagOverrides(phase="dual")}))
    env = {
        **os.environ,
        "DUALVEC_CONFIG": str(tmp_path / "dualvec.toml"),
        "DUALVEC_FLAG_FILE": str(tmp_path / "flags.json"),
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
    assert re.search(r'^dualvec_outbox_depth\{collection="docs"\} 0\.0$', exposition, re.MULTILINE), (
        exposition
    )
    for collection, phase in (("docs", "legacy"), ("notes", "dual")):
        line = rf'^dualvec_phase\{{collection="{collection}",phase="{phase}"\}} 1\.0$'
        assert re.search(line, exposition, re.MULTILINE), exposition
    assert code == 0


pytestmark = pytest.mark.slow
