"""The dashboard and alert rules against a real Prometheus scraping a real dualvec process.

The checks in test_dashboards.py prove that every name a panel or rule uses is exported; these
prove that every expression, as Prometheus evaluates it over a live migration of two collections
at different stages (see migration_process.py: claims in dual with half the reads on sqlite-vec,
faq in target-primary with every read there; both shadowed, both with secondary outages
repaired by the replayer), returns numbers for each collection, and that `dualvec serve` really
serves /metrics.
"""

from __future__ import annotations

import math
import os
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import Prometheus, free_port, http_get, prometheus_scraping, stop, wait_until
from migration_process import FLAGS, SECONDARY
from test_dashboards import ALERTS, COLLECTION_VARIABLE, collection_variable, data_panels, grafana_regex

from dualvec.flags import FlagFile, FlagOverrides, write_flag_file

MIGRATION_PROCESS = Path(__file__).with_name("migration_process.py")
COLLECTIONS = sorted(FLAGS)
SCRAPES = 16  # one a second: enough for every [15s] window and for deriv()
RATE_INTERVAL = "15s"  # what $__rate_interval stands for in the queries below
TOP_LEVEL_LOGIC = re.compile(r"\b(?:and|or|unless)\b")
TOP_LEVEL_COMPARISON = re.compile(r"(?:==|!=|>=|<=|>|<)(?:\s*bool\b)?")


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
    with prometheus_scraping(
        tmp_path_factory.mktemp("prometheus"),
        [request.getfixturevalue("dualvec_process")],
        "dualvec",
        scrapes=SCRAPES,
        rule_files=[ALERTS],
    ) as server:
        yield server


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
