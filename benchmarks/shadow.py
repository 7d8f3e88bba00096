"""Shadow benchmark: what shadow reads cost the caller, at shadow_percent 0, 10 and 100.

A router in phase dual over a legacy store (sqlite-blob, then LanceDB) and a sqlite-vec target,
both loaded with the same 10k records of 384 dimensions (`dualvec.testing.make_records`), cosine,
k=10, default shadow settings (2 workers, at most 64 pending). One caller thread searches through
the router with one routing key per query (`user-<j>`), so read_percent 50 serves about half the
queries from each store, the same ones in every block; the router samples shadow reads at random,
read by read. Measured is the caller's latency of `router.search`; the shadow reads run on the
router's worker threads. The caller thread's CPU time in each search is recorded too: when the
wall time grows and the CPU time does not, the caller was waiting (for a core or for the GIL),
not doing more work.

Two loads:

- paced: queries arrive at random (exponential gaps, the same seeded gaps in every block) with
  a mean gap of legacy p50 + sqlite-vec p50, measured on the bare stores before the run. With
  every read shadowed, the caller's and the shadow's searches then add up to about one core of
  the two: a service with headroom, where a shadow read still often overlaps the next query.
- back-to-back: the next query starts as soon as the last one returns. At shadow 100% the
  caller and the shadow workers then want about both cores, as much as the machine has.

Each scenario (legacy store, read_percent, load) runs in its own process. The three shadow
percentages take turns, in blocks of --queries queries, --reps times, each repetition starting
with a different one; the percentage is switched through the flag file, as an operator would,
and before the next block the shadow queue is drained (no shadow completes for a while). The
p50 ratio is the median over repetitions of p50 / p50 at shadow 0% in the same repetition; the
p99 ratio compares the p99 of all repetitions pooled (a block's own p99 would be its maximum).
Shadow comparisons and drops come from the router's metrics
(`router.metrics.value`).

Targets, printed as PASS/FAIL for every scenario:

- shadow 10%: p50 within 5% of shadow 0%;
- shadow 100%: p50 within 15% and p99 within 30% of shadow 0%.

Reading the numbers: sqlite-vec's scan releases the GIL, so a shadow read runs beside the caller
only when a core is free. LanceDB (its Rust thread pool) and NumPy's OpenBLAS spread one search
over both cores, and the machine may be running other work, so on 2 cores a shadow read mostly
takes its core from the caller; the caller CPU column then stays near 1.0 while the wall time
grows.

Run (about 3 minutes on 2 cores):

    .venv/bin/python benchmarks/shadow.py
    .venv/bin/python benchmarks/shadow.py --legacies sqlite-blob --loads paced --sizes 10000,100000

Prints Markdown tables on stdout and progress on stderr; writes the full numbers to
benchmarks/results/shadow.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    Matrix,
    add_sizes,
    add_subset,
    as_records,
    benchmark_parser,
    latency,
    machine,
    markdown_table,
    median,
    names_option,
    open_router,
    progress,
    rotated,
    run_json_worker,
    verdict,
    write_results,
)

from dualvec.flags import write_flag_file
from dualvec.metrics import DROP_REASONS, STORES
from dualvec.router import Router
from dualvec.settings import Flags, Phase
from dualvec.testing import make_records, sample_spec

LEGACIES = ("sqlite-blob", "lancedb")
READ_PERCENTS = (0.0, 50.0)
LOADS = ("paced", "back-to-back")
SHADOW_PERCENTS = (0.0, 10.0, 100.0)
SIZES = (10_000,)
DIM = 384
K = 10
BATCH = 1000
WARMUP = 10
TARGETS = {  # shadow percent -> {percentile: largest ratio to shadow 0%}
    10.0: {"p50": 1.05},
    100.0: {"p50": 1.15, "p99": 1.30},
}
SPEC = sample_spec(name="bench", dim=DIM)


def bare_p50_s(router: Router, queries: Matrix) -> dict[str, float]:
    """Each store's own median search time, before any shadow runs."""
    found = {}
    for role, store in router.stores.items():
        times = []
        for query in queries:
            start = time.perf_counter()
            store.search(query, k=K)
            times.append(time.perf_counter() - start)
        found[role] = median(times)
    return found


def shadow_counts(router: Router) -> dict[str, float]:
    """Shadow comparisons, drops and calls so far, from the router's metrics registry."""

    def value(name: str, labels: dict[str, str] | None = None) -> float:
        return router.metrics.value(name, **(labels or {}))

    counts = {
        f"compared_{outcome}": value("dualvec_shadow_comparisons_total", {"outcome": outcome})
        for outcome in ("match", "mismatch", "in_flight")
    }
    counts |= {f"dropped_{r}": value("dualvec_shadow_dropped_total", {"reason": r}) for r in DROP_REASONS}
    counts["compare_errors"] = value("dualvec_compare_errors_total")
    counts["shadow_calls"] = sum(
        value("dualvec_operation_duration_seconds_count", {"store": s, "op": "search", "role": "shadow"})
        for s in STORES
    )
    return counts


def drain(router: Router, quiet_s: float) -> None:
    """Wait until no shadow call has finished for `quiet_s`: the queue is empty."""
    last = shadow_counts(router)["shadow_calls"]
    quiet_since = time.perf_counter()
    while time.perf_counter() - quiet_since < quiet_s:
        time.sleep(quiet_s / 5)
        now = shadow_counts(router)["shadow_calls"]
        if now != last:
            last, quiet_since = now, time.perf_counter()


def set_shadow(router: Router, flag_file: Path, flags: Flags) -> None:
    """Switch through the flag file and wait until the router applies it."""
    write_flag_file(flag_file, flags)
    deadline = time.monotonic() + 10
    while router.flags.flags != flags:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the router did not pick up {flags} within 10 s")
        time.sleep(0.005)


def run_block(router: Router, queries: Matrix, gaps_s: Sequence[float]) -> tuple[list[int], list[int]]:
    """The caller: one search per query, one routing key each; query j+1 starts `gaps_s[j]`
    after query j started, or as soon as it returns when it takes longer. Returns each search's
    wall time and the caller thread's CPU time during it."""
    wall, cpu = [], []
    for j, (query, gap) in enumerate(zip(queries, gaps_s, strict=True)):
        start, start_cpu = time.perf_counter_ns(), time.thread_time_ns()
        router.search(query, k=K, routing_key=f"user-{j}")
        cpu.append(time.thread_time_ns() - start_cpu)
        wall.append(time.perf_counter_ns() - start)
        pause = gap - wall[-1] / 1e9
        if pause > 0:
            time.sleep(pause)
    return wall, cpu


def p50_ratio(blocks: list[list[int]], baseline: list[list[int]]) -> float:
    """Median over repetitions of a block's p50 / the shadow-0% block's p50 in that repetition."""
    return median([median(b) / median(a) for b, a in zip(blocks, baseline, strict=True)])


def measure(legacy: str, read_percent: float, load: str, n: int, queries: int, reps: int) -> dict[str, Any]:
    records = make_records(n, DIM)
    rng = np.random.default_rng(1)
    warmup = rng.standard_normal((WARMUP, DIM), dtype=np.float32)
    block = rng.standard_normal((queries, DIM), dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="dualvec-bench-") as tmp:
        folder = Path(tmp)
        router = open_router(
            folder, legacy, SPEC, phase=Phase.DUAL, read_percent=read_percent, flag_poll_seconds=0.05
        )
        with router:
            for start in range(0, n, BATCH):  # straight into both stores, as a finished backfill
                for store in router.stores.values():
                    store.upsert(records[start : start + BATCH])
            bare = bare_p50_s(router, warmup)
            mean_gap = sum(bare.values()) if load == "paced" else 0.0
            gaps = rng.exponential(mean_gap, queries) if mean_gap else np.zeros(queries)
            quiet = max(0.1, 5 * max(bare.values()))
            samples: dict[float, list[list[int]]] = {p: [] for p in SHADOW_PERCENTS}
            cpu: dict[float, list[list[int]]] = {p: [] for p in SHADOW_PERCENTS}
            counts: dict[float, dict[str, float]] = {p: {} for p in SHADOW_PERCENTS}
            for rep in range(reps):
                for percent in rotated(SHADOW_PERCENTS, rep):
                    flags = Flags(phase=Phase.DUAL, read_percent=read_percent, shadow_percent=percent)
                    set_shadow(router, folder / "flags.json", flags)
                    before = shadow_counts(router)
                    wall, used = run_block(router, block, gaps)
                    samples[percent].append(wall)
                    cpu[percent].append(used)
                    drain(router, quiet)
                    after = shadow_counts(router)
                    for key, value in after.items():
                        counts[percent][key] = counts[percent].get(key, 0.0) + value - before[key]
    per_percent = {}
    for percent in SHADOW_PERCENTS:
        pooled = latency(list(itertools.chain.from_iterable(samples[percent])))
        per_percent[str(percent)] = {
            "pooled": pooled,
            "reps": [latency(ns) for ns in samples[percent]],
            "ratio_p50": p50_ratio(samples[percent], samples[0.0]),
            "ratio_p99": pooled["p99_ms"]
            / latency(list(itertools.chain.from_iterable(samples[0.0])))["p99_ms"],
            "cpu_p50_ms": median([median(ns) for ns in cpu[percent]]) / 1e6,
            "cpu_ratio_p50": p50_ratio(cpu[percent], cpu[0.0]),
            "counts": counts[percent],
        }
    return {
        "status": "ok",
        "legacy": legacy,
        "read_percent": read_percent,
        "load": load,
        "n": n,
        "bare_p50_ms": {role: t * 1e3 for role, t in bare.items()},
        "mean_gap_ms": mean_gap * 1e3,
        "shadow": per_percent,
    }


def run_worker(
    legacy: str, read_percent: float, load: str, n: int, args: argparse.Namespace
) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--worker",
        "--legacies",
        legacy,
        "--read-percents",
        str(read_percent),
    ]
    command += ["--loads", load, "--sizes", str(n), "--queries", str(args.queries), "--reps", str(args.reps)]
    start = time.perf_counter()
    result = run_json_worker(command, timeout=1800)
    elapsed = time.perf_counter() - start
    scenario = f"{legacy} read {read_percent:g}% {load} {n:,}"
    progress(f"{scenario:>40}: {result['status']} in {elapsed:.0f} s")
    return {"legacy": legacy, "read_percent": read_percent, "load": load, "n": n, **result}


def scenario_cells(r: dict[str, Any]) -> list[str]:
    return [r["legacy"], f"{r['read_percent']:g}%", r["load"], f"{r['n']:,}"]


def latency_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in results:
        if r["status"] != "ok":
            rows.append([*scenario_cells(r), *["—"] * 9, f"{r['status']}: {r['reason']}"])
            continue
        for percent in SHADOW_PERCENTS:
            s = r["shadow"][str(percent)]
            c = s["counts"]
            compared = c["compared_match"] + c["compared_mismatch"]
            rows.append(
                [
                    *scenario_cells(r),
                    f"{percent:g}%",
                    f"{r['mean_gap_ms']:.1f}",
                    f"{s['pooled']['p50_ms']:.2f}",
                    f"{s['pooled']['p99_ms']:.2f}",
                    f"{s['ratio_p50']:.3f}",
                    f"{s['ratio_p99']:.3f}",
                    f"{s['cpu_ratio_p50']:.3f}",
                    f"{compared:.0f} ({c['compared_mismatch']:.0f} mismatched)",
                    f"{c['dropped_saturated']:.0f}",
                    f"timeout {c['dropped_timeout']:.0f}, error {c['dropped_error']:.0f}, "
                    f"compare errors {c['compare_errors']:.0f}",
                ]
            )
    return rows


def checks(results: list[dict[str, Any]]) -> list[list[str]]:
    found = []
    for r in results:
        if r["status"] != "ok":
            continue
        for percent, limits in TARGETS.items():
            for pct, limit in limits.items():
                ratio = r["shadow"][str(percent)][f"ratio_{pct}"]
                check = f"shadow {percent:g}% / 0%, {pct}"
                found.append(
                    [*scenario_cells(r), check, f"{ratio:.3f}", f"<= {limit}", verdict(ratio <= limit)]
                )
    return found


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__)
    parser.add_argument(
        "--legacies",
        type=names_option,
        default=list(LEGACIES),
        help=f"comma-separated legacy stores (default {','.join(LEGACIES)})",
    )
    parser.add_argument(
        "--read-percents", type=floats, default=list(READ_PERCENTS), help="comma-separated (default 0,50)"
    )
    add_subset(parser, "--loads", LOADS)
    add_sizes(parser, SIZES, "comma-separated collection sizes (default 10000)")
    parser.add_argument("--queries", type=int, default=80, help="queries per block")
    parser.add_argument("--reps", type=int, default=4, help="blocks per shadow percentage")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.legacies) - set(LEGACIES)) + sorted(set(args.loads) - set(LOADS))
    if unknown:
        parser.error(f"unknown legacy store(s) or load(s) {unknown}")
    if not all(0 <= p <= 100 for p in args.read_percents):
        parser.error("read percents must be from 0 to 100")
    if min(args.queries, args.reps) < 1 or min(args.sizes) < K:
        parser.error(f"--queries and --reps must be >= 1, sizes >= {K}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        outcome = measure(
            args.legacies[0], args.read_percents[0], args.loads[0], args.sizes[0], args.queries, args.reps
        )
        print(json.dumps(outcome))
        return
    start = time.perf_counter()
    results = [
        run_worker(legacy, read_percent, load, n, args)
        for n in args.sizes
        for load in args.loads
        for legacy in args.legacies
        for read_percent in args.read_percents
    ]
    headers = ["legacy", "read %", "load", "vectors", "shadow", "mean gap ms", "p50 ms", "p99 ms"]
    headers += [
        "p50 / 0%",
        "p99 / 0%",
        "caller CPU p50 / 0%",
        "compared",
        "dropped (saturated)",
        "other drops",
    ]
    print(
        f"{DIM} dims, cosine, k={K}, sqlite-vec target, {args.reps} repetitions of {args.queries} queries "
        "per shadow percentage; p50 and p99 pooled over repetitions; p50 / 0% the median of "
        "per-repetition ratios, p99 / 0% the ratio of pooled p99s\n"
    )
    print(markdown_table(headers, latency_rows(results)))
    found = checks(results)
    if found:
        print()
        print(
            markdown_table(
                ["legacy", "read %", "load", "vectors", "check", "ratio", "target", "result"], found
            )
        )
    path = write_results(
        "shadow",
        {
            "benchmark": "shadow",
            "machine": machine(),
            "config": {
                "dim": DIM,
                "metric": SPEC.metric,
                "k": K,
                "warmup": WARMUP,
                "queries": args.queries,
                "reps": args.reps,
                "shadow_percents": list(SHADOW_PERCENTS),
                "legacies": args.legacies,
                "read_percents": args.read_percents,
                "loads": args.loads,
                "sizes": args.sizes,
            },
            "results": results,
            "checks": as_records(
                ["legacy", "read_percent", "load", "n", "check", "ratio", "target", "result"], found
            ),
            "wall_s": time.perf_counter() - start,
        },
    )
    progress(f"\nwrote {path}")


if __name__ == "__main__":
    main()
