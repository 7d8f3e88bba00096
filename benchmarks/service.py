"""Service benchmark: what `dualvec serve` adds to a search and to an upsert, against the same
migration called in-process, and where that time goes.

Setup: one config file (phase dual, read_percent 100, shadow 0; per collection a sqlite-blob
legacy and a sqlite-vec target) opened twice: by `Migration.from_settings` in this process (the
in-process side) and by a real `dualvec serve --no-replay` subprocess on 127.0.0.1 and a free
port (the HTTP side). Both use the very same SQLite files through the same Router code.

- search: collection `bench`, 384 dimensions, cosine, k=10, `dualvec.testing.make_records`
  written straight into the sqlite-vec target (at read_percent 100 reads never reach the
  legacy store, so it stays empty). Queries are random float32 vectors, sent as JSON numbers
  (`vector`: each float32 as the float64 number equal to it, what `json.dumps(v.tolist())`
  writes) or compact (`vector_b64`); bodies are encoded before timing. The client is
  `http.client`, one keep-alive connection per client thread, and it parses every answer.
  - 1 client: per query, each path takes its turn, in rotating order: in-process
    `router.search`, HTTP JSON, HTTP compact, and three floor endpoints served by this script
    (`--floor-server`) under the same uvicorn settings as `dualvec serve`, each doing a step
    more of what the search endpoint does before searching: `/async` reads the body (an async
    endpoint), `/sync` also hands over to a worker thread (a sync endpoint), `/validate` also
    parses and validates a `SearchRequest` through the service's `JSONRoute`. "added" is the
    median of per-query differences against in-process; the steps are medians of per-query
    differences between neighbouring paths. Per query, the scheduler's accounts are read too
    (Linux schedstat, outside the timed span): time on a core and time runnable but waiting
    for one, of this thread (the in-process search, or the HTTP client) and of the service's
    threads.
  - 8 clients: 8 threads in this process, each searching back to back for --seconds,
    in-process (8 threads calling `router.search`) or over HTTP (8 connections); the three
    paths take turns for --rounds rounds. Threads, not processes: a client thread spends well
    under a millisecond of CPU per query against a search of tens of milliseconds at 100k,
    so the client's GIL does not limit it; its CPU still competes with the service for the
    cores, which the in-process side does not pay. Throughput is queries / wall time over
    all rounds; latency percentiles pool every query.
- upsert: batches of --batch new records (384 d) in turn in-process (`router.upsert`), over
  HTTP as JSON numbers and over HTTP compact, in phase dual (sqlite-blob + sqlite-vec + the
  outbox, collection `ingest_dual`) and in phase target (sqlite-vec alone, `ingest_target`,
  set by a per-collection override in the flag file). Bodies are encoded before timing;
  rows/s over total times (WAL checkpoints make batch times bimodal).
- profile: py-spy (`pip install py-spy`; skipped when missing) samples the service with
  `--gil --nonblocking` while one client sends JSON searches at 10k for --profile-seconds:
  only the thread holding the GIL is sampled, so the sqlite-vec scan (which releases it) and
  idle waits drop out and what remains is the service's Python work. Each sample goes to the
  stage of the innermost frame whose file names one (body parsing, request validation and
  dependencies, vector decoding, router, store, answer encoding, thread hand-off, HTTP server
  and event loop); samples / rate / requests gives µs per request. A thread that is preempted
  while it holds the GIL keeps being sampled, so on a busy machine the thread hand-off
  (`call_soon_threadsafe` right after the search, waking the event loop) collects the time the
  woken loop waits for it. The collapsed stacks go to benchmarks/results/service-profile.txt.

Targets, printed as PASS/FAIL:

- 1 client, 10k: HTTP JSON adds <= 1.0 ms at p50 over in-process; compact adds less than JSON;
- 8 clients, 100k: HTTP throughput >= 0.9 x in-process (JSON and compact);
- upsert: compact rows/s >= 2 x JSON rows/s (each phase).

Run (about 6 minutes on 2 idle cores, longer on a busy machine):

    .venv/bin/python benchmarks/service.py
    .venv/bin/python benchmarks/service.py --sections search --sizes 10000 --queries 100

Prints Markdown tables on stdout and progress on stderr; writes the full numbers to
benchmarks/results/service.json.
"""

from __future__ import annotations

import argparse
import base64
import glob
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import numpy as np
from _common import (
    CHECK_HEADERS,
    RESULTS_DIR,
    add_sizes,
    add_subset,
    as_records,
    benchmark_parser,
    count_cell,
    latency,
    machine,
    markdown_table,
    median,
    ms_cell,
    package_versions,
    progress,
    rate,
    rotated,
    run_json_worker,
    verdict,
    write_results,
)
from fastapi import APIRouter, Depends, FastAPI, Request, Response

from dualvec import Record
from dualvec.flags import FlagFile, FlagOverrides, write_flag_file
from dualvec.migration import Migration
from dualvec.service.fast_json import JSONRoute
from dualvec.service.listen import listen
from dualvec.service.models import SearchRequest
from dualvec.service.server import run, stop_signals
from dualvec.settings import Phase, load_settings
from dualvec.testing import make_records, sample_spec

SECTIONS = ("search", "upsert")
SIZES = (10_000, 100_000)
DIM = 384
K = 10
LOAD_BATCH = 1000
CLIENTS = 8
PROFILE_SIZE = 10_000
PROFILE_HZ = 200
ADDED_TARGET_MS = 1.0
ADDED_SIZE = 10_000
THROUGHPUT_TARGET = 0.9
THROUGHPUT_SIZE = 100_000
UPSERT_TARGET = 2.0
SPEC = sample_spec(name="bench", dim=DIM, model="bench-embedder")
SEARCH = "bench"
INGEST = {Phase.DUAL: "ingest_dual", Phase.TARGET: "ingest_target"}
FORMS = ("json", "b64")
DUALVEC = Path(sys.executable).with_name("dualvec")
PY_SPY = Path(sys.executable).with_name("py-spy")
_SERVING = re.compile(r"serving \d+ collection\(s\) on (http://\S+)")


# the config both sides open


def _fields_toml() -> str:
    return (
        "{ "
        + ", ".join(
            f'{name} = {{ type = "{f.type}", filterable = {str(f.filterable).lower()} }}'
            for name, f in SPEC.fields.items()
        )
        + " }"
    )


def write_config(folder: Path) -> Path:
    """The service's config (and the in-process side's, through DUALVEC_CONFIG) and flag file."""
    tables = "".join(
        f"""
[collections.{name}]
dim = {DIM}
metric = "{SPEC.metric}"
model = "{SPEC.model}"
fields = {_fields_toml()}
legacy_url = "sqlite-blob://{folder}/{name}-legacy.db"
target_url = "sqlite-vec://{folder}/{name}-target.db"
"""
        for name in (SEARCH, *INGEST.values())
    )
    config = folder / "dualvec.toml"
    config.write_text(
        f"""phase = "dual"
read_percent = 100
flag_file = "{folder}/flags.json"
outbox_path = "{folder}/outbox.db"
replay_interval_seconds = 3600
{tables}"""
    )
    write_flag_file(
        folder / "flags.json",
        FlagFile(
            phase=Phase.DUAL,
            read_percent=100,
            collections={INGEST[Phase.TARGET]: FlagOverrides(phase=Phase.TARGET)},
        ),
    )
    return config


@contextmanager
def opened(folder: Path) -> Iterator[tuple[Migration, dict[str, str]]]:
    """The in-process migration over the config in `folder`, and the environment for the service."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUALVEC_")}
    env["DUALVEC_CONFIG"] = str(write_config(folder))
    os.environ["DUALVEC_CONFIG"] = env["DUALVEC_CONFIG"]
    migration = Migration.from_settings(load_settings(), start_replayer=False)
    try:
        yield migration, env
    finally:
        migration.close()


# servers


@dataclass
class Server:
    """A server subprocess that prints `serving N collection(s) on URL` on stderr when it listens."""

    proc: subprocess.Popen[bytes]
    host: str
    port: int

    @classmethod
    def start(cls, command: Sequence[str], env: dict[str, str], log: Path, timeout: float = 60) -> Server:
        with log.open("wb") as sink:
            proc = subprocess.Popen(command, env=env, cwd=log.parent, stderr=sink)
        deadline = time.monotonic() + timeout
        while True:
            found = _SERVING.search(log.read_text(errors="replace"))
            if found:
                url = urlsplit(found.group(1))
                assert url.hostname is not None and url.port is not None
                server = cls(proc, url.hostname, url.port)
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"{command[0]} did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)
        with Client(server) as client:
            while client.get("/readyz") != 200:
                if time.monotonic() > deadline:
                    server.stop()
                    raise RuntimeError(f"{command[0]} not ready within {timeout:.0f} s")
                time.sleep(0.05)
        return server

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def sched_ns(self) -> dict[str, np.ndarray]:
        """Per thread alive now: [time on a core, time waiting for one], in ns."""
        return sched(f"/proc/{self.proc.pid}/task/*/schedstat")

    def cpu_seconds(self) -> float:
        """CPU time of the whole process so far, ended threads included (clock-tick resolution)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sched(pattern: str) -> dict[str, np.ndarray]:
    """Per thread that /proc `pattern` names: [time on a core, time runnable but waiting for a
    core], in ns (Linux schedstat)."""
    found = {}
    for path in glob.glob(pattern):
        try:
            on_cpu, waiting, _ = Path(path).read_text().split()
        except (OSError, ValueError):
            continue  # a thread that ended meanwhile
        found[path] = np.array([int(on_cpu), int(waiting)], dtype=np.int64)
    return found


def sched_delta(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> np.ndarray:
    """What the threads alive at both readings spent in between (an idle worker thread may end,
    or a new one start, between two requests)."""
    total = np.zeros(2, dtype=np.int64)
    for thread, values in after.items():
        if thread in before:
            total += values - before[thread]
    return total


def own_sched_ns() -> np.ndarray:
    """[time on a core, time waiting for one] of the calling thread, in ns. The kernel brings a
    running thread's time on a core up to date only at its next tick, so that one comes from
    `thread_time_ns`."""
    (own,) = sched(f"/proc/self/task/{threading.get_native_id()}/schedstat").values()
    return np.array([time.thread_time_ns(), own[1]], dtype=np.int64)


class Client:
    """One keep-alive HTTP/1.1 connection, as an application's client pool holds."""

    def __init__(self, server: Server) -> None:
        self._conn = http.client.HTTPConnection(server.host, server.port, timeout=120)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.close()

    def get(self, path: str) -> int:
        try:
            self._conn.request("GET", path)
            response = self._conn.getresponse()
            response.read()
        except OSError:
            self._conn.close()
            return 0
        return response.status

    def post(self, path: str, body: bytes) -> Any:
        """The parsed answer; anything but 200 is an error."""
        self._conn.request("POST", path, body, {"Content-Type": "application/json"})
        response = self._conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"POST {path}: {response.status} {data[:300]!r}")
        return json.loads(data)


async def _read_body(request: Request) -> None:
    await request.body()


def serve_floor() -> None:
    """The floor server (`--floor-server`), under the same uvicorn settings as `dualvec serve`:
    endpoints doing ever more of what the search endpoint does before the search, each answering
    `{}`. `/async` reads the body on the event loop; `/sync` also hands over to a worker thread
    (a sync endpoint); `/validate` also parses and validates the body as a `SearchRequest`, through
    the service's own `JSONRoute`."""
    app = FastAPI()
    router = APIRouter(route_class=JSONRoute)

    @router.get("/readyz")
    async def ready() -> Response:
        return Response(b"{}", media_type="application/json")

    @router.post("/async")
    async def floor_async(request: Request) -> Response:
        await request.body()
        return Response(b"{}", media_type="application/json")

    @router.post("/sync")
    def floor_sync(_: Annotated[None, Depends(_read_body)]) -> Response:
        return Response(b"{}", media_type="application/json")

    @router.post("/validate")
    def floor_validate(body: SearchRequest) -> Response:
        return Response(b"{}", media_type="application/json")

    app.include_router(router)
    with stop_signals() as stop, listen("127.0.0.1", 0) as sock:
        print(
            f"serving 0 collection(s) on http://127.0.0.1:{sock.getsockname()[1]}",
            file=sys.stderr,
            flush=True,
        )
        run(app, sock, stop)


def b64(vector: np.ndarray) -> str:
    return base64.b64encode(vector.astype("<f4").tobytes()).decode()


def search_body(vector: np.ndarray, form: str) -> bytes:
    encoded = {"vector": vector.tolist()} if form == "json" else {"vector_b64": b64(vector)}
    return json.dumps({**encoded, "k": K}).encode()


# search


def load(migration: Migration, n: int) -> None:
    target = migration[SEARCH].stores["target"]
    for start in range(0, n, LOAD_BATCH):
        target.upsert(make_records(min(LOAD_BATCH, n - start), DIM, seed=start, prefix=f"doc-{start}-"))


# The floor server's paths, each doing a step more of what the search endpoint does.
FLOOR_PATHS = ("async", "sync", "validate")
# The added latency of a JSON search, step by step: (stage, path, paths it adds to).
STEPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("HTTP round trip, uvicorn, FastAPI (no-op async endpoint)", "async", ()),
    ("thread hand-off (no-op sync endpoint)", "sync", ("async",)),
    ("body parsing and validation (`SearchRequest`, JSON numbers)", "validate", ("sync",)),
    (
        "the rest: dependencies, vector to numpy, answer to JSON, error middleware",
        "json",
        ("validate", "in-process"),
    ),
)


def one_client(
    migration: Migration, service: Server, floor: Server, vectors: np.ndarray, warmup: int
) -> dict[str, Any]:
    router = migration[SEARCH]
    path = f"/collections/{SEARCH}/search"
    bodies = {form: [search_body(v, form) for v in vectors] for form in FORMS}
    samples: dict[str, list[int]] = {name: [] for name in ("in-process", *FORMS, *FLOOR_PATHS)}
    same = True
    with Client(service) as client, Client(floor) as bare:
        calls: list[tuple[str, Callable[[int], Any]]] = [
            ("in-process", lambda i: [h.id for h in router.search(vectors[i], k=K)]),
            *(
                (form, lambda i, form=form: [h["id"] for h in client.post(path, bodies[form][i])["hits"]])
                for form in FORMS
            ),
            *((name, lambda i, name=name: bare.post(f"/{name}", bodies["json"][i])) for name in FLOOR_PATHS),
        ]
        # Scheduler time, summed over the timed queries: [on a core, waiting for one] of this
        # thread (the in-process search, or the HTTP client) and of the service's threads, read
        # outside the timed span.
        own: dict[str, np.ndarray] = {name: np.zeros(2, dtype=np.int64) for name in ("in-process", *FORMS)}
        served: dict[str, np.ndarray] = {form: np.zeros(2, dtype=np.int64) for form in FORMS}
        for i in range(len(vectors)):
            answers = {}
            for name, call in rotated(calls, i):
                service_before = service.sched_ns() if name in FORMS else None
                own_before = own_sched_ns()
                start = time.perf_counter_ns()
                answers[name] = call(i)
                elapsed = time.perf_counter_ns() - start
                own_after = own_sched_ns()
                if i < warmup:
                    continue
                samples[name].append(elapsed)
                if name in own:
                    own[name] += own_after - own_before
                if service_before is not None:
                    served[name] += sched_delta(service_before, service.sched_ns())
            same = same and answers["in-process"] == answers["json"] == answers["b64"]
    timed = len(vectors) - warmup

    def difference(name: str, *bases: str) -> float:
        """Median over queries of `name`'s time less the `bases`' times for the same query."""
        timed = zip(samples[name], *(samples[base] for base in bases), strict=True)
        return median([(first - sum(rest)) / 1e6 for first, *rest in timed])

    return {
        **{name: latency(ns) for name, ns in samples.items()},
        "added_ms": {form: difference(form, "in-process") for form in FORMS},
        "steps_ms": {stage: difference(name, *bases) for stage, name, bases in STEPS},
        "sched_ms": {
            "in-process search": (own["in-process"] / timed / 1e6).tolist(),
            **{f"{form} service": (served[form] / timed / 1e6).tolist() for form in FORMS},
            **{f"{form} client": (own[form] / timed / 1e6).tolist() for form in FORMS},
        },
        "same_answers": same,
        "body_bytes": {form: len(bodies[form][0]) for form in FORMS},
    }


def concurrent(calls: list[Callable[[int], Any]], seconds: float) -> tuple[list[int], float]:
    """Each call (one per client thread) back to back for `seconds`: per-query ns and the wall
    time until the last thread finished."""
    samples: list[list[int]] = [[] for _ in calls]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(calls) + 1)

    def loop(j: int) -> None:
        barrier.wait()
        deadline = time.perf_counter() + seconds
        i = j
        try:
            while time.perf_counter() < deadline:
                start = time.perf_counter_ns()
                calls[j](i)
                samples[j].append(time.perf_counter_ns() - start)
                i += len(calls)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(j,)) for j in range(len(calls))]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"a client failed: {errors[0]!r}") from errors[0]
    return [ns for thread in samples for ns in thread], wall


def many_clients(
    migration: Migration, service: Server, vectors: np.ndarray, rounds: int, seconds: float
) -> dict[str, Any]:
    router = migration[SEARCH]
    path = f"/collections/{SEARCH}/search"
    bodies = {form: [search_body(v, form) for v in vectors] for form in FORMS}
    size = len(vectors)
    samples: dict[str, list[int]] = {"in-process": [], "json": [], "b64": []}
    queries: dict[str, int] = dict.fromkeys(samples, 0)
    walls: dict[str, float] = dict.fromkeys(samples, 0.0)
    for r in range(rounds):
        for mode in rotated(list(samples), r):
            clients = [Client(service) for _ in range(CLIENTS)] if mode != "in-process" else []
            if mode == "in-process":
                calls = [lambda i: router.search(vectors[i % size], k=K) for _ in range(CLIENTS)]
            else:
                calls = [
                    lambda i, c=c, sent=bodies[mode]: c.post(path, sent[i % size])  # type: ignore[misc]
                    for c in clients
                ]
            try:
                ns, wall = concurrent(calls, seconds)
            finally:
                for c in clients:
                    c.__exit__()
            samples[mode] += ns
            queries[mode] += len(ns)
            walls[mode] += wall
    qps = {mode: queries[mode] / walls[mode] for mode in samples}
    return {
        "clients": CLIENTS,
        **{mode: {**latency(ns), "qps": qps[mode]} for mode, ns in samples.items()},
        "ratio": {form: qps[form] / qps["in-process"] for form in FORMS},
    }


# profile

# Stages, by the innermost frame whose file (py-spy --full-filenames) names one.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("store: query, rows to hits (the scan itself releases the GIL; as in-process)", ("dualvec/stores/",)),
    (
        "router: validation, routing, metrics (as in-process)",
        (
            "dualvec/router.py",
            "dualvec/routing.py",
            "dualvec/validation.py",
            "dualvec/metrics.py",
            "dualvec/flags.py",
            "prometheus_client/",
        ),
    ),
    ("vector decoding", ("dualvec/service/vectors.py",)),
    (
        "answer: hits to JSON",
        ("dualvec/service/data.py", "dualvec/service/encoding.py", "starlette/responses.py"),
    ),
    ("body parsing (JSON)", ("dualvec/service/fast_json.py",)),
    (
        "request validation (pydantic, dependencies)",
        ("fastapi/dependencies/", "fastapi/_compat", "pydantic/", "dualvec/service/state.py"),
    ),
    ("thread hand-off (anyio worker threads)", ("anyio/", "starlette/concurrency.py")),
    (
        "HTTP server and event loop (uvicorn, starlette, FastAPI routing)",
        ("uvicorn/", "starlette/", "fastapi/", "asyncio/", "dualvec/service/"),
    ),
)


def stage_of(stack: list[str]) -> str:
    for frame in reversed(stack):
        for stage, markers in STAGES:
            if any(marker in frame for marker in markers):
                return stage
    return "other"


def profile(service: Server, bodies: list[bytes], seconds: float, folder: Path) -> dict[str, Any]:
    """py-spy on the service while one client sends JSON searches back to back: the time its
    threads hold the GIL (Python's own work; sqlite-vec's scan and idle waits release it), per
    stage, per request."""
    if not PY_SPY.exists():
        return {"status": "skipped", "reason": "py-spy is not installed (pip install py-spy)"}
    path = f"/collections/{SEARCH}/search"
    raw = folder / "profile.txt"
    log = folder / "py-spy.log"
    command = [str(PY_SPY), "record", "--pid", str(service.proc.pid), "--rate", str(PROFILE_HZ)]
    command += ["--duration", str(round(seconds)), "--gil", "--nonblocking", "--threads"]
    command += ["--full-filenames", "--format", "raw", "-o", str(raw)]
    with log.open("wb") as sink:
        spy = subprocess.Popen(command, stdout=sink, stderr=sink)
    requests = 0
    with Client(service) as client:
        cpu_start, start = service.cpu_seconds(), time.perf_counter()
        while spy.poll() is None:
            client.post(path, bodies[requests % len(bodies)])
            requests += 1
        cpu = service.cpu_seconds() - cpu_start
        wall = time.perf_counter() - start
    if not raw.exists():
        return {"status": "error", "reason": log.read_text(errors="replace")[-500:]}
    shutil.copy(raw, RESULTS_DIR / "service-profile.txt")  # collapsed stacks, for flamegraph.pl
    counts: dict[str, int] = {}
    threads: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack_text, _, count = line.rpartition(" ")
        thread, *frames = stack_text.split(";")  # "thread (TID): NAME", then root to leaf
        name = thread.partition(": ")[2]
        kind = "event loop" if name == "MainThread" else "worker threads" if "AnyIO" in name else "other"
        threads[kind] = threads.get(kind, 0) + int(count)
        stage = stage_of(frames)
        counts[stage] = counts.get(stage, 0) + int(count)
    per_request_us = 1e6 / PROFILE_HZ / requests
    return {
        "status": "ok",
        "requests": requests,
        "rate_hz": PROFILE_HZ,
        "wall_ms_per_request": wall / requests * 1e3,
        "process_cpu_us_per_request": cpu / requests * 1e6,
        "gil_us_per_request": sum(counts.values()) * per_request_us,
        "stages_us_per_request": {
            stage: n * per_request_us for stage, n in sorted(counts.items(), key=lambda item: -item[1])
        },
        "threads_us_per_request": {kind: n * per_request_us for kind, n in threads.items()},
        "py_spy_log": log.read_text(errors="replace")[-300:],
    }


def measure_search(n: int, args: argparse.Namespace) -> dict[str, Any]:
    warmup = 5
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((warmup + args.queries, DIM), dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="dualvec-bench-") as tmp:
        folder = Path(tmp)
        with opened(folder) as (migration, env):
            start = time.perf_counter()
            load(migration, n)
            built = time.perf_counter() - start
            service = Server.start(
                [str(DUALVEC), "serve", "--port", "0", "--no-replay"], env, folder / "serve.log"
            )
            try:
                floor = Server.start([sys.executable, __file__, "--floor-server"], env, folder / "floor.log")
                try:
                    single = one_client(migration, service, floor, vectors, warmup)
                finally:
                    floor.stop()
                many = many_clients(migration, service, vectors, args.rounds, args.seconds)
                profiled = (
                    profile(service, [search_body(v, "json") for v in vectors], args.profile_seconds, folder)
                    if n == PROFILE_SIZE and args.profile_seconds > 0
                    else {"status": "skipped", "reason": f"profiled at {PROFILE_SIZE:,} only"}
                )
            finally:
                service.stop()
    return {
        "status": "ok",
        "n": n,
        "build_s": built,
        "one_client": single,
        "many_clients": many,
        "profile": profiled,
    }


# upsert


def upsert_body(records: list[Record], form: str) -> bytes:
    rows = [
        {
            "id": r.id,
            **(
                {"vector": np.asarray(r.vector).tolist()}
                if form == "json"
                else {"vector_b64": b64(np.asarray(r.vector))}
            ),
            "metadata": r.metadata,
        }
        for r in records
    ]
    return json.dumps({"records": rows}).encode()


def measure_upsert(args: argparse.Namespace) -> dict[str, Any]:
    modes = ("in-process", *FORMS)
    result: dict[str, Any] = {"status": "ok", "batch": args.batch, "rounds": args.upsert_rounds}
    with tempfile.TemporaryDirectory(prefix="dualvec-bench-") as tmp:
        folder = Path(tmp)
        with opened(folder) as (migration, env):
            service = Server.start(
                [str(DUALVEC), "serve", "--port", "0", "--no-replay"], env, folder / "serve.log"
            )
            try:
                with Client(service) as client:
                    for phase, name in INGEST.items():
                        router = migration[name]
                        path = f"/collections/{name}/records"
                        samples: dict[str, list[int]] = {mode: [] for mode in modes}
                        body_bytes: dict[str, int] = {}
                        seed = 0
                        for r in range(args.upsert_rounds):
                            for mode in rotated(list(modes), r):
                                seed += 1
                                batch = make_records(args.batch, DIM, seed=seed, prefix=f"{mode}-{r}-")
                                if mode == "in-process":
                                    start = time.perf_counter_ns()
                                    router.upsert(batch)
                                else:
                                    body = upsert_body(batch, mode)
                                    body_bytes[mode] = len(body)
                                    start = time.perf_counter_ns()
                                    client.post(path, body)
                                samples[mode].append(time.perf_counter_ns() - start)
                        rows = args.batch * args.upsert_rounds
                        rates = {mode: rate(rows, sum(ns)) for mode, ns in samples.items()}
                        result[phase.value] = {
                            "collection": name,
                            "rows_per_s": rates,
                            "batch_ms": {mode: latency(ns) for mode, ns in samples.items()},
                            "body_bytes": body_bytes,
                            "b64_over_json": rates["b64"] / rates["json"],
                            "json_over_in_process": rates["json"] / rates["in-process"],
                            "b64_over_in_process": rates["b64"] / rates["in-process"],
                            "counts": {role: s.count() for role, s in router.stores.items()},
                        }
            finally:
                service.stop()
    return result


# orchestration


def run_worker(section: str, param: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", section, "--sizes", param]
    for option in ("queries", "rounds", "seconds", "batch", "upsert_rounds", "profile_seconds"):
        command += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    start = time.perf_counter()
    result = run_json_worker(command, timeout=1800)
    progress(f"{section:>8} {param:>8}: {result['status']} in {time.perf_counter() - start:.0f} s")
    return {"section": section, "param": param, **result}


def _ok(result: dict[str, Any]) -> bool:
    return bool(result["status"] == "ok")


def one_client_table(results: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    headers = ["vectors", "path", "p50 ms", "p99 ms", "added p50 ms (median of per-query differences)"]
    rows = []
    names = {
        "in-process": "in-process `router.search`",
        "json": "HTTP, JSON numbers",
        "b64": "HTTP, compact (`vector_b64`)",
    }
    for r in results:
        if not _ok(r):
            rows.append([count_cell(int(r["param"])), "—", "—", "—", f"{r['status']}: {r['reason']}"])
            continue
        one = r["one_client"]
        for key, label in names.items():
            added = "—" if key == "in-process" else f"+{ms_cell(one['added_ms'][key])}"
            rows.append(
                [count_cell(r["n"]), label, ms_cell(one[key]["p50_ms"]), ms_cell(one[key]["p99_ms"]), added]
            )
    return headers, rows


def steps_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The added latency of a JSON search, step by step (floor server paths, paired medians)."""
    headers = ["step of the JSON search's added latency, 1 client", "ms at p50"]
    rows = [[stage, ms_cell(ms)] for stage, ms in result["one_client"]["steps_ms"].items()]
    rows.append(
        ["measured: HTTP JSON search - in-process search", ms_cell(result["one_client"]["added_ms"]["json"])]
    )
    return headers, rows


def sched_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per query, the threads' time on a core and time waiting for one (Linux schedstat)."""
    sched = result["one_client"]["sched_ms"]
    headers = ["per query, 1 client (mean ms)", "on a core", "waiting for a core"]
    search = sched["in-process search"]
    rows = [["in-process: the caller's thread", ms_cell(search[0]), ms_cell(search[1])]]
    for form, label in (("json", "JSON"), ("b64", "compact")):
        service, client = sched[f"{form} service"], sched[f"{form} client"]
        rows.append([f"HTTP {label}: the service's threads", ms_cell(service[0]), ms_cell(service[1])])
        rows.append(
            [
                f"HTTP {label}: the service - in-process",
                ms_cell(service[0] - search[0]),
                ms_cell(service[1] - search[1]),
            ]
        )
        rows.append(
            [
                f"HTTP {label}: the client's thread (http.client, `json.loads`)",
                ms_cell(client[0]),
                ms_cell(client[1]),
            ]
        )
    return headers, rows


def many_clients_table(results: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    headers = ["vectors", "path", "queries/s", "vs in-process", "p50 ms", "p99 ms"]
    rows = []
    names = {
        "in-process": "in-process, 8 threads",
        "json": "HTTP JSON, 8 connections",
        "b64": "HTTP compact, 8 connections",
    }
    for r in results:
        if not _ok(r):
            continue
        many = r["many_clients"]
        for key, label in names.items():
            ratio = "1" if key == "in-process" else f"{many['ratio'][key]:.3f}"
            rows.append(
                [
                    count_cell(r["n"]),
                    label,
                    f"{many[key]['qps']:.1f}",
                    ratio,
                    ms_cell(many[key]["p50_ms"]),
                    ms_cell(many[key]["p99_ms"]),
                ]
            )
    return headers, rows


def upsert_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    headers = [
        "phase (stores written)",
        "in-process rows/s",
        "HTTP JSON rows/s",
        "HTTP compact rows/s",
        "compact / JSON",
        "JSON / in-process",
        "compact / in-process",
        "body MB (JSON, compact)",
    ]
    if not _ok(result):
        return headers, [[f"{result['status']}: {result['reason']}", *["—"] * 7]]
    written = {"dual": "dual (sqlite-blob + sqlite-vec + outbox)", "target": "target (sqlite-vec)"}
    rows = []
    for phase, label in written.items():
        r = result[phase]
        rates = r["rows_per_s"]
        rows.append(
            [
                label,
                count_cell(rates["in-process"]),
                count_cell(rates["json"]),
                count_cell(rates["b64"]),
                f"{r['b64_over_json']:.2f}",
                f"{r['json_over_in_process']:.3f}",
                f"{r['b64_over_in_process']:.3f}",
                f"{r['body_bytes']['json'] / 1e6:.1f}, {r['body_bytes']['b64'] / 1e6:.1f}",
            ]
        )
    return headers, rows


def profile_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    headers = ["stage (service process, 1 client, JSON search at 10k)", "GIL held, µs per request"]
    rows = [[stage, f"{us:.0f}"] for stage, us in result["stages_us_per_request"].items()]
    rows.append(["total GIL held", f"{result['gil_us_per_request']:.0f}"])
    rows.append(
        [
            "process CPU time (all threads, GIL or not; /proc/PID/stat)",
            f"{result['process_cpu_us_per_request']:.0f}",
        ]
    )
    return headers, rows


def checks(results: dict[str, Any]) -> list[list[str]]:
    found = []
    for r in results.get("search", []):
        if not _ok(r):
            continue
        if r["n"] == ADDED_SIZE:
            added = r["one_client"]["added_ms"]
            found.append(
                [
                    f"search, 1 client, {r['n']:,}: added p50, JSON",
                    f"{ms_cell(added['json'])} ms",
                    f"<= {ADDED_TARGET_MS} ms",
                    verdict(added["json"] <= ADDED_TARGET_MS),
                ]
            )
            found.append(
                [
                    f"search, 1 client, {r['n']:,}: added p50, compact",
                    f"{ms_cell(added['b64'])} ms",
                    f"< JSON ({ms_cell(added['json'])} ms)",
                    verdict(added["b64"] < added["json"]),
                ]
            )
        if r["n"] == THROUGHPUT_SIZE:
            for form in FORMS:
                ratio = r["many_clients"]["ratio"][form]
                found.append(
                    [
                        f"search, {CLIENTS} clients, {r['n']:,}: HTTP {form} / in-process queries/s",
                        f"{ratio:.3f}",
                        f">= {THROUGHPUT_TARGET}",
                        verdict(ratio >= THROUGHPUT_TARGET),
                    ]
                )
    upsert = results.get("upsert")
    if upsert is not None and _ok(upsert):
        for phase in ("dual", "target"):
            ratio = upsert[phase]["b64_over_json"]
            found.append(
                [
                    f"upsert, phase {phase}, batches of {upsert['batch']}: compact / JSON rows/s",
                    f"{ratio:.2f}",
                    f">= {UPSERT_TARGET}",
                    verdict(ratio >= UPSERT_TARGET),
                ]
            )
    return found


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__, worker=SECTIONS)
    add_subset(parser, "--sections", SECTIONS)
    add_sizes(parser, SIZES, "search: comma-separated collection sizes (default 10000,100000)")
    parser.add_argument("--queries", type=int, default=200, help="search, 1 client: timed queries per size")
    parser.add_argument("--rounds", type=int, default=6, help="search, 8 clients: rounds of the three paths")
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="search, 8 clients: seconds per path per round"
    )
    parser.add_argument("--batch", type=int, default=500, help="upsert: records per batch")
    parser.add_argument("--upsert-rounds", type=int, default=20, help="upsert: batches per path per phase")
    parser.add_argument(
        "--profile-seconds",
        type=float,
        default=12.0,
        help=f"py-spy on the service at {PROFILE_SIZE:,} (0: no profile)",
    )
    parser.add_argument("--floor-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}")
    if (
        min(args.queries, args.rounds, args.batch, args.upsert_rounds) < 1
        or args.seconds <= 0
        or min(args.sizes) < K
    ):
        parser.error(
            f"--queries, --rounds, --batch, --upsert-rounds must be >= 1, --seconds > 0, sizes >= {K}"
        )
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.floor_server:
        serve_floor()
        return
    if args.worker:
        outcome = measure_search(args.sizes[0], args) if args.worker == "search" else measure_upsert(args)
        print(json.dumps(outcome))
        return
    start = time.perf_counter()
    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    if "search" in args.sections:
        results["search"] = [run_worker("search", str(n), args) for n in args.sizes]
    if "upsert" in args.sections:
        results["upsert"] = run_worker("upsert", str(args.sizes[0]), args)
    found = checks(results)
    load_after = os.getloadavg()
    print(
        f"{DIM} dims, cosine, k={K}; phase dual, read_percent 100: searches served by the sqlite-vec target; "
        f"1-minute load average {load_before[0]:.1f} before, {load_after[0]:.1f} after "
        f"({os.cpu_count()} cores)\n"
    )
    if "search" in results:
        print(f"**Search, 1 client ({args.queries} queries, paths taking turns)**\n")
        print(markdown_table(*one_client_table(results["search"])))
        print(
            f"\n**Search, {CLIENTS} concurrent clients "
            f"({args.rounds} rounds of {args.seconds:g} s per path)**\n"
        )
        print(markdown_table(*many_clients_table(results["search"])))
        print()
        for r in results["search"]:
            if not _ok(r) or r["n"] != PROFILE_SIZE:
                continue
            print(f"**The added latency of a JSON search at {r['n']:,}, step by step**\n")
            print(markdown_table(*steps_table(r)))
            print()
            print(markdown_table(*sched_table(r)))
            print()
            p = r["profile"]
            if p["status"] != "ok":
                print(f"profile: {p['status']}: {p['reason']}\n")
                continue
            print(f"**Where the service's Python time goes (py-spy --gil, {p['requests']} requests)**\n")
            print(markdown_table(*profile_table(p)))
            threads = ", ".join(f"{kind} {us:.0f} µs" for kind, us in p["threads_us_per_request"].items())
            print(f"\nGIL held per request by thread: {threads}\n")
    if "upsert" in results:
        print(
            f"**Upsert ({args.upsert_rounds} batches of {args.batch} per path and phase, "
            "paths taking turns)**\n"
        )
        print(markdown_table(*upsert_table(results["upsert"])))
        print()
    if found:
        print(markdown_table(CHECK_HEADERS, found))
    path = write_results(
        "service",
        {
            "benchmark": "service",
            "machine": {**machine(), "load_average_before": load_before, "load_average_after": load_after},
            "packages": package_versions(
                ["fastapi", "starlette", "uvicorn", "uvloop", "httptools", "pydantic-core"]
            ),
            "config": {
                "dim": DIM,
                "k": K,
                "clients": CLIENTS,
                "sizes": args.sizes,
                "queries": args.queries,
                "rounds": args.rounds,
                "seconds": args.seconds,
                "batch": args.batch,
                "upsert_rounds": args.upsert_rounds,
                "profile_seconds": args.profile_seconds,
                "sections": args.sections,
            },
            "results": results,
            "checks": as_records(CHECK_HEADERS, found),
            "wall_s": time.perf_counter() - start,
        },
    )
    progress(f"\nwrote {path}")


if __name__ == "__main__":
    main()
