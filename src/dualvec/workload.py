"""Live traffic through a Router, for the demo and end-to-end tests: reader threads with
routing keys and a writer that upserts and deletes, with caller-side latency per phase."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from dualvec.outbox import Role
from dualvec.records import Record
from dualvec.router import Router
from dualvec.testing.data import make_records

__all__ = ["PhaseTraffic", "Workload"]


@dataclass
class PhaseTraffic:
    """What callers saw during one phase: read latencies by the store that served them."""

    latencies: dict[Role, list[float]] = field(default_factory=lambda: {"legacy": [], "target": []})
    writes: int = 0
    errors: int = 0

    def percentile(self, role: Role, q: float) -> float | None:
        values = self.latencies[role]
        return float(np.percentile(values, q)) if values else None


class Workload:
    """Readers and one writer hitting `router` until `stop()`; `phase` labels what they record."""

    def __init__(
        self,
        router: Router,
        *,
        readers: int = 2,
        write_batch: int = 10,
        write_pause: float = 0.02,
        live_ids: int = 2000,
        keys: int = 1000,
        seed: int = 0,
        make: Callable[[int, int, int], list[Record]] = make_records,
        queries: npt.NDArray[np.float32] | None = None,
    ) -> None:
        """`make(n, dim, seed)` makes the records the writer upserts (their ids are replaced);
        readers search `queries` (default: 256 random directions)."""
        self.router = router
        self.phase = "start"
        self.traffic: dict[str, PhaseTraffic] = defaultdict(PhaseTraffic)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._write_batch = write_batch
        self._write_pause = write_pause
        self._live_ids = live_ids
        self._keys = keys
        self._seed = seed
        self._make = make
        dim = router.spec.dim
        self._queries = (
            queries
            if queries is not None
            else np.random.default_rng(seed).standard_normal((256, dim)).astype(np.float32)
        )
        self._threads = [
            threading.Thread(target=self._read, args=(i,), name=f"demo-reader-{i}", daemon=True)
            for i in range(readers)
        ] + [threading.Thread(target=self._write, name="demo-writer", daemon=True)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _read(self, worker: int) -> None:
        rng = np.random.default_rng([self._seed, worker])
        while not self._stop.is_set():
            key = f"user-{rng.integers(self._keys)}"
            query = self._queries[rng.integers(len(self._queries))]
            served: Role = "target" if self.router.reads_target(self.router.flags.flags, key) else "legacy"
            start = time.perf_counter()
            try:
                self.router.search(query, k=10, routing_key=key)
            except Exception:
                with self._lock:
                    self.traffic[self.phase].errors += 1
                continue
            elapsed = time.perf_counter() - start
            with self._lock:
                self.traffic[self.phase].latencies[served].append(elapsed)

    def _write(self) -> None:
        rng = np.random.default_rng([self._seed, 99])
        dim = self.router.spec.dim
        step = 0
        while not self._stop.wait(self._write_pause):
            step += 1
            ids = [f"live-{i}" for i in rng.choice(self._live_ids, self._write_batch, replace=False)]
            try:
                if rng.random() < 0.1:
                    self.router.delete(ids[:2])
                else:
                    fresh = self._make(len(ids), dim, int(rng.integers(1 << 31)))
                    self.router.upsert(
                        [Record(i, r.vector, r.metadata) for i, r in zip(ids, fresh, strict=True)]
                    )
            except Exception:
                with self._lock:
                    self.traffic[self.phase].errors += 1
                continue
            with self._lock:
                self.traffic[self.phase].writes += 1
