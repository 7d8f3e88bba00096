"""A real FastAPI app on a real uvicorn, over real sqlite-blob -> sqlite-vec stores of 20,000
records of 384 dimensions, serving searches while writes go on (phase dual, half the tenants
read from the target, every read shadowed): with `AsyncRouter` the event loop never waits on a
store call (its lag stays far below one store call's time: median well under a millisecond, 99th
percentile under MAX_P99_LAG_MS, where a search takes 60-110 ms here); the same app calling the
sync `Router` from its async endpoints blocks the loop for whole store calls, which is what the
measurement exists to catch.

The issue's target, 5 ms at p99, is met on an idle 2-core machine, narrowly (median of runs
4.6 ms, runs 4.2-6.4), and not beside other work (6-8 ms with one busy core's worth, more on a
crowded host). What is left is mostly the app's own work on the loop: the same app with no store
behind it lags 2.2 ms at p99 (FastAPI decoding ~100 JSON bodies of 8 x 384 floats a second), 3.5
ms with dualvec validating them on the loop; the rest is the GIL and the cores shared with the
stores' threads. MAX_P99_LAG_MS leaves room for a busy CI machine; the README gives the numbers.

The lag is measured inside the app (async_app.py): a task sleeping 1 ms at a time records how
late it wakes. Run with `-s` to see the numbers.
"""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from async_app import DIM, SPEC

from dualvec import open_store
from dualvec.testing import make_records

pytestmark = pytest.mark.slow

RECORDS = 20_000
SEARCHERS = 3
WRITE_BATCH = 8  # records per write request
LOAD_SECONDS = 5.0
# A loop that waited on store calls would lag by whole calls (60-110 ms searches here) at p99;
# one that never does lags by its own request work, its host's scheduling and the GIL only.
MAX_P50_LAG_MS = 1.0
MAX_P99_LAG_MS = 40.0


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    """Both stores holding the same 20,000 records, as after a backfill; each app gets a copy."""
    data = tmp_path_factory.mktemp("collection")
    records = make_records(RECORDS, DIM)
    for url in (f"sqlite-blob://{data}/legacy.db", f"sqlite-vec://{data}/target.db"):
        with open_store(url, SPEC) as store:
            for start in range(0, RECORDS, 2000):
                store.upsert(records[start : start + 2000])
    return data


@dataclass
class App:
    proc: subprocess.Popen
    host: str
    port: int

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            status, answer = request(conn, method, path, body)
        finally:
            conn.close()
        return status, json.loads(answer)

    def stop(self) -> None:
        """SIGTERM: uvicorn drains, the lifespan closes the router, and uvicorn ends the process
        by the signal it stopped on."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            stdout, stderr = self.proc.communicate(timeout=30)
        assert (self.proc.returncode, stdout) == (-signal.SIGTERM, "closed\n"), stderr
        assert "Traceback" not in stderr, stderr


def request(
    conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None
) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def start_app(collection: Path, data: Path, mode: str) -> App:
    data.mkdir()
    for name in ("legacy.db", "target.db"):
        shutil.copy(collection / name, data / name)
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("async_app.py")), str(data), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("listening on http://"), (line, proc.poll())
    host, port = line.split("//")[1].strip().split(":")
    app = App(proc, host, int(port))
    deadline = time.monotonic() + 30
    while True:  # the lifespan opens the stores before requests are served
        try:
            if app.call("GET", "/lag")[0] == 200:
                return app
        except OSError:
            pass
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "the app did not start within 30 s"
        time.sleep(0.1)


@dataclass
class Load:
    searches: list[float] = field(default_factory=list)
    writes: list[float] = field(default_factory=list)
    written: int = 0
    failures: list[str] = field(default_factory=list)


def rounded(vector: np.ndarray) -> list[float]:
    """Six decimals, as embedding APIs send them (full float reprs would double the JSON)."""
    return np.round(vector.astype(np.float64), 6).tolist()


def request_bodies() -> tuple[list[bytes], list[bytes]]:
    """Search bodies (each its own tenant) and write bodies (batches of new records), encoded up
    front so the clients spend their time waiting on the app."""
    rng = np.random.default_rng(1)
    queries = [
        json.dumps({"vector": rounded(v), "k": 10, "routing_key": f"tenant-{i}"}).encode()
        for i, v in enumerate(rng.standard_normal((64, DIM)).astype(np.float32))
    ]
    fresh = make_records(WRITE_BATCH * 500, DIM, seed=2, prefix="live-")
    writes = [
        json.dumps(
            {
                "records": [
                    {"id": r.id, "vector": rounded(r.vector), "metadata": r.metadata}
                    for r in fresh[start : start + WRITE_BATCH]
                ]
            }
        ).encode()
        for start in range(0, len(fresh), WRITE_BATCH)
    ]
    return queries, writes


def apply_load(app: App, seconds: float, queries: list[bytes], writes: list[bytes]) -> Load:
    """SEARCHERS clients searching back to back and one client writing, for `seconds`."""
    load = Load()
    deadline = time.monotonic() + seconds

    def client(path: str, bodies: list[bytes], first: int, latencies: list[float]) -> None:
        conn = http.client.HTTPConnection(app.host, app.port, timeout=60)
        n = first
        while time.monotonic() < deadline and n < first + len(bodies):
            start = time.perf_counter()
            status, answer = request(conn, "POST", path, bodies[n % len(bodies)])
            latencies.append(time.perf_counter() - start)
            if status != 200:
                load.failures.append(f"{path} {status} {answer[:200]!r}")
            elif path == "/records":
                load.written += WRITE_BATCH
            n += 1
        conn.close()

    clients = [
        threading.Thread(target=client, args=("/search", queries, i * 16, load.searches))
        for i in range(SEARCHERS)
    ]
    clients.append(threading.Thread(target=client, args=("/records", writes, 0, load.writes)))
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    return load


def measure(app: App, seconds: float) -> tuple[dict, dict, Load]:
    """The loop's lag idle for a second, then under load for `seconds`."""
    app.call("POST", "/lag/reset")
    time.sleep(1.0)
    idle = app.call("GET", "/lag")[1]
    queries, writes = request_bodies()
    app.call("POST", "/lag/reset")
    load = apply_load(app, seconds, queries, writes)
    busy = app.call("GET", "/lag")[1]
    return idle, busy, load


def report(mode: str, idle: dict, busy: dict, load: Load) -> str:
    return (
        f"{mode}: lag p50/p99/max {busy['p50_ms']:.2f}/{busy['p99_ms']:.2f}/{busy['max_ms']:.1f} ms "
        f"over {busy['samples']:.0f} ticks (idle p99 {idle['p99_ms']:.2f} ms); "
        f"{len(load.searches)} searches (median {1000 * np.median(load.searches):.0f} ms), "
        f"{len(load.writes)} writes of {WRITE_BATCH} (median {1000 * np.median(load.writes):.0f} ms) "
        f"in {busy['seconds']:.0f} s"
    )


def test_the_event_loop_stays_responsive_while_the_stores_work(collection, tmp_path):
    app = start_app(collection, tmp_path / "async", "async")
    try:
        idle, busy, load = measure(app, LOAD_SECONDS)
        print("\n" + report("AsyncRouter", idle, busy, load))
        assert load.failures == []
        assert len(load.searches) >= 10 and load.written >= 2 * WRITE_BATCH, "the stores were not kept busy"
        _, counts = app.call("GET", "/count")
        assert counts == {"legacy": RECORDS + load.written, "target": RECORDS + load.written, "outbox": 0}
        assert busy["samples"] >= 100 * LOAD_SECONDS, "the lag monitor did not run through the load"
        assert busy["p50_ms"] < MAX_P50_LAG_MS
        assert busy["p99_ms"] < MAX_P99_LAG_MS
    finally:
        app.stop()


def test_the_sync_router_called_from_async_endpoints_blocks_the_loop(collection, tmp_path):
    """The evidence that the measurement above can fail: the same app and load, with the store
    calls made on the event loop itself."""
    app = start_app(collection, tmp_path / "sync", "sync")
    try:
        idle, busy, load = measure(app, 3.0)
        print("\n" + report("sync Router in async endpoints", idle, busy, load))
        assert load.failures == []
        assert busy["p99_ms"] > 4 * MAX_P99_LAG_MS
    finally:
        app.stop()
