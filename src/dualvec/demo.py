"""`dualvec demo`: the whole migration, on a generated legacy LanceDB collection, under live
traffic, ending in a report where every number was measured in this run.

Steps: build the legacy collection; route it in phase legacy; dual; backfill; verify; shadow
100%; read 10% -> 50% -> 100%; an injected sqlite-vec outage (another process holds its write
lock) that the outbox repairs; rollback and re-ramp; target-primary with a final verify; target.
Then `claims` is ramped by the guard (`dualvec ramp` in-process, judged on the demo's own
metrics): first with records deleted from its sqlite-vec table behind the router's back, which
the guard rolls back on its own; then, repaired by a verify, to 100%.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from dualvec.backfill import backfill
from dualvec.flags import FlagSnapshot
from dualvec.guard.ramp import PhaseRulesControl, Ramp, RampPlan
from dualvec.guard.sources import ExpositionSource
from dualvec.metrics import OUTCOMES, DualvecMetrics
from dualvec.metrics_server import start_metrics_server
from dualvec.migration import Migration
from dualvec.phases import change_flags, rollback_flags, verify_collection
from dualvec.records import Record
from dualvec.registry import open_store
from dualvec.settings import CollectionConfig, GuardSettings, Phase, Settings, ShadowSettings
from dualvec.spec import CollectionSpec, FieldSpec
from dualvec.testing.data import SAMPLE_FIELDS
from dualvec.testing.faults import sqlite_locked
from dualvec.workload import Workload

__all__ = ["DemoReport", "PhaseReport", "run_demo"]

LANGS = ("en", "fr", "de", "es", "it")


@dataclass
class PhaseReport:
    collection: str
    name: str
    seconds: float
    reads: dict[str, int]
    p50_ms: dict[str, float | None]
    p95_ms: dict[str, float | None]
    writes: int
    caller_errors: int
    shadow_compared: int
    mismatches: int
    in_flight: int
    mean_recall: float | None
    secondary_write_failures: int
    repairs: int
    notes: str = ""


@dataclass
class DemoReport:
    records: int
    dim: int
    metrics_url: str
    build_seconds: float
    backfill: dict[str, dict[str, Any]] = field(default_factory=dict)
    verifies: dict[str, dict[str, Any]] = field(default_factory=dict)
    ramps: dict[str, dict[str, Any]] = field(default_factory=dict)
    phases: list[PhaseReport] = field(default_factory=list)
    final_flags: dict[str, dict[str, Any]] = field(default_factory=dict)
    total_seconds: float = 0.0


_TOPICS, _LATENT_DIM = 32, 24


def doc_vectors(n: int, dim: int, rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """Vectors spread as a sentence model spreads them: a few dozen topics in a space of low
    intrinsic dimension, projected up, plus noise. Uniform noise would make every neighbour a
    near-tie, which no real index faces and no quantized scan could rank. The space itself is
    fixed, so the stored records, live writes and queries all come from the same one."""
    space = np.random.default_rng(0)
    topics = space.standard_normal((_TOPICS, _LATENT_DIM))
    projection = space.standard_normal((_LATENT_DIM, dim))
    latent = topics[rng.integers(_TOPICS, size=n)] + 0.5 * rng.standard_normal((n, _LATENT_DIM))
    return (latent @ projection + 0.5 * rng.standard_normal((n, dim))).astype(np.float32)


def doc_records(n: int, dim: int, seed: int, first: int = 0) -> list[Record]:
    """Records of `docs`, ids from `doc-{first}`, with varied metadata."""
    rng = np.random.default_rng(seed)
    vectors = doc_vectors(n, dim, rng)
    return [
        Record(
            f"doc-{first + i}",
            vectors[i],
            {
                "lang": LANGS[int(rng.integers(len(LANGS)))],
                "year": int(rng.integers(2000, 2026)),
                "score": float(rng.random()),
                "public": bool(rng.random() < 0.5),
                "title": f"document {first + i}",
            },
        )
        for i in range(n)
    ]


def _generate(spec: CollectionSpec, n: int, seed: int) -> list[list[Record]]:
    return [
        doc_records(min(2000, n - first), spec.dim, seed=seed * 1_000_003 + first, first=first)
        for first in range(0, n, 2000)
    ]


class _Counters:
    """Reads the router's own Prometheus samples, so the report shows what the dashboard shows."""

    def __init__(self, metrics: DualvecMetrics, collection: str) -> None:
        self.value = metrics.collection(collection).value
        self._registry = metrics.registry
        self._collection = collection

    def _recall(self) -> tuple[float, float]:
        """(sum, count) of the recall histogram from one collection of its samples: read with
        two lookups, a shadow landing in between would count in one and not the other."""
        found = {"dualvec_shadow_recall_sum": 0.0, "dualvec_shadow_recall_count": 0.0}
        for family in self._registry.collect():
            if family.name == "dualvec_shadow_recall":
                for sample in family.samples:
                    if sample.name in found and sample.labels.get("collection") == self._collection:
                        found[sample.name] = sample.value
        return found["dualvec_shadow_recall_sum"], found["dualvec_shadow_recall_count"]

    def snapshot(self) -> dict[str, float]:
        recall_sum, recall_count = self._recall()
        return {
            "compared": sum(self.value("dualvec_shadow_comparisons_total", outcome=o) for o in OUTCOMES),
            "mismatches": self.value("dualvec_shadow_comparisons_total", outcome="mismatch"),
            "in_flight": self.value("dualvec_shadow_comparisons_total", outcome="in_flight"),
            "recall_sum": recall_sum,
            "recall_count": recall_count,
            "failures": sum(
                self.value("dualvec_write_failures_total", store=s, op=o)
                for s in ("legacy", "target")
                for o in ("upsert", "delete")
            ),
            "repairs": sum(self.value("dualvec_repairs_total", kind=k) for k in ("upsert", "delete")),
        }


DOCS, CLAIMS = "docs", "claims"
QUANTIZED_OVERSAMPLE = 8
QUANTIZED_MIN_RECALL = 0.8
CLAIMS_DIM = 32
CATEGORIES = ("finance", "health", "science", "sport")
GUARD_MIN_COMPARISONS = 5
LIVE_IDS = 2000  # ids the workload's writer upserts and deletes
RAMP_STEPS = (25.0, 50.0, 100.0)


def claim_records(n: int, dim: int, seed: int = 0) -> list[Record]:
    """Records of the second collection: small vectors, a `category` to filter on."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return [
        Record(
            f"claim-{i}",
            vectors[i],
            {"category": CATEGORIES[int(rng.integers(len(CATEGORIES)))], "confidence": float(rng.random())},
        )
        for i in range(n)
    ]


class Demo:
    """Two collections of different shapes, migrated at different paces in one process: `docs`
    walks every phase; `claims` follows to dual, is verified, ramps to 10% and stays there,
    untouched by `docs`'s rollback, until the guard ramps it (and once rolls it back)."""

    def __init__(
        self,
        workdir: Path,
        records: int,
        dim: int,
        phase_seconds: float,
        port: int,
        say: Callable[[str], None],
    ) -> None:
        self.workdir = workdir
        self.records = records
        self.phase_seconds = phase_seconds
        self.say = say
        self.settings = Settings(
            phase=Phase.LEGACY,
            collection=DOCS,
            collections={
                # The fast target: a bit-quantized copy scanned for k x 8 candidates, ranked by
                # exact float distance (DESIGN.md, "A fast target").
                DOCS: CollectionConfig(
                    dim=dim,
                    metric="cosine",
                    model="demo-embedder",
                    fields=dict(SAMPLE_FIELDS),
                    quantize="bit",
                    oversample=QUANTIZED_OVERSAMPLE,
                ),
                # Its own sqlite-vec file: two collections writing one file contend for its
                # write lock, and with the outage's 50 ms busy timeout one would fail the other.
                CLAIMS: CollectionConfig(
                    target_url=f"sqlite-vec://{workdir}/{CLAIMS}-target.db?busy_timeout=0.05",
                    dim=CLAIMS_DIM,
                    metric="l2",
                    model="demo-claims",
                    fields={"category": FieldSpec(type="str"), "confidence": FieldSpec(type="float")},
                ),
            },
            legacy_url=f"lancedb://{workdir}/legacy",
            target_url=f"sqlite-vec://{workdir}/target.db?busy_timeout=0.05",
            flag_file=workdir / "flags.json",
            outbox_path=workdir / "outbox.db",
            replay_interval_seconds=0.5,
            flag_poll_seconds=0.1,
            # A quantized target may miss a true neighbour now and then; a shadow answer below
            # this recall is a mismatch (`dualvec bench --recall` measures what to set).
            shadow=ShadowSettings(mismatch_log=workdir / "mismatches.jsonl", min_recall=QUANTIZED_MIN_RECALL),
            # The guard's defaults but for the pace: an interval of two phases, and few
            # comparisons suffice in one (every comparison waits on a legacy LanceDB search,
            # and those slow down as live writes add fragments).
            guard=GuardSettings(interval=2 * phase_seconds, min_comparisons=GUARD_MIN_COMPARISONS),
        )
        self.spec = self.settings.specs(DOCS)[0]
        self.metrics = DualvecMetrics()
        self.counters = {name: _Counters(self.metrics, name) for name in (DOCS, CLAIMS)}
        self.port = port

    def build_legacy(self) -> float:
        start = time.perf_counter()
        docs = open_store(self.settings.legacy_url, self.spec)
        claims = open_store(self.settings.legacy_url, self.settings.specs(CLAIMS)[0])
        try:
            for batch in _generate(self.spec, self.records, seed=1):
                docs.upsert(batch)
            claims.upsert(claim_records(max(100, self.records // 4), CLAIMS_DIM, seed=2))
        finally:
            docs.close()
            claims.close()
        return time.perf_counter() - start

    def set_flags(self, migration: Migration, collection: str | None = None, **changes: Any) -> None:
        """Change flags through the phase rules, as an operator would, for one collection (or
        the defaults of both), and wait until the routers follow."""
        self._await(migration, change_flags(self.settings, changes, collection=collection))

    def rollback(self, migration: Migration, collection: str) -> None:
        self._await(migration, rollback_flags(self.settings, collection))

    @staticmethod
    def _await(migration: Migration, snapshots: Mapping[str, FlagSnapshot]) -> None:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(
            migration[name].flags.flags != snapshot.flags for name, snapshot in snapshots.items()
        ):
            time.sleep(0.02)

    def run(self) -> DemoReport:
        began = time.perf_counter()
        self.say(f"building legacy LanceDB collections: docs {self.records} x {self.spec.dim}, claims")
        build = self.build_legacy()
        migration = Migration.from_settings(self.settings, metrics=self.metrics)
        server = start_metrics_server(self.metrics, port=self.port)
        self.say(f"metrics: {server.url}")
        report = DemoReport(self.records, self.spec.dim, server.url, build)
        workloads = {
            DOCS: Workload(
                migration[DOCS],
                make=doc_records,
                queries=doc_vectors(256, self.spec.dim, np.random.default_rng(7)),
            ),
            CLAIMS: Workload(
                migration[CLAIMS], readers=1, write_pause=0.05, live_ids=LIVE_IDS, make=claim_records
            ),
        }
        for workload in workloads.values():
            workload.start()
        try:
            self._walk(migration, workloads, report)
        finally:
            for workload in workloads.values():
                workload.stop()
            report.final_flags = {
                name: migration[name].flags.flags.model_dump(mode="json") for name in migration
            }
            migration.close()
            server.close()
        report.total_seconds = time.perf_counter() - began
        return report

    def _phase(
        self,
        workloads: Mapping[str, Workload],
        report: DemoReport,
        name: str,
        body: Callable[[], str] | None = None,
        about: str = DOCS,
    ) -> None:
        """Run traffic for one phase (and `body`, if any) and record, per collection, what
        callers and metrics saw; what `body` says goes on the row of collection `about`."""
        self.say(f"phase {name}")
        for workload in workloads.values():
            workload.phase = name
        before = {c: counters.snapshot() for c, counters in self.counters.items()}
        start = time.perf_counter()
        notes = body() if body else ""
        remaining = self.phase_seconds - (time.perf_counter() - start)
        if remaining > 0:
            time.sleep(remaining)
        seconds = round(time.perf_counter() - start, 2)
        for collection, workload in workloads.items():
            after = self.counters[collection].snapshot()
            traffic = workload.traffic[name]
            delta = {k: after[k] - before[collection][k] for k in after}
            report.phases.append(
                PhaseReport(
                    collection=collection,
                    name=name,
                    seconds=seconds,
                    reads={role: len(v) for role, v in traffic.latencies.items()},
                    p50_ms={r: _ms(traffic.percentile(r, 50)) for r in ("legacy", "target")},
                    p95_ms={r: _ms(traffic.percentile(r, 95)) for r in ("legacy", "target")},
                    writes=traffic.writes,
                    caller_errors=traffic.errors,
                    shadow_compared=int(delta["compared"]),
                    mismatches=int(delta["mismatches"]),
                    in_flight=int(delta["in_flight"]),
                    mean_recall=(delta["recall_sum"] / delta["recall_count"])
                    if delta["recall_count"]
                    else None,
                    secondary_write_failures=int(delta["failures"]),
                    repairs=int(delta["repairs"]),
                    notes=notes if collection == about else "",
                )
            )

    def _verify(
        self, migration: Migration, report: DemoReport, label: str, names: tuple[str, ...]
    ) -> Callable[[], str]:
        """A phase body: verify (and repair) each of `names`, as `dualvec verify --repair` does."""

        def body() -> str:
            notes = []
            for name in names:
                router = migration[name]
                result = verify_collection(self.settings, name, router.stores, router.outbox, repair=True)
                report.verifies[f"{name} {label}"] = result.as_dict()
                notes.append(f"{name}: {result.summary()}")
            return "; ".join(notes)

        return body

    def _walk(self, migration: Migration, workloads: Mapping[str, Workload], report: DemoReport) -> None:
        docs = migration[DOCS]
        self._phase(workloads, report, "legacy")
        self.set_flags(migration, phase=Phase.DUAL)  # the default: both collections
        self._phase(workloads, report, "dual")

        def run_backfill() -> str:
            notes = []
            for name in migration:
                router = migration[name]
                result = backfill(
                    router.stores["legacy"], router.stores["target"], router.outbox, batch_size=1000
                )
                report.backfill[name] = {
                    "copied": result.copied,
                    "seconds": round(result.seconds, 2),
                    "records_per_second": round(result.copied / max(result.seconds, 1e-9)),
                }
                notes.append(f"{name}: copied {result.copied} in {result.seconds:.1f} s")
            return "; ".join(notes)

        self._phase(workloads, report, "backfill", run_backfill)

        verify = self._verify(migration, report, "after backfill", (DOCS, CLAIMS))
        self._phase(workloads, report, "verify", verify)
        self.set_flags(migration, shadow_percent=100.0)
        self._phase(workloads, report, "shadow 100%")
        for percent in (10.0, 50.0, 100.0):
            self.set_flags(migration, DOCS, read_percent=percent)
            if percent == 100.0:
                self.set_flags(migration, CLAIMS, read_percent=10.0)  # claims starts its own ramp
            self._phase(workloads, report, f"read {percent:.0f}%")

        def outage() -> str:
            with sqlite_locked(self.workdir / "target.db"):
                time.sleep(min(2.0, self.phase_seconds / 2))
                depth = docs.outbox.stats().depth
            drained = _wait_for(
                lambda: all(migration[n].outbox.stats().depth == 0 for n in migration), timeout=30
            )
            return f"docs outbox peaked at >= {depth} ids; every outbox drained in {drained:.1f} s"

        self._phase(workloads, report, "sqlite-vec outage", outage)
        self.rollback(migration, DOCS)
        claims = migration[CLAIMS].flags.flags
        self._phase(
            workloads,
            report,
            "rollback docs",
            lambda: f"claims untouched: {claims.phase.value}, read {claims.read_percent:g}%",
        )
        self.set_flags(migration, DOCS, read_percent=100.0)
        self._phase(workloads, report, "re-ramp docs 100%")
        _wait_for(lambda: docs.outbox.stats().depth == 0, timeout=30)
        self.set_flags(migration, DOCS, phase=Phase.TARGET_PRIMARY, shadow_percent=10.0)
        final = self._verify(migration, report, "final (target-primary)", (DOCS,))
        self._phase(workloads, report, "docs target-primary", final)
        self.set_flags(migration, DOCS, shadow_percent=0.0)
        self.set_flags(migration, DOCS, phase=Phase.TARGET)
        self._phase(workloads, report, "docs target")
        self._guarded_ramps(migration, workloads, report)

    def _guarded_ramps(
        self,
        migration: Migration,
        workloads: Mapping[str, Workload],
        report: DemoReport,
    ) -> None:
        """claims, at read 10%: a fault the guard must catch, its repair, then a clean ramp."""

        def ramp(label: str) -> str:
            summary = Ramp(
                RampPlan(CLAIMS, RAMP_STEPS, self.settings.guard.interval, self.settings.guard),
                PhaseRulesControl(self.settings, CLAIMS),
                ExpositionSource.of_metrics(self.metrics),
                metrics=self.metrics.collection(CLAIMS),
            ).run()
            report.ramps[label] = summary
            return describe_ramp(summary)

        def faulty_ramp() -> str:
            lost = self.lose_target_records()
            return f"{lost} claims deleted from sqlite-vec behind the router's back; " + ramp("fault")

        self._phase(workloads, report, "claims ramp, fault", faulty_ramp, about=CLAIMS)
        repair = self._verify(migration, report, "repair after the fault", (CLAIMS,))
        self._phase(workloads, report, "claims repair", repair, about=CLAIMS)
        self._phase(workloads, report, "claims ramp", lambda: ramp("healthy"), about=CLAIMS)

    def lose_target_records(self) -> int:
        """Delete every other claim from the target directly, as lost writes would leave it: a
        divergence only shadow comparisons can see. Returns how many ids were deleted (some
        may not have been stored)."""
        target = f"sqlite-vec://{self.workdir}/{CLAIMS}-target.db"
        store = open_store(target, self.settings.specs(CLAIMS)[0])
        try:
            ids = [f"claim-{i}" for i in range(0, max(100, self.records // 4), 2)]
            ids += [f"live-{i}" for i in range(0, LIVE_IDS, 2)]  # what the workload writes
            store.delete(ids)
        finally:
            store.close()
        return len(ids)


def describe_ramp(summary: Mapping[str, Any]) -> str:
    """One line: what each interval measured, and how the ramp ended."""
    intervals = ", ".join(
        f"{i['read_percent']:g}% {i['verdict']} (mismatch "
        f"{_value(i['checks']['mismatch_ratio']['value'])} of {_value(i['checks']['comparisons']['value'])})"
        for i in summary["intervals"]
    )
    end = (
        f"rolled back to {summary['phase']} {summary['read_percent']:g}%: {summary['reason']}"
        if summary["outcome"] == "rolled_back"
        else f"{summary['outcome']} at {summary['read_percent']:g}%"
    )
    return f"guarded ramp {intervals}; {end}"


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _wait_for(condition: Callable[[], bool], timeout: float) -> float:
    start = time.perf_counter()
    while not condition():
        if time.perf_counter() - start > timeout:
            break
        time.sleep(0.05)
    return time.perf_counter() - start


def run_demo(
    workdir: Path, *, records: int, dim: int, phase_seconds: float, port: int, say: Callable[[str], None]
) -> DemoReport:
    """Run the demo in a fresh `workdir` (removed first if it exists)."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    return Demo(workdir.resolve(), records, dim, phase_seconds, port, say).run()
