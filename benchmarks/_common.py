"""Helpers the benchmark scripts share: timing, percentiles, memory, Markdown and JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "MIB",
    "RESULTS_DIR",
    "latency",
    "machine",
    "markdown_table",
    "median",
    "rate",
    "rss_bytes",
    "timed",
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
    """p50 and p95 of per-call times, in milliseconds."""
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    return {
        "n": len(ms),
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
    }


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


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """Write `payload` to benchmarks/results/<name>.json (the folder is gitignored)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
