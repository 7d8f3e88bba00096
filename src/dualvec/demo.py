"""`dualvec demo`: the whole migration, on a generated legacy LanceDB collection, under live
traffic, ending in a report where every number was measured in this run.

Steps: build the legacy collection; route it in phase legacy; dual; backfill; verify; shadow
100%; read 10% -> 50% -> 100%; an injected sqlite-vec outage (another process holds its write
lock) that the outbox repairs; rollback and re-ramp; target-primary with a final verify; target.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dualvec.backfill import backfill
from dualvec.metrics import DualvecMetrics
from dualvec.metrics_server import start_metrics_server
from dualvec.outbox import Role
from dualvec.phases import change_flags, record_verify, rollback_flags
from dualvec.records import Record
from dualvec.registry import open_store
from dualvec.router import Router
from dualvec.settings import CollectionConfig, Flags, Phase, Settings, ShadowSettings
from dualvec.spec import CollectionSpec
from dualvec.testing.data import SAMPLE_FIELDS
from dualvec.testing.faults import sqlite_locked
from dualvec.verify import verify
from dualvec.workload import Workload

__all__ = ["DemoReport", "PhaseReport", "run_demo"]

LANGS = ("en", "fr", "de", "es", "it")


@dataclass
class PhaseReport:
    name: str
    seconds: float
    reads: dict[str, int]
    p50_ms: dict[str, float | None]
    p95_ms: dict[str, float | None]
    writes: int
    caller_errors: int
    shadow_compared: int
    mismatches: int
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
    backfill: dict[str, Any] = field(default_factory=dict)
    verifies: dict[str, dict[str, Any]] = field(default_factory=dict)
    phases: list[PhaseReport] = field(default_factory=list)
    total_seconds: float = 0.0


def _generate(spec: CollectionSpec, n: int, seed: int) -> list[list[Record]]:
    """Clustered vectors (like real embeddings, unlike uniform noise) with varied metadata."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((32, spec.dim)).astype(np.float32)
    batches = []
    for start in range(0, n, 2000):
        size = min(2000, n - start)
        vectors = centres[rng.integers(32, size=size)] + 0.3 * rng.standard_normal((size, spec.dim))
        batches.append(
            [
                Record(
                    f"doc-{start + i}",
                    vectors[i].astype(np.float32),
                    {
                        "lang": LANGS[int(rng.integers(len(LANGS)))],
                        "year": int(rng.integers(2000, 2026)),
                        "score": float(rng.random()),
                        "public": bool(rng.random() < 0.5),
                        "title": f"document {start + i}",
                    },
                )
                for i in range(size)
            ]
        )
    return batches


class _Counters:
    """Reads the router's own Prometheus samples, so the report shows what the dashboard shows."""

    def __init__(self, metrics: DualvecMetrics, collection: str) -> None:
        self._registry = metrics.registry
        self._collection = collection

    def value(self, name: str, **labels: str) -> float:
        return self._registry.get_sample_value(name, {"collection": self._collection, **labels}) or 0.0

    def snapshot(self) -> dict[str, float]:
        return {
            "compared": sum(
                self.value("dualvec_shadow_comparisons_total", outcome=o) for o in ("match", "mismatch")
            ),
            "mismatches": self.value("dualvec_shadow_comparisons_total", outcome="mismatch"),
            "recall_sum": self.value("dualvec_shadow_recall_sum"),
            "recall_count": self.value("dualvec_shadow_recall_count"),
            "failures": sum(
                self.value("dualvec_write_failures_total", store=s, op=o)
                for s in ("legacy", "target")
                for o in ("upsert", "delete")
            ),
            "repairs": sum(self.value("dualvec_repairs_total", kind=k) for k in ("upsert", "delete")),
        }


class Demo:
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
        self.spec = CollectionSpec(
            name="docs", dim=dim, metric="cosine", model="demo-embedder", fields=SAMPLE_FIELDS
        )
        self.settings = Settings(
            phase=Phase.LEGACY,
            collection="docs",
            collections={
                "docs": CollectionConfig(
                    dim=dim, metric="cosine", model="demo-embedder", fields=dict(SAMPLE_FIELDS)
                )
            },
            legacy_url=f"lancedb://{workdir}/legacy",
            target_url=f"sqlite-vec://{workdir}/target.db?busy_timeout=0.05",
            flag_file=workdir / "flags.json",
            outbox_path=workdir / "outbox.db",
            replay_interval_seconds=0.5,
            flag_poll_seconds=0.1,
            shadow=ShadowSettings(mismatch_log=workdir / "mismatches.jsonl"),
        )
        self.metrics = DualvecMetrics()
        self.counters = _Counters(self.metrics, self.spec.name)
        self.port = port

    def build_legacy(self) -> float:
        start = time.perf_counter()
        legacy = open_store(self.settings.legacy_url, self.spec)
        try:
            for batch in _generate(self.spec, self.records, seed=1):
                legacy.upsert(batch)
        finally:
            legacy.close()
        return time.perf_counter() - start

    def set_flags(self, router: Router, **changes: Any) -> None:
        """Change flags through the phase rules, as an operator would, and wait for the router."""
        flags = change_flags(self.settings, changes, collection=self.spec.name)[self.spec.name].flags
        self._await(router, flags)

    def rollback(self, router: Router) -> None:
        self._await(router, rollback_flags(self.settings, self.spec.name)[self.spec.name].flags)

    @staticmethod
    def _await(router: Router, flags: Flags) -> None:
        deadline = time.monotonic() + 2.0
        while router.flags.flags != flags and time.monotonic() < deadline:
            time.sleep(0.02)

    def run(self) -> DemoReport:
        began = time.perf_counter()
        self.say(f"building legacy LanceDB collection: {self.records} x {self.spec.dim}")
        build = self.build_legacy()
        router = Router.from_settings(self.settings, metrics=self.metrics)
        server = start_metrics_server(self.metrics, port=self.port)
        self.say(f"metrics: {server.url}")
        report = DemoReport(self.records, self.spec.dim, server.url, build)
        workload = Workload(router)
        workload.start()
        try:
            self._walk(router, workload, report)
        finally:
            workload.stop()
            router.close()
            server.close()
        report.total_seconds = time.perf_counter() - began
        return report

    def _phase(
        self, workload: Workload, report: DemoReport, name: str, body: Callable[[], str] | None = None
    ) -> None:
        """Run traffic for one phase (and `body`, if any) and record what callers and metrics saw."""
        self.say(f"phase {name}")
        workload.phase = name
        before = self.counters.snapshot()
        start = time.perf_counter()
        notes = body() if body else ""
        remaining = self.phase_seconds - (time.perf_counter() - start)
        if remaining > 0:
            time.sleep(remaining)
        after = self.counters.snapshot()
        traffic = workload.traffic[name]
        delta = {k: after[k] - before[k] for k in after}
        report.phases.append(
            PhaseReport(
                name=name,
                seconds=round(time.perf_counter() - start, 2),
                reads={role: len(v) for role, v in traffic.latencies.items()},
                p50_ms={r: _ms(traffic.percentile(r, 50)) for r in ("legacy", "target")},
                p95_ms={r: _ms(traffic.percentile(r, 95)) for r in ("legacy", "target")},
                writes=traffic.writes,
                caller_errors=traffic.errors,
                shadow_compared=int(delta["compared"]),
                mismatches=int(delta["mismatches"]),
                mean_recall=(delta["recall_sum"] / delta["recall_count"]) if delta["recall_count"] else None,
                secondary_write_failures=int(delta["failures"]),
                repairs=int(delta["repairs"]),
                notes=notes,
            )
        )

    def _walk(self, router: Router, workload: Workload, report: DemoReport) -> None:
        self._phase(workload, report, "legacy")
        self.set_flags(router, phase=Phase.DUAL)
        self._phase(workload, report, "dual")

        def run_backfill() -> str:
            result = backfill(
                router.stores["legacy"], router.stores["target"], router.outbox, batch_size=1000
            )
            report.backfill = {
                "copied": result.copied,
                "seconds": round(result.seconds, 2),
                "records_per_second": round(result.copied / max(result.seconds, 1e-9)),
            }
            return f"copied {result.copied} in {result.seconds:.1f} s"

        self._phase(workload, report, "backfill", run_backfill)

        def run_verify(label: str, primary: Role = "legacy") -> Callable[[], str]:
            def body() -> str:
                result = verify(
                    router.stores["legacy"],
                    router.stores["target"],
                    router.outbox,
                    primary=primary,
                    repair=True,
                )
                report.verifies[label] = result.as_dict()
                record_verify(self.settings, self.spec.name, result)
                return result.summary()

            return body

        self._phase(workload, report, "verify", run_verify("after backfill"))
        self.set_flags(router, shadow_percent=100.0)
        self._phase(workload, report, "shadow 100%")
        for percent in (10.0, 50.0, 100.0):
            self.set_flags(router, read_percent=percent)
            self._phase(workload, report, f"read {percent:.0f}%")

        def outage() -> str:
            with sqlite_locked(self.workdir / "target.db"):
                time.sleep(min(2.0, self.phase_seconds / 2))
                depth = router.outbox.stats().depth
            drained = _wait_for(lambda: router.outbox.stats().depth == 0, timeout=30)
            return f"outbox peaked at >= {depth} ids; drained in {drained:.1f} s"

        self._phase(workload, report, "sqlite-vec outage", outage)
        self.rollback(router)
        self._phase(workload, report, "rollback")
        self.set_flags(router, read_percent=100.0)
        self._phase(workload, report, "re-ramp 100%")
        _wait_for(lambda: router.outbox.stats().depth == 0, timeout=30)
        self.set_flags(router, phase=Phase.TARGET_PRIMARY, shadow_percent=10.0)
        self._phase(workload, report, "target-primary", run_verify("final (target-primary)", "target"))
        self.set_flags(router, shadow_percent=0.0)
        self.set_flags(router, phase=Phase.TARGET)
        self._phase(workload, report, "target")


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
