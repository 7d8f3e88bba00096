"""Helpers the benchmark scripts share: timing, percentiles, memory, worker processes, routers,
interleaved search measurements, Markdown and JSON output, the command-line options every
script has."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from dualvec import CollectionSpec, VectorStore, open_store
from dualvec.router import Router
from dualvec.settings import Phase, Settings, ShadowSettings
from dualvec.sqlite_driver import choose_driver

__all__ = [
    "CHECK_HEADERS",
    "MIB",
    "RESULTS_DIR",
    "ROUTER_VS_BARE_HEADERS",
    "Matrix",
    "Search",
    "add_sizes",
    "add_subset",
    "as_records",
    "benchmark_parser",
    "count_cell",
    "interleaved",
    "latency",
    "machine",
    "markdown_table",
    "median",
    "ms_cell",
    "names_option",
    "numpy_search",
    "open_router",
    "package_versions",
    "proc_status",
    "progress",
    "rate",
    "rotated",
    "router_diff_check",
    "router_vs_bare",
    "router_vs_bare_cells",
    "rss_bytes",
    "run_blas_worker",
    "run_json_worker",
    "sizes_option",
    "store_search",
    "store_url",
    "timed",
    "verdict",
    "write_results",
]

T = TypeVar("T")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
MIB = 1024 * 1024
# How often `interleaved` reports progress, in queries.
PROGRESS_EVERY = 20
CHECK_HEADERS = ["check", "measured", "target", "result"]
ROUTER_VS_BARE_HEADERS = [
    "bare p50 ms",
    "router p50 ms",
    "bare p95 ms",
    "router p95 ms",
    "median ratio",
    "median diff µs",
    "same answers",
]

Matrix = npt.NDArray[np.float32]
# One search method under measurement: a query in, the ids of its top k out, best first.
Search = Callable[[Matrix], list[str]]


def timed(fn: Callable[[], T]) -> tuple[T, int]:
    """Call `fn` once; return its result and the wall time in nanoseconds."""
    start = time.perf_counter_ns()
    result = fn()
    return result, time.perf_counter_ns() - start


def latency(samples_ns: Sequence[int]) -> dict[str, float]:
    """p50, p95 and p99 of per-call times, in milliseconds."""
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    return {
        "n": len(ms),
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def rotated(items: Sequence[T], i: int) -> list[T]:
    """`items` starting at position i (mod len): interleaved measurements take turns going
    first, so a slow moment on the machine hits each alike."""
    shift = i % len(items)
    return [*items[shift:], *items[:shift]]


def rate(rows: int, elapsed_ns: int) -> float:
    """Rows per second."""
    return rows / (elapsed_ns / 1e9) if elapsed_ns else 0.0


def rss_bytes() -> int | None:
    """This process's resident set size now (Linux only; None elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


def proc_status(field: str) -> int | None:
    """The number in `field` of /proc/self/status (`Threads`, `VmHWM` in KiB, ...): Linux only;
    None elsewhere or where the kernel has no such field."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    """What the numbers were measured on, for the JSON output."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
    }


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def ms_cell(value: float) -> str:
    """A time in milliseconds, as the tables print it."""
    return f"{value:.2f}"


def count_cell(value: float) -> str:
    """A count or a rate, as the tables print it: whole, with thousands separators."""
    return f"{value:,.0f}"


def as_records(keys: Sequence[str], rows: Sequence[Sequence[object]]) -> list[dict[str, object]]:
    """Table rows as JSON objects, one key per column (the JSON keeps the checks a table printed)."""
    return [dict(zip(keys, row, strict=True)) for row in rows]


def progress(message: str) -> None:
    """A line on stderr: stdout carries only the tables."""
    print(message, file=sys.stderr, flush=True)


def store_url(name: str, folder: str | Path) -> str:
    """A URL for a fresh store of backend `name` inside `folder`."""
    if name == "memory":
        return "memory://"
    return f"{name}://{folder}/{'store.db' if name.startswith('sqlite') else 'store'}"


def open_router(
    folder: Path,
    legacy: str,
    spec: CollectionSpec,
    *,
    phase: Phase,
    read_percent: float = 0.0,
    shadow_percent: float = 0.0,
    flag_poll_seconds: float = 0.2,
) -> Router:
    """A router over a fresh `legacy` store and a fresh sqlite-vec target, all files in `folder`.

    No replayer thread: with an empty outbox it only reads the depth once a second."""
    settings = Settings(
        phase=phase,
        read_percent=read_percent,
        shadow_percent=shadow_percent,
        flag_file=folder / "flags.json",
        outbox_path=folder / "outbox.db",
        flag_poll_seconds=flag_poll_seconds,
        shadow=ShadowSettings(mismatch_log=folder / "mismatches.jsonl"),
    )
    legacy_store = open_store(store_url(legacy, folder / "legacy"), spec)
    target_store = open_store(store_url("sqlite-vec", folder / "target"), spec)
    return Router.over(legacy_store, target_store, settings, start_replayer=False)


def router_vs_bare(routers: Sequence[Router], vectors: Matrix, *, k: int, warmup: int) -> dict[str, Any]:
    """What a router adds to a search: query i goes through router i (mod len) and straight to
    that router's sqlite-vec target, the two taking turns going first; the first `warmup` queries
    are not timed. Latency of each, the median of the per-query ratios and differences, and
    whether every answer was the same."""
    samples: dict[str, list[int]] = {"router": [], "bare": []}
    same = True
    for i, vector in enumerate(vectors):
        router = routers[i % len(routers)]
        calls: list[tuple[str, Callable[..., Any]]] = [
            ("router", router.search),
            ("bare", router.stores["target"].search),
        ]
        answers = {}
        for name, search in rotated(calls, i):
            answers[name], ns = timed(partial(search, vector, k=k))
            if i >= warmup:
                samples[name].append(ns)
        same = same and [h.id for h in answers["router"]] == [h.id for h in answers["bare"]]
    pairs = list(zip(samples["router"], samples["bare"], strict=True))
    return {
        "router": latency(samples["router"]),
        "bare": latency(samples["bare"]),
        "ratio_median": median([r / b for r, b in pairs]),
        "diff_median_us": median([(r - b) / 1e3 for r, b in pairs]),
        "same_answers": same,
    }


def router_vs_bare_cells(result: dict[str, Any]) -> list[str]:
    """A `router_vs_bare` result under ROUTER_VS_BARE_HEADERS."""
    return [
        ms_cell(result["bare"]["p50_ms"]),
        ms_cell(result["router"]["p50_ms"]),
        ms_cell(result["bare"]["p95_ms"]),
        ms_cell(result["router"]["p95_ms"]),
        f"{result['ratio_median']:.4f}",
        f"{result['diff_median_us']:.1f}",
        "yes" if result["same_answers"] else "NO",
    ]


def router_diff_check(label: str, diff_us: float, target_us: float) -> list[str]:
    """The check row (CHECK_HEADERS) of a router's median added time per search."""
    return [label, f"{diff_us:.1f} µs", f"<= {target_us:.0f} µs", verdict(diff_us <= target_us)]


def store_search(store: VectorStore, k: int) -> Search:
    """`store` as a search method: the ids of its top k."""
    return lambda query: [hit.id for hit in store.search(query, k=k)]


def numpy_search(unit: Matrix, ids: Sequence[str], k: int) -> Search:
    """The brute-force floor a user could write with NumPy alone: `unit` (rows of unit length)
    @ the unit query in float32, argpartition, the k best sorted."""

    def search(query: Matrix) -> list[str]:
        scores = unit @ (query / np.linalg.norm(query))
        top = np.argpartition(-scores, k)[:k]
        return [ids[i] for i in top[np.argsort(-scores[top])]]

    return search


def interleaved(
    methods: Mapping[str, Search],
    queries: Matrix,
    truth: Sequence[set[str]],
    *,
    k: int,
    warmup: int,
    against: Mapping[str, str] | None = None,
    progress_label: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Each query on every method in turn, rotating which goes first, so a slow moment on the
    machine falls on all alike; the first `warmup` queries are not timed. Per method: latency,
    recall@k against `truth` (the exact top k per query), and per `against` key the median over
    queries of its time over the named reference method's time in the same round. With
    `progress_label`, a progress line every PROGRESS_EVERY queries."""
    names = list(methods)
    samples: dict[str, list[int]] = {name: [] for name in names}
    found: dict[str, int] = dict.fromkeys(names, 0)
    for i, query in enumerate(queries):
        for name in rotated(names, i):
            ids, ns = timed(partial(methods[name], query))
            if i >= warmup:
                samples[name].append(ns)
                found[name] += len(truth[i].intersection(ids))
        if progress_label and i and i % PROGRESS_EVERY == 0:
            progress(f"{progress_label}: {i}/{len(queries)} queries")
    measured = {name: {**latency(ns), "recall": found[name] / (k * len(ns))} for name, ns in samples.items()}
    for key, reference in (against or {}).items():
        for name in names:
            ratios = [t / r for t, r in zip(samples[name], samples[reference], strict=True)]
            measured[name][key] = median(ratios)
    return measured


def run_json_worker(command: Sequence[str], timeout: float) -> dict[str, Any]:
    """Run a worker process that prints its result as JSON on its last stdout line; a crash,
    a timeout or a non-zero exit becomes {"status": "error", "reason": ...}."""
    try:
        proc = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "error", "reason": f"worker timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return {"status": "error", "reason": lines[-1] if lines else f"exit code {proc.returncode}"}
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return result


def run_blas_worker(command: Sequence[str], n: int, *, blas_threads: int, timeout: float) -> dict[str, Any]:
    """Measure size `n` in a fresh process (its own memory) with NumPy's BLAS threads set before
    NumPy loads there; a failed worker ends the run, naming the size."""
    os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(blas_threads)
    result, ns = timed(partial(run_json_worker, command, timeout))
    progress(f"{n:,}: {result.get('status', 'ok')} in {ns / 1e9:.0f} s")
    if result.get("status") == "error":
        raise SystemExit(f"{n:,} vectors: {result['reason']}")
    return result


def sizes_option(text: str) -> list[int]:
    """argparse type for a comma-separated list of collection sizes."""
    return [int(x) for x in text.split(",")]


def names_option(text: str) -> list[str]:
    """argparse type for a comma-separated list of names (stores, sections, loads)."""
    return text.split(",")


def benchmark_parser(doc: str | None, worker: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """A script's parser: the first paragraph of its docstring as the description, and the
    hidden `--worker` by which the script re-runs itself to measure one case in a fresh process
    (a flag, or with `worker` the name of the case to measure)."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    if worker is None:
        parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    else:
        parser.add_argument("--worker", choices=worker, help=argparse.SUPPRESS)
    return parser


def add_sizes(parser: argparse.ArgumentParser, default: Sequence[int], help_text: str) -> None:
    """`--sizes`: the collection sizes to measure, comma-separated."""
    parser.add_argument("--sizes", type=sizes_option, default=list(default), help=help_text)


def add_subset(parser: argparse.ArgumentParser, option: str, choices: Sequence[str]) -> None:
    """`option`: which of `choices` to run, comma-separated (all by default)."""
    parser.add_argument(
        option,
        type=names_option,
        default=list(choices),
        help=f"comma-separated subset of {','.join(choices)}",
    )


def package_versions(packages: Sequence[str]) -> dict[str, str | None]:
    """Installed version of each package (None where it is missing), and the SQLite that
    dualvec's driver loads sqlite-vec into: what a result depends on."""
    found: dict[str, str | None] = {}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    driver = choose_driver()
    found[f"sqlite ({driver.name})"] = driver.sqlite_version
    return found


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """Write `payload` to benchmarks/results/<name>.json (the folder is gitignored)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
