"""Helpers the benchmark scripts share: timing, percentiles, memory, worker processes, routers,
Markdown and JSON output, the command-line options every script has."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from dualvec import CollectionSpec, open_store
from dualvec.router import Router
from dualvec.settings import Phase, Settings, ShadowSettings
from dualvec.sqlite_driver import choose_driver

__all__ = [
    "MIB",
    "RESULTS_DIR",
    "add_sizes",
    "benchmark_parser",
    "latency",
    "machine",
    "markdown_table",
    "median",
    "names_option",
    "open_router",
    "package_versions",
    "rate",
    "rotated",
    "rss_bytes",
    "run_json_worker",
    "sizes_option",
    "store_url",
    "timed",
    "verdict",
    "write_results",
]

T = TypeVar("T")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
MIB = 1024 * 1024


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
