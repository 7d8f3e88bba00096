from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers import sqlite_locked
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dualvec import open_store
from dualvec.errors import ConfigError
from dualvec.flags import FlagFile, FlagOverrides, write_flag_file
from dualvec.metrics import (
    DISTANCE_DELTA_BUCKETS,
    DROP_REASONS,
    GUARD_CHECKS,
    GUARD_RESULTS,
    LATENCY_BUCKETS,
    OPS,
    PHASES,
    RECALL_BUCKETS,
    ROLES,
    ROLLBACK_REASONS,
    STORES,
    WRITE_OPS,
    CollectionMetrics,
    DualvecMetrics,
    multiprocess_registry,
)
from dualvec.migration import Migration
from dualvec.settings import Settings, ShadowSettings
from dualvec.testing import make_records, sample_spec

DOCS = "docs"


@pytest.fixture
def families() -> DualvecMetrics:
    return DualvecMetrics(CollectorRegistry())


@pytest.fixture
def metrics(families) -> CollectionMetrics:
    return families.collection(DOCS)


def value(families: DualvecMetrics, name: str, **labels: str) -> float | None:
    """A sample of collection `docs`, unless `collection=` names another."""
    return families.registry.get_sample_value(name, {"collection": DOCS, **labels})


def test_every_instance_has_its_own_registry():
    # Module-global metrics would make the second construction fail with "Duplicated timeseries".
    first, second = DualvecMetrics(), DualvecMetrics()
    first.collection(DOCS).served("target")
    second.collection(DOCS)
    assert value(first, "dualvec_reads_total", store="target") == 1
    assert value(second, "dualvec_reads_total", store="target") == 0


def test_a_collection_has_series_once_added_and_only_then(families):
    # Only the collections a process serves appear; build info is there from the start.
    assert [f.name for f in families.registry.collect() if f.samples] == ["dualvec_build_info"]
    families.collection("claims")
    assert value(families, "dualvec_reads_total", collection="claims", store="legacy") == 0
    assert value(families, "dualvec_reads_total", store="legacy") is None
    families.collection("claims").served("legacy")
    families.collection("claims").served("legacy")  # the same view again: nothing reset
    assert value(families, "dualvec_reads_total", collection="claims", store="legacy") == 2


def test_labelled_series_exist_at_zero_before_any_event(families, metrics):
    # rate() and increase() only see an event on a series that existed before it.
    assert value(families, "dualvec_reads_total", store="legacy") == 0
    assert value(families, "dualvec_shadow_comparisons_total", outcome="mismatch") == 0
    assert value(families, "dualvec_shadow_dropped_total", reason="timeout") == 0
    assert value(families, "dualvec_write_failures_total", store="target", op="delete") == 0
    assert value(families, "dualvec_repairs_total", kind="upsert") == 0
    assert value(families, "dualvec_compare_errors_total") == 0
    labels = {"store": "target", "op": "scan", "role": "shadow"}
    assert value(families, "dualvec_operation_duration_seconds_count", **labels) == 0


def test_latency_buckets_span_a_tenth_of_a_millisecond_to_five_seconds():
    assert LATENCY_BUCKETS[0] == 0.0001
    assert LATENCY_BUCKETS[-1] == 5.0
    assert 14 <= len(LATENCY_BUCKETS) <= 16
    ratios = [b / a for a, b in itertools.pairwise(LATENCY_BUCKETS)]
    assert all(2 <= r <= 2.5 for r in ratios)  # roughly log-spaced


def test_observe_lands_in_the_right_bucket(families, metrics):
    metrics.observe("target", "search", "primary", 0.0007)
    labels = {"store": "target", "op": "search", "role": "primary"}
    assert value(families, "dualvec_operation_duration_seconds_count", **labels) == 1
    assert value(families, "dualvec_operation_duration_seconds_sum", **labels) == pytest.approx(0.0007)
    assert value(families, "dualvec_operation_duration_seconds_bucket", **labels, le="0.0005") == 0
    assert value(families, "dualvec_operation_duration_seconds_bucket", **labels, le="0.001") == 1


def test_time_records_a_failing_block_too(families, metrics):
    with pytest.raises(RuntimeError), metrics.time("legacy", "upsert", "secondary"):
        raise RuntimeError("store down")
    labels = {"store": "legacy", "op": "upsert", "role": "secondary"}
    assert value(families, "dualvec_operation_duration_seconds_count", **labels) == 1


def test_counters(families, metrics):
    metrics.served("target")
    metrics.served("target")
    metrics.served("legacy")
    metrics.write_failed("target", "delete")
    metrics.repaired("upsert", 5)
    metrics.repaired("delete")
    metrics.shadow_dropped("saturated")
    metrics.compare_error()
    assert value(families, "dualvec_reads_total", store="target") == 2
    assert value(families, "dualvec_reads_total", store="legacy") == 1
    assert value(families, "dualvec_write_failures_total", store="target", op="delete") == 1
    assert value(families, "dualvec_repairs_total", kind="upsert") == 5
    assert value(families, "dualvec_repairs_total", kind="delete") == 1
    assert value(families, "dualvec_shadow_dropped_total", reason="saturated") == 1
    assert value(families, "dualvec_compare_errors_total") == 1


def test_shadow_compared_counts_outcomes_and_skips_a_missing_delta(families, metrics):
    metrics.shadow_compared("match", 1.0, 0.0)
    metrics.shadow_compared("mismatch", 0.6, None)
    assert value(families, "dualvec_shadow_comparisons_total", outcome="match") == 1
    assert value(families, "dualvec_shadow_comparisons_total", outcome="mismatch") == 1
    assert value(families, "dualvec_shadow_recall_count") == 2
    # recall 0.6 is in (0.5, 0.7]; 1.0 only in the le=1.0 bucket.
    assert value(families, "dualvec_shadow_recall_bucket", le="0.5") == 0
    assert value(families, "dualvec_shadow_recall_bucket", le="0.7") == 1
    assert value(families, "dualvec_shadow_recall_bucket", le="0.99") == 1
    assert value(families, "dualvec_shadow_recall_bucket", le="1.0") == 2
    # No common id, no delta: only the first comparison observed one.
    assert value(families, "dualvec_shadow_distance_delta_count") == 1


def test_set_flags_marks_exactly_one_phase(families, metrics):
    metrics.set_flags("dual", 10, 100)
    metrics.set_flags("target-primary", 50.5, 25)
    phases = {p: value(families, "dualvec_phase", phase=p) for p in PHASES}
    assert phases == {"legacy": 0, "dual": 0, "target-primary": 1, "target": 0}
    assert value(families, "dualvec_flag_read_percent") == 50.5
    assert value(families, "dualvec_flag_shadow_percent") == 25


def test_outbox_gauges(families, metrics):
    metrics.set_outbox(12, 3.5)
    assert value(families, "dualvec_outbox_depth") == 12
    assert value(families, "dualvec_outbox_oldest_age_seconds") == 3.5


def test_collections_record_into_their_own_series(families):
    claims, faq = families.collection("claims"), families.collection("faq")
    claims.write_failed("target", "upsert")
    claims.served("target")
    claims.set_outbox(4, 2.0)
    claims.set_flags("dual", 50, 100)
    faq.set_flags("target-primary", 100, 0)
    faq.shadow_compared("mismatch", 0.5, None)

    def both(name: str, **labels: str) -> dict[str, float | None]:
        return {c: value(families, name, collection=c, **labels) for c in ("claims", "faq")}

    assert both("dualvec_write_failures_total", store="target", op="upsert") == {"claims": 1, "faq": 0}
    assert both("dualvec_reads_total", store="target") == {"claims": 1, "faq": 0}
    assert both("dualvec_outbox_depth") == {"claims": 4, "faq": 0}
    assert both("dualvec_phase", phase="dual") == {"claims": 1, "faq": 0}
    assert both("dualvec_phase", phase="target-primary") == {"claims": 0, "faq": 1}
    assert both("dualvec_flag_read_percent") == {"claims": 50, "faq": 100}
    assert both("dualvec_shadow_comparisons_total", outcome="mismatch") == {"claims": 0, "faq": 1}
    assert both("dualvec_shadow_recall_count") == {"claims": 0, "faq": 1}


# What a label may hold: the declared collections, or one of the fixed sets.
FIXED_LABELS: dict[str, frozenset[str]] = {
    "store": frozenset(STORES),
    "op": frozenset(OPS),
    "role": frozenset(ROLES),
    "outcome": frozenset({"match", "mismatch", "in_flight"}),
    "reason": frozenset(DROP_REASONS) | frozenset(ROLLBACK_REASONS),
    "check": frozenset(GUARD_CHECKS),
    "result": frozenset(GUARD_RESULTS),
    "kind": frozenset(WRITE_OPS),
    "phase": frozenset(PHASES),
}
BUCKET_BOUNDS = {*LATENCY_BUCKETS, *RECALL_BUCKETS, *DISTANCE_DELTA_BUCKETS, math.inf}
BUILD_INFO_LABELS = {"version", "python", "sqlite_vec"}


def stray_labels(registry: CollectorRegistry, collections: set[str]) -> list[str]:
    """Every label of every sample that is not a declared collection or a fixed-set value."""
    problems = []
    for family in registry.collect():
        for sample in family.samples:
            labels = dict(sample.labels)
            if family.name == "dualvec_build_info":
                if set(labels) != BUILD_INFO_LABELS:
                    problems.append(f"{sample.name}: labels {sorted(labels)}")
                continue
            if labels.pop("collection", None) not in collections:
                problems.append(f"{sample.name}{sample.labels}: collection not declared")
            le = labels.pop("le", None)
            if le is not None and float(le) not in BUCKET_BOUNDS:
                problems.append(f"{sample.name}: le={le!r}")
            problems += [
                f"{sample.name}: {k}={v!r}" for k, v in labels.items() if v not in FIXED_LABELS.get(k, ())
            ]
    return problems


def test_a_migrations_collections_keep_their_series_apart_and_their_labels_small(tmp_path):
    # Two collections through one Migration, one registry: claims (read by every key from the
    # target) has its target locked during a write, faq (all reads on legacy) does not.
    dim = 8
    specs = {name: sample_spec(name, dim=dim) for name in ("claims", "faq")}
    stores = {
        name: (
            open_store("memory://", spec),
            open_store(f"sqlite-vec://{tmp_path}/{name}.db?busy_timeout=0.05", spec),
        )
        for name, spec in specs.items()
    }
    flag_file = tmp_path / "flags.json"
    overrides = {"claims": FlagOverrides(read_percent=100), "faq": FlagOverrides(read_percent=0)}
    write_flag_file(flag_file, FlagFile(phase="dual", shadow_percent=100, collections=overrides))
    settings = Settings(
        flag_file=flag_file,
        outbox_path=tmp_path / "outbox.db",
        replay_interval_seconds=3600,
        shadow=ShadowSettings(mismatch_log=tmp_path / "mismatches.jsonl"),
    )
    families = DualvecMetrics(CollectorRegistry())
    records = make_records(30, dim, seed=7)
    queries = np.random.default_rng(8).standard_normal((6, dim)).astype(np.float32)
    with Migration(stores, settings, metrics=families, start_replayer=False) as migration:
        with sqlite_locked(tmp_path / "claims.db"):
            for name in migration:
                migration[name].upsert(records)  # the secondary (target) write of claims fails
        for name in migration:
            migration[name].publish_outbox()
            for i, query in enumerate(queries):
                # Tenants and request ids are the kind of value that must never become a label.
                migration[name].search(query, k=5, routing_key=f"tenant-{i}")
    # Closed: every shadow read has been compared or dropped.

    def both(name: str, **labels: str) -> dict[str, float | None]:
        return {c: value(families, name, collection=c, **labels) for c in specs}

    assert both("dualvec_write_failures_total", store="target", op="upsert") == {"claims": 1, "faq": 0}
    assert both("dualvec_outbox_depth") == {"claims": 30, "faq": 0}
    assert both("dualvec_reads_total", store="target") == {"claims": 6, "faq": 0}
    assert both("dualvec_reads_total", store="legacy") == {"claims": 0, "faq": 6}
    assert both("dualvec_flag_read_percent") == {"claims": 100, "faq": 0}
    assert both("dualvec_phase", phase="dual") == {"claims": 1, "faq": 1}
    for name in specs:  # each collection's shadows, counted in its own series
        shadowed = sum(
            value(families, "dualvec_shadow_comparisons_total", collection=name, outcome=o)
            for o in ("match", "mismatch", "in_flight")
        ) + sum(
            value(families, "dualvec_shadow_dropped_total", collection=name, reason=r) for r in DROP_REASONS
        )
        assert shadowed == 6, name
    # The target of claims missed the write, so its answers differ from legacy's; faq's agree.
    assert both("dualvec_shadow_comparisons_total", outcome="mismatch")["claims"] > 0
    assert both("dualvec_shadow_comparisons_total", outcome="mismatch")["faq"] == 0
    assert stray_labels(families.registry, set(specs)) == []


def test_the_label_check_catches_a_stray_value(families):
    # The check above must be able to fail: a collection nobody declared, a tenant as a label.
    families.collection("claims")
    families.collection("tenant-42")
    assert stray_labels(families.registry, {"claims"})
    assert stray_labels(families.registry, {"claims", "tenant-42"}) == []


def test_build_info_names_the_versions(families):
    (family,) = [f for f in families.registry.collect() if f.name == "dualvec_build_info"]
    (sample,) = family.samples
    assert sample.value == 1
    assert set(sample.labels) == BUILD_INFO_LABELS  # per process: no collection label
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


def test_render_without_multiprocess_is_this_registry(families, metrics, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    metrics.served("legacy")
    assert families.render() == generate_latest(families.registry)


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
    families = DualvecMetrics()
    m = families.collection("docs")
    m.served("target")
    m.served("legacy")
    m.observe("target", "search", "primary", 0.002)
    m.repaired("upsert", 3)
    m.set_flags("dual", read_percent, 100)
    m.set_outbox(depth, 1.5)
    families.collection("faq").set_flags("legacy", 0, 0)
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
        labels = {"collection": DOCS, **labels}
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
    # The other collection stays apart across processes too.
    assert only("dualvec_reads_total", collection="faq", store="target") == 0
    assert only("dualvec_phase", collection="faq", phase="legacy") == 1
    assert only("dualvec_phase", collection="faq", phase="dual") == 0
    assert [v for _, v in samples["dualvec_build_info"]] == [1]
