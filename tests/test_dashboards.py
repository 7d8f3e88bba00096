"""The dashboard and alert rules: checked by Prometheus's own tool, and against what dualvec
really exports, so that a renamed metric or a mistyped label value cannot leave a panel or an
alert silently empty."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import require
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dualvec.metrics import DualvecMetrics

DASHBOARDS = Path(__file__).resolve().parent.parent / "dashboards"
DASHBOARD = DASHBOARDS / "dualvec.json"
ALERTS = DASHBOARDS / "alerts.yml"
ALERTS_TEST = DASHBOARDS / "alerts_test.yml"

SELECTOR = re.compile(r"\b(dualvec_[a-zA-Z0-9_]+)\s*(?:\{([^}]*)\})?")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
TARGET_LABELS = {"job", "instance"}  # added by Prometheus when it scrapes


def touched_metrics() -> DualvecMetrics:
    """Every method called, so that every metric and label value has a sample."""
    m = DualvecMetrics(CollectorRegistry())
    m.observe("target", "search", "primary", 0.003)
    with m.time("legacy", "upsert", "secondary"):
        pass
    m.served("target")
    m.shadow_compared(mismatch=True, recall=0.8, max_distance_delta=2e-4)
    m.shadow_dropped("timeout")
    m.compare_error()
    m.write_failed("target", "upsert")
    m.set_outbox(3, 12.5)
    m.repaired("delete", 2)
    m.set_flags("dual", 10, 100)
    return m


@pytest.fixture(scope="module")
def exposition() -> str:
    return generate_latest(touched_metrics().registry).decode()


@pytest.fixture(scope="module")
def exported(exposition: str) -> dict[str, dict[str, set[str]]]:
    """Sample name -> label name -> the values seen."""
    samples: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels = samples.setdefault(sample.name, {})
            for name, value in sample.labels.items():
                labels.setdefault(name, set()).add(value)
    return samples


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def data_panels() -> list[dict]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def dashboard_expressions() -> list[str]:
    return [t["expr"] for p in data_panels() for t in p["targets"]]


def rule_files_text() -> str:
    """The rules and their tests, comments dropped (input series must be real names too)."""
    lines = (ALERTS.read_text() + ALERTS_TEST.read_text()).splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


SOURCES = {
    "dashboard": lambda: "\n".join(dashboard_expressions()),
    "alert rules and tests": rule_files_text,
}


# Prometheus's own tooling


def test_promtool_checks_the_rules():
    require(shutil.which("promtool") is not None, "prometheus")
    result = subprocess.run(
        ["promtool", "check", "rules", str(ALERTS)], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_every_alert():
    require(shutil.which("promtool") is not None, "prometheus")
    result = subprocess.run(
        ["promtool", "test", "rules", str(ALERTS_TEST)], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = set(re.findall(r"^\s*- alert:\s*(\w+)", ALERTS.read_text(), re.MULTILINE))
    tested = set(re.findall(r"^\s*alertname:\s*(\w+)", ALERTS_TEST.read_text(), re.MULTILINE))
    assert alerts == tested


def test_promtool_accepts_the_exposition(exposition):
    require(shutil.which("promtool") is not None, "prometheus")
    result = subprocess.run(
        ["promtool", "check", "metrics"], check=False, input=exposition, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""  # no lint complaint either


# names and labels really exported


@pytest.mark.parametrize("source", SOURCES)
def test_every_metric_named_is_exported(source, exported):
    names = {m.group(1) for m in SELECTOR.finditer(SOURCES[source]())}
    assert names, "no dualvec_ metric found: the parsing is broken"
    # Sample names carry their suffixes (_total, _bucket, _count, _sum), exactly as PromQL
    # must name them: a bare histogram name would select nothing.
    assert sorted(names - set(exported)) == []


@pytest.mark.parametrize("source", SOURCES)
def test_every_label_matcher_can_match(source, exported):
    problems = []
    for selector in SELECTOR.finditer(SOURCES[source]()):
        name, matchers = selector.group(1), selector.group(2) or ""
        labels = exported.get(name, {})
        for label, op, value in MATCHER.findall(matchers):
            if label in TARGET_LABELS:
                continue
            if label not in labels:
                problems.append(f"{name}: no label {label!r}")
            elif op == "=" and value not in labels[label]:
                problems.append(f"{name}: {label}={value!r} never exported; values {sorted(labels[label])}")
            elif op == "=~" and not any(re.fullmatch(value, v) for v in labels[label]):
                problems.append(f"{name}: {label}=~{value!r} matches nothing")
    assert problems == []


def test_every_metric_is_on_the_dashboard(exported):
    # Nothing exported that an operator cannot see.
    families = {re.sub(r"_(total|bucket|count|sum|created)$", "", n) for n in exported}
    named = {m.group(1) for e in dashboard_expressions() for m in SELECTOR.finditer(e)}
    shown = {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in named}
    assert sorted(families - shown) == []


# the dashboard's shape


def test_dashboard_picks_its_datasource_by_variable_and_has_no_inputs():
    d = dashboard()
    assert "__inputs" not in d
    (variable,) = [v for v in d["templating"]["list"] if v["name"] == "datasource"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    for panel in data_panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_every_panel_has_a_unit_and_a_description():
    for panel in data_panels():
        assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]
        assert len(panel.get("description", "")) > 20, panel["title"]


def test_rates_use_the_rate_interval():
    for expr in dashboard_expressions():
        for window in re.findall(r"\[([^\]]+)\]", expr):
            assert window == "$__rate_interval", expr


def test_panels_have_unique_ids_and_do_not_overlap():
    panels = dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & area, p["title"]
        cells |= area


def test_the_dashboard_covers_what_an_operator_watches():
    exprs = "\n".join(dashboard_expressions())
    for needed in (
        "dualvec_reads_total",  # read split
        "histogram_quantile(0.5,",  # p50 ...
        "histogram_quantile(0.95,",
        "histogram_quantile(0.99,",  # ... and p99 latency
        'outcome="mismatch"',  # mismatch ratio
        "dualvec_shadow_recall_bucket",
        "dualvec_shadow_distance_delta_bucket",
        "dualvec_shadow_dropped_total",
        "dualvec_write_failures_total",
        "dualvec_outbox_depth",
        "dualvec_outbox_oldest_age_seconds",
        "dualvec_repairs_total",
        "dualvec_phase",
        "dualvec_flag_read_percent",
    ):
        assert needed in exprs, needed
