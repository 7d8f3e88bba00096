from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dualvec.errors import ConfigError
from dualvec.metrics import LATENCY_BUCKETS, DualvecMetrics, multiprocess_registry


@pytest.fixture
def metrics() -> DualvecMetrics:
    return DualvecMetrics(CollectorRegistry())


def value(m: DualvecMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_every_instance_has_its_own_registry():
    # Module-global metrics would make the second construction fail with "Duplicated timeseries".
    first, second = DualvecMetrics(), DualvecMetrics()
    first.served("target")
    assert value(first, "dualvec_reads_total", store="target") == 1
    assert value(second, "dualvec_reads_total", store="target") == 0


def test_labelled_series_exist_at_zero_before_any_event(metrics):
    # rate() and increase() only see an event on a series that existed before it.
    assert value(metrics, "dualvec_reads_total", store="legacy") == 0
    assert value(metrics, "dualvec_shadow_comparisons_total", outcome="mismatch") == 0
    assert value(metrics, "dualvec_shadow_dropped_total", reason="timeout") == 0
    assert value(metrics, "dualvec_write_failures_total", store="target", op="delete") == 0
    assert value(metrics, "dualvec_repairs_total", kind="upsert") == 0
    assert value(metrics, "dualvec_compare_errors_total") == 0
    labels = {"store": "target", "op": "scan", "role": "shadow"}
    assert value(metrics, "dualvec_operation_duration_seconds_count", **labels) == 0


def test_latency_buckets_span_a_tenth_of_a_millisecond_to_five_seconds():
    assert LATENCY_BUCKETS[0] == 0.0001
    assert LATENCY_BUCKETS[-1] == 5.0
    assert 14 <= len(LATENCY_BUCKETS) <= 16
    ratios = [b / a for a, b in itertools.pairwise(LATENCY_BUCKETS)]
    assert all(2 <= r <= 2.5 for r in ratios)  # roughly log-spaced


def test_observe_lands_in_the_right_bucket(metrics):
    metrics.observe("target", "search", "primary", 0.0007)
    labels = {"store": "target", "op": "search", "role": "primary"}
    assert value(metrics, "dualvec_operation_duration_seconds_count", **labels) == 1
    assert value(metrics, "dualvec_operation_duration_seconds_sum", **labels) == pytest.approx(0.0007)
    assert value(metrics, "dualvec_operation_duration_seconds_bucket", **labels, le="0.0005") == 0
    assert value(metrics, "dualvec_operation_duration_seconds_bucket", **labels, le="0.001") == 1


def test_time_records_a_failing_block_too(metrics):
    with pytest.raises(RuntimeError), metrics.time("legacy", "upsert", "secondary"):
        raise RuntimeError("store down")
    labels = {"store": "legacy", "op": "upsert", "role": "secondary"}
    assert value(metrics, "dualvec_operation_duration_seconds_count", **labels) == 1


def test_counters(metrics):
    metrics.served("target")
    metrics.served("target")
    metrics.served("legacy")
    metrics.write_failed("target", "delete")
    metrics.repaired("upsert", 5)
    metrics.repaired("delete")
    metrics.shadow_dropped("saturated")
    metrics.compare_error()
    assert value(metrics, "dualvec_reads_total", store="target") == 2
    assert value(metrics, "dualvec_reads_total", store="legacy") == 1
    assert value(metrics, "dualvec_write_failures_total", store="target", op="delete") == 1
    assert value(metrics, "dualvec_repairs_total", kind="upsert") == 5
    assert value(metrics, "dualvec_repairs_total", kind="delete") == 1
    assert value(metrics, "dualvec_shadow_dropped_total", reason="saturated") == 1
    assert value(metrics, "dualvec_compare_errors_total") == 1


def test_shadow_compared_counts_outcomes_and_skips_a_missing_delta(metrics):
    metrics.shadow_compared(mismatch=False, recall=1.0, max_distance_delta=0.0)
    metrics.shadow_compared(mismatch=True, recall=0.6, max_distance_delta=None)
    assert value(metrics, "dualvec_shadow_comparisons_total", outcome="match") == 1
    assert value(metrics, "dualvec_shadow_comparisons_total", outcome="mismatch") == 1
    assert value(metrics, "dualvec_shadow_recall_count") == 2
    # recall 0.6 is in (0.5, 0.7]; 1.0 only in the le=1.0 bucket.
    assert value(metrics, "dualvec_shadow_recall_bucket", le="0.5") == 0
    assert value(metrics, "dualvec_shadow_recall_bucket", le="0.7") == 1
    assert value(metrics, "dualvec_shadow_recall_bucket", le="0.99") == 1
    assert value(metrics, "dualvec_shadow_recall_bucket", le="1.0") == 2
    # No common id, no delta: only the first comparison observed one.
    assert value(metrics, "dualvec_shadow_distance_delta_count") == 1


def test_set_flags_marks_exactly_one_phase(metrics):
    metrics.set_flags("dual", 10, 100)
    metrics.set_flags("target-primary", 50.5, 25)
    phases = {
        p: value(metrics, "dualvec_phase", phase=p) for p in ("legacy", "dual", "target-primary", "target")
    }
    assert phases == {"legacy": 0, "dual": 0, "target-primary": 1, "target": 0}
    assert value(metrics, "dualvec_flag_read_percent") == 50.5
    assert value(metrics, "dualvec_flag_shadow_percent") == 25


def test_outbox_gauges(metrics):
    metrics.set_outbox(12, 3.5)
    assert value(metrics, "dualvec_outbox_depth") == 12
    assert value(metrics, "dualvec_outbox_oldest_age_seconds") == 3.5


def test_build_info_names_the_versions(metrics):
    (family,) = [f for f in metrics.registry.collect() if f.name == "dualvec_build_info"]
    (sample,) = family.samples
    assert sample.value == 1
    assert set(sample.labels) == {"version", "python", "sqlite_vec"}
    assert sample.labels["sqlite_vec"].startswith("0.1.")
    assert sample.labels["python"] == ".".join(map(str, sys.version_info[:3]))


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.served("qdrant"),
        lambda m: m.observe("target", "select", "primary", 0.1),
        lambda m: m.write_failed("target", "search"),
        lambda m: m.set_flags("half", 10, 10),
        lambda m: m.shadow_dropped("bored"),
    ],
)
def test_label_values_outside_the_fixed_sets_are_refused(metrics, call):
    with pytest.raises(ValueError, match="fixed label sets"):
        call(metrics)


def test_render_without_multiprocess_is_this_registry(metrics, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    metrics.served("legacy")
    assert metrics.render() == generate_latest(metrics.registry)


def test_multiprocess_dir_set_after_import_is_refused(tmp_path, monkeypatch):
    # This test process imported prometheus_client without the variable: values would stay
    # in memory and never reach the directory the exposition reads.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="before starting Python"):
        DualvecMetrics()


def test_multiprocess_registry_needs_the_variable(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with pytest.raises(ConfigError, match="PROMETHEUS_MULTIPROC_DIR"):
        multiprocess_registry()


WORKER = textwrap.dedent(
    """
    import sys
    from dualvec.metrics import DualvecMetrics

    read_percent, depth = float(sys.argv[1]), int(sys.argv[2])
    m = DualvecMetrics()
    m.served("target")
    m.served("legacy")
    m.observe("target", "search", "primary", 0.002)
    m.repaired("upsert", 3)
    m.set_flags("dual", read_percent, 100)
    m.set_outbox(depth, 1.5)
    """
)


def test_two_processes_sum_in_one_multiprocess_exposition(tmp_path, monkeypatch):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, read_percent, depth], env=env)
        for read_percent, depth in (("10", "5"), ("50", "7"))
    ]
    assert [w.wait(timeout=60) for w in workers] == [0, 0]

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    text = generate_latest(multiprocess_registry()).decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))

    def only(name: str, **labels: str) -> float:
        (found,) = [v for lab, v in samples[name] if all(lab.get(k) == x for k, x in labels.items())]
        return found

    # Counters and histograms: the sum over both processes.
    assert only("dualvec_reads_total", store="target") == 2
    assert only("dualvec_reads_total", store="legacy") == 2
    assert only("dualvec_repairs_total", kind="upsert") == 6
    labels = {"store": "target", "op": "search", "role": "primary"}
    assert only("dualvec_operation_duration_seconds_count", **labels) == 2
    assert only("dualvec_operation_duration_seconds_bucket", **labels, le="0.0025") == 2
    # Gauges: one series each, no pid label; flags take the largest value among processes.
    assert all("pid" not in lab for series in samples.values() for lab, _ in series)
    assert only("dualvec_flag_read_percent") == 50
    assert only("dualvec_phase", phase="dual") == 1
    assert only("dualvec_phase", phase="legacy") == 0
    assert only("dualvec_outbox_depth") in (5, 7)  # the most recent reading
    assert [v for _, v in samples["dualvec_build_info"]] == [1]
