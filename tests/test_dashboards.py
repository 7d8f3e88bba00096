"""The dashboard and alert rules: checked by Prometheus's own tool, and against what dualvec
really exports, so that a renamed metric or a mistyped label value cannot leave a panel or an
alert silently empty; and checked to keep collections apart (every panel filtered by the
`collection` variable and drawn per collection, every rule aggregated by job and collection)."""

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
# An aggregation and the labels it keeps, `by (...)` written before its argument.
AGGREGATION = re.compile(
    r"\b(?:sum|min|max|count|avg|group|stddev|stdvar|topk|bottomk|quantile)\s*"
    r"(?:(by|without)\s*\(([^)]*)\)\s*)?\("
)


def kept_labels(aggregation: re.Match[str]) -> set[str]:
    """The labels an aggregation keeps; none known for `without` or no clause at all."""
    keyword, labels = aggregation.group(1), aggregation.group(2) or ""
    return {label.strip() for label in labels.split(",")} if keyword == "by" else set()


TARGET_LABELS = {"job", "instance"}  # added by Prometheus when it scrapes
COLLECTIONS = ("claims", "faq")  # what touched_metrics declares
COLLECTION_VARIABLE = "$collection"
COLLECTION_FILTER = 'collection=~"$collection"'
PER_PROCESS = {"dualvec_build_info"}  # the only metric without a collection label


def touched_metrics() -> DualvecMetrics:
    """Every method called for two collections, so that every metric and label value has a sample."""
    families = DualvecMetrics(CollectorRegistry())
    for name in COLLECTIONS:
        m = families.collection(name)
        m.observe("target", "search", "primary", 0.003)
        with m.time("legacy", "upsert", "secondary"):
            pass
        m.served("target")
        m.shadow_compared("mismatch", 0.8, 2e-4)
        m.shadow_dropped("timeout")
        m.compare_error()
        m.write_failed("target", "upsert")
        m.set_outbox(3, 12.5)
        m.repaired("delete", 2)
        m.set_flags("dual", 10, 100)
        m.read_failed("target", "search")
        m.guard_checked("mismatch_ratio", "fail", 0.2, 0.01)
        m.guard_rolled_back("mismatch_ratio")
    return families


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


def collection_variable() -> dict:
    (variable,) = [v for v in dashboard()["templating"]["list"] if v["name"] == "collection"]
    return variable


def grafana_regex(values: list[str]) -> str:
    """What Grafana puts in place of a multi-value variable inside `=~"..."` (All: every value)."""
    return values[0] if len(values) == 1 else "(" + "|".join(re.escape(v) for v in values) + ")"


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
        for label, op, written in MATCHER.findall(matchers):
            if label in TARGET_LABELS:
                continue
            if label not in labels:
                problems.append(f"{name}: no label {label!r}")
                continue
            if label == "collection" and op == "=":
                continue  # the operator names collections (alert tests): any name can be exported
            # The variable stands for the collections picked: each one alone, or All.
            picks = [[c] for c in COLLECTIONS] + [list(COLLECTIONS)]
            for picked in picks if COLLECTION_VARIABLE in written else [None]:
                value = (
                    written if picked is None else written.replace(COLLECTION_VARIABLE, grafana_regex(picked))
                )
                if op == "=" and value not in labels[label]:
                    problems.append(
                        f"{name}: {label}={value!r} never exported; values {sorted(labels[label])}"
                    )
                if op != "=~":
                    continue
                matched = {v for v in labels[label] if re.fullmatch(value, v)}
                if not matched:
                    problems.append(f"{name}: {label}=~{value!r} matches nothing")
                elif picked is not None and matched != set(picked):
                    problems.append(f"{name}: {label}=~{value!r} picks {sorted(matched)}, not {picked}")
    assert problems == []


def test_every_metric_is_on_the_dashboard(exported):
    # Nothing exported that an operator cannot see.
    families = {re.sub(r"_(total|bucket|count|sum|created)$", "", n) for n in exported}
    named = {m.group(1) for e in dashboard_expressions() for m in SELECTOR.finditer(e)}
    shown = {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in named}
    assert sorted(families - shown) == []


# the dashboard's shape


def test_every_metric_but_build_info_carries_the_collection_label(exported):
    without = {name for name, labels in exported.items() if "collection" not in labels}
    assert {re.sub(r"_(total|bucket|count|sum|created)$", "", n) for n in without} == PER_PROCESS
    assert all(labels["collection"] == set(COLLECTIONS) for n, labels in exported.items() if n not in without)


def test_dashboard_picks_its_datasource_by_variable_and_has_no_inputs():
    d = dashboard()
    assert "__inputs" not in d
    (variable,) = [v for v in d["templating"]["list"] if v["name"] == "datasource"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    for panel in data_panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_dashboard_picks_collections_by_variable():
    variable = collection_variable()
    assert (variable["type"], variable["query"]) == ("query", "label_values(dualvec_phase, collection)")
    assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert variable["multi"] is True and variable["includeAll"] is True
    assert variable["refresh"] in (1, 2)  # re-queried on load or time change: new collections show
    # No custom All value: "All" becomes the list of collections seen, which the queries match.
    assert not variable.get("allValue")


def test_every_panel_query_is_filtered_by_the_collection_variable():
    problems = []
    for panel in data_panels():
        for target in panel["targets"]:
            expr = target["expr"]
            if COLLECTION_FILTER not in expr:
                problems.append(f"{panel['title']}/{target['refId']}: no {COLLECTION_FILTER}")
            for selector in SELECTOR.finditer(expr):
                name, matchers = selector.group(1), selector.group(2) or ""
                if name not in PER_PROCESS and COLLECTION_FILTER not in matchers:
                    problems.append(f"{panel['title']}/{target['refId']}: {name} not filtered")
    assert problems == []


def test_every_panel_but_versions_draws_one_line_per_collection():
    # Collections migrate at their own pace: a line summed over collections at different
    # phases (a read split, a p99 ratio, a mismatch ratio) describes none of them.
    problems = []
    for panel in data_panels():
        for target in panel["targets"]:
            expr, where = target["expr"], f"{panel['title']}/{target['refId']}"
            if any(name in expr for name in PER_PROCESS):
                assert "{{collection}}" not in target["legendFormat"], where
                continue
            if "{{collection}}" not in target["legendFormat"]:
                problems.append(f"{where}: legend without {{{{collection}}}}")
            for aggregation in AGGREGATION.finditer(expr):
                if "collection" not in kept_labels(aggregation):
                    problems.append(f"{where}: {aggregation.group(0)} merges collections")
    assert problems == []


def alert_rules() -> dict[str, tuple[str, str]]:
    """Alert name -> (expression, summary), read from alerts.yml's plain layout."""
    rules = {}
    for block in re.split(r"^\s*- alert:\s*", ALERTS.read_text(), flags=re.MULTILINE)[1:]:
        name = block.split("\n", 1)[0].strip()
        expr = re.search(r"^\s*expr:\s*(.*?)^\s*(?:for|labels):", block, re.MULTILINE | re.DOTALL)
        summary = re.search(r'^\s*summary:\s*"(.*)"$', block, re.MULTILINE)
        assert expr and summary, name
        rules[name] = (expr.group(1).strip(" |\n"), summary.group(1))
    return rules


def test_alert_rules_aggregate_by_job_and_collection():
    rules = alert_rules()
    problems = []
    for name, (expr, summary) in rules.items():
        aggregations = list(AGGREGATION.finditer(expr))
        if not aggregations:
            problems.append(f"{name}: no aggregation")
        for aggregation in aggregations:
            if not {"job", "collection"} <= kept_labels(aggregation):
                problems.append(f"{name}: {aggregation.group(0)} merges jobs or collections")
        if "$labels.collection" not in summary:
            problems.append(f"{name}: summary does not name the collection")
    assert rules and problems == []


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
        "dualvec_guard_checks_total",  # what the guard judged ...
        "dualvec_guard_value",  # ... what it measured ...
        "dualvec_guard_threshold",  # ... against which limit ...
        "dualvec_guard_rollbacks_total",  # ... and when it rolled back
        "dualvec_read_failures_total",
    ):
        assert needed in exprs, needed
