"""Router benchmark: what the Router costs on top of the stores it routes between, and how soon a
rollback reaches processes serving reads.

Data: `dualvec.testing.make_records` (random float32 vectors of 384 dimensions, four filterable
metadata fields and a stored-only title), cosine, k=10, batches of 1000. The search, upsert and
dual-write sections each run in their own process on fresh stores in a temp dir; routers run
without the replayer thread (with an empty outbox it only reads the depth once a second).

- search: phase dual, read_percent 100, shadow 0, so the router serves from the sqlite-vec
  target, loaded with 10k or 100k records. `router.search` and `router.stores["target"].search`
  (the very same store object) answer each query one after the other, taking turns going first;
  reported are the medians of the per-query ratio and difference. A scan of 10k vectors (15 MB)
  or more flushes the CPU caches, so the router's own Python work (validation, routing, two
  metric updates) then runs cold: several times the ~15 µs it takes on a small collection.
- upsert: new batches go in turn to the router and to the bare store(s) it wraps. Phase target
  (one store, no outbox) against `target.upsert`: validation, routing and metrics. Phase dual
  (legacy: the first of --legacies) against `legacy.upsert` then `target.upsert`, as an
  application writing both by hand would (each store validating the batch itself):
  the outbox on top (two transactions and a flock per batch). The outbox alone (`record` and
  `clear` of 1000 ids under `write_lock`) takes a turn too. Compared are total times, not
  medians: a WAL checkpoint lands on every second or third batch, so batch times are bimodal
  and a median would depend on which side the checkpoints happen to fall.
- dual-write: three configurations, each on fresh stores of its own, get the same batches in
  turn: the legacy store alone (sqlite-blob, then LanceDB), sqlite-vec alone, and the router in
  phase dual writing both. rows/s over all batches, checkpoints included. The router writes the
  primary, then the secondary, so its ceiling is the two stores' times added ("both in
  sequence"); `router / both in sequence` is what the outbox and the router cost on top.
- rollback: 4 processes (`tests/router_process.py reader`) search in a loop through routers
  reading from the target (flag file: phase dual, read_percent 100; they poll it every 0.1 s,
  the library default is 0.2 s). `dualvec rollback` runs as an operator runs it (the console
  script, in a subprocess); measured is the time from its return (0 when every process had
  switched before it exited), and from its write of the flag file (`updated_at`), to the last
  process serving from legacy. Repeated --runs times.

Targets, printed as PASS/FAIL:

- search: router / bare <= 1.03 at 100k; router - bare <= 50 µs at 10k (per-query medians);
- dual-write: router rows/s >= 0.8 x the slower store alone (the outbox must not be the
  bottleneck);
- rollback: the last process serves from legacy within 1 s of `dualvec rollback` returning (max).

Run (about 2 minutes on 2 cores):

    .venv/bin/python benchmarks/router.py
    .venv/bin/python benchmarks/router.py --sections search,rollback --sizes 10000 --queries 50

Prints Markdown tables on stdout and progress on stderr; writes the full numbers to
benchmarks/results/router.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    CHECK_HEADERS,
    ROUTER_VS_BARE_HEADERS,
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
    names_option,
    open_router,
    progress,
    rate,
    rotated,
    router_diff_check,
    router_vs_bare,
    router_vs_bare_cells,
    run_json_worker,
    store_url,
    timed,
    verdict,
    write_results,
)

from dualvec import Record, open_store
from dualvec.flags import read_flag_file, write_flag_file
from dualvec.router import Router
from dualvec.settings import Flags, Phase
from dualvec.testing import make_records, sample_spec

SECTIONS = ("search", "upsert", "dual-write", "rollback")
SIZES = (10_000, 100_000)
LEGACIES = ("sqlite-blob", "lancedb")
DIM = 384
K = 10
BATCH = 1000
WARMUP = 3
SEARCH_RATIO_TARGET = 1.03
SEARCH_RATIO_SIZE = 100_000
SEARCH_DIFF_TARGET_US = 50.0
SEARCH_DIFF_SIZE = 10_000
DUAL_WRITE_TARGET = 0.8
ROLLBACK_TARGET_S = 1.0
ROLLBACK_PROCESSES = 4
SPEC = sample_spec(name="bench", dim=DIM)

READER_SCRIPT = Path(__file__).resolve().parents[1] / "tests" / "router_process.py"
READER_SPEC = sample_spec(dim=8)  # the collection router_process.py serves
DUALVEC = Path(sys.executable).with_name("dualvec")


def batches(records: list[Record]) -> list[list[Record]]:
    return [records[start : start + BATCH] for start in range(0, len(records), BATCH)]


# search


def measure_search(n: int, queries: int) -> dict[str, Any]:
    records = make_records(n, DIM)
    vectors = np.random.default_rng(1).standard_normal((WARMUP + queries, DIM), dtype=np.float32)
    with (
        tempfile.TemporaryDirectory(prefix="dualvec-bench-") as folder,
        open_router(Path(folder), "sqlite-blob", SPEC, phase=Phase.DUAL, read_percent=100) as router,
    ):
        for batch in batches(records):  # straight into the target: reads never reach legacy
            router.stores["target"].upsert(batch)
        compared = router_vs_bare([router], vectors, k=K, warmup=WARMUP)
        served = router.metrics.value("dualvec_reads_total", store="target")
    return {"status": "ok", "n": n, **compared, "served_by_target": served}


# upsert


def outbox_round(router: Router, batch: list[Record]) -> None:
    """What the router adds to a dual write: intents recorded, then cleared, under the lock."""
    ids = [r.id for r in batch]
    with router.outbox.write_lock():
        router.outbox.record(ids, "upsert", "legacy")
        router.outbox.clear(ids)


def both_by_hand(router: Router, batch: list[Record]) -> None:
    router.stores["legacy"].upsert(batch)
    router.stores["target"].upsert(batch)


def measure_upsert(legacy: str, rounds: int) -> dict[str, Any]:
    """Per phase, `rounds` turns; each turn gives the router and the bare store(s) a new batch."""
    chunks = batches(make_records(2 * rounds * BATCH, DIM))
    result: dict[str, Any] = {"status": "ok", "legacy": legacy, "rounds": rounds}
    with tempfile.TemporaryDirectory(prefix="dualvec-bench-") as folder:
        for phase in (Phase.TARGET, Phase.DUAL):
            with open_router(Path(folder) / phase.value, legacy, SPEC, phase=phase) as router:
                if phase is Phase.TARGET:
                    bare: Callable[[list[Record]], None] = router.stores["target"].upsert
                else:
                    bare = partial(both_by_hand, router)
                calls: list[tuple[str, Callable[[list[Record]], None]]] = [
                    ("router", router.upsert),
                    ("bare", bare),
                ]
                if phase is Phase.DUAL:
                    calls.append(("outbox", partial(outbox_round, router)))
                samples: dict[str, list[int]] = {name: [] for name, _ in calls}
                for i in range(rounds):
                    for name, call in rotated(calls, i):
                        batch = chunks[2 * i + (name == "bare")]  # the outbox reuses the router's ids
                        samples[name].append(timed(partial(call, batch))[1])
                counts = {role: store.count() for role, store in router.stores.items()}
            result[phase.value] = {
                **{name: {**latency(ns), "mean_ms": sum(ns) / len(ns) / 1e6} for name, ns in samples.items()},
                "ratio_total": sum(samples["router"]) / sum(samples["bare"]),
                "diff_mean_ms": (sum(samples["router"]) - sum(samples["bare"])) / rounds / 1e6,
                "counts": counts,
            }
    return result


# dual-write throughput


def measure_dual_write(legacy: str, rows: int) -> dict[str, Any]:
    chunks = batches(make_records(rows, DIM))
    with tempfile.TemporaryDirectory(prefix="dualvec-bench-") as tmp:
        folder = Path(tmp)
        legacy_alone = open_store(store_url(legacy, folder / "legacy-alone"), SPEC)
        target_alone = open_store(store_url("sqlite-vec", folder / "target-alone"), SPEC)
        router = open_router(folder / "router", legacy, SPEC, phase=Phase.DUAL)
        try:
            configs: list[tuple[str, Callable[[list[Record]], None]]] = [
                ("legacy", legacy_alone.upsert),
                ("target", target_alone.upsert),
                ("router", router.upsert),
            ]
            samples: dict[str, list[int]] = {name: [] for name, _ in configs}
            for i, chunk in enumerate(chunks):
                for name, upsert in rotated(configs, i):
                    samples[name].append(timed(partial(upsert, chunk))[1])
            counts = {
                "legacy": legacy_alone.count(),
                "target": target_alone.count(),
                "router legacy": router.stores["legacy"].count(),
                "router target": router.stores["target"].count(),
            }
            depth = router.outbox.stats().depth
        finally:
            for closable in (legacy_alone, target_alone, router):
                closable.close()
    rates = {name: rate(rows, sum(ns)) for name, ns in samples.items()}
    in_sequence = rate(rows, sum(samples["legacy"]) + sum(samples["target"]))
    return {
        "status": "ok",
        "legacy": legacy,
        "rows": rows,
        "batch_ms": {name: latency(ns) for name, ns in samples.items()},
        "rows_per_s": rates,
        "both_in_sequence_rows_per_s": in_sequence,
        "ratio_to_slower": rates["router"] / min(rates["legacy"], rates["target"]),
        "ratio_to_sequence": rates["router"] / in_sequence,
        "counts": counts,
        "outbox_depth": depth,
    }


# rollback


class Reader:
    """One `router_process.py reader`: its changes of serving store, as (time, store)."""

    def __init__(self, folder: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(READER_SCRIPT), "reader", str(folder), "600"],
            stdout=subprocess.PIPE,
            text=True,
            cwd=folder,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{READER_SCRIPT} reader did not start")
        self.changes: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            stamp, served = line.split()
            self.changes.append((float(stamp), served))

    def serving(self) -> str | None:
        return self.changes[-1][1] if self.changes else None

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self._thread.join(timeout=30)


def wait_for(readers: list[Reader], store: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while any(r.serving() != store for r in readers):
        if time.monotonic() > deadline:
            raise RuntimeError(f"readers did not all serve from {store} within {timeout:.0f} s")
        time.sleep(0.01)


def measure_rollback(runs: int) -> dict[str, Any]:
    rng = random.Random(0)
    with tempfile.TemporaryDirectory(prefix="dualvec-bench-") as tmp:
        folder = Path(tmp)
        marker = make_records(1, READER_SPEC.dim, seed=4242, prefix="target-only-")[0]  # reader's marker
        with open_store(f"sqlite-vec://{folder}/target.db", READER_SPEC) as target:
            target.upsert([marker])
        flag_file = folder / "flags.json"
        env = {
            **os.environ,
            "DUALVEC_FLAG_FILE": str(flag_file),
            "DUALVEC_OUTBOX_PATH": str(folder / "outbox.db"),
        }
        measured = []
        # Fresh readers every run: a reader quits a second after it has gone back to legacy.
        for _ in range(runs):
            write_flag_file(flag_file, Flags(phase=Phase.DUAL, read_percent=100))
            readers: list[Reader] = []
            try:
                for _ in range(ROLLBACK_PROCESSES):
                    readers.append(Reader(folder))  # one by one, so a failed start still stops the others
                wait_for(readers, "target")
                time.sleep(rng.uniform(0.2, 0.5))  # land anywhere in the readers' poll cycle
                start = time.time()
                subprocess.run(
                    [str(DUALVEC), "rollback"], env=env, cwd=folder, check=True, capture_output=True
                )
                returned = time.time()
                snapshot = read_flag_file(flag_file)
                assert snapshot is not None and snapshot.updated_at is not None
                wait_for(readers, "legacy")
                switched = [r.changes[-1][0] for r in readers]
                measured.append(
                    {
                        "command_s": returned - start,
                        "from_write_s": [t - snapshot.updated_at for t in switched],
                        "from_return_s": [t - returned for t in switched],
                    }
                )
            finally:
                for reader in readers:
                    reader.stop()
    # 0 when every process had switched before the command returned (it writes, then exits)
    last_from_return = [max(0.0, *run["from_return_s"]) for run in measured]
    last_from_write = [max(run["from_write_s"]) for run in measured]
    return {
        "status": "ok",
        "processes": ROLLBACK_PROCESSES,
        "runs": measured,
        "last_from_return_s": {"median": median(last_from_return), "max": max(last_from_return)},
        "last_from_write_s": {"median": median(last_from_write), "max": max(last_from_write)},
    }


# orchestration


def run_worker(section: str, param: str, args: argparse.Namespace) -> dict[str, Any]:
    """One section for one size or legacy store, in a fresh process."""
    command = [sys.executable, __file__, "--worker", section, "--queries", str(args.queries)]
    command += ["--rounds", str(args.rounds), "--rows", str(args.rows)]
    command += ["--sizes" if section == "search" else "--legacies", param]
    start = time.perf_counter()
    result = run_json_worker(command, timeout=1800)
    progress(f"{section:>10} {param:>12}: {result['status']} in {time.perf_counter() - start:.0f} s")
    return {"section": section, "param": param, **result}


def worker(args: argparse.Namespace) -> dict[str, Any]:
    if args.worker == "search":
        return measure_search(args.sizes[0], args.queries)
    if args.worker == "upsert":
        return measure_upsert(args.legacies[0], args.rounds)
    return measure_dual_write(args.legacies[0], args.rows)


def _failed(result: dict[str, Any]) -> bool:
    return bool(result["status"] != "ok")


def search_table(results: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    headers = ["vectors", *ROUTER_VS_BARE_HEADERS]
    rows = []
    for r in results:
        if _failed(r):
            rows.append([count_cell(int(r["param"])), *["—"] * 6, f"{r['status']}: {r['reason']}"])
            continue
        rows.append([count_cell(r["n"]), *router_vs_bare_cells(r)])
    return headers, rows


def upsert_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    headers = ["router phase", "bare path", "bare batch mean ms", "router batch mean ms"]
    headers += ["router / bare (total time)", "router - bare, mean ms", "outbox alone mean ms"]
    if _failed(result):
        return headers, [["—", "—", *["—"] * 4, f"{result['status']}: {result['reason']}"]]
    bare_paths = {"target": "sqlite-vec upsert", "dual": f"{result['legacy']} upsert + sqlite-vec upsert"}
    rows = []
    for phase, bare in bare_paths.items():
        r = result[phase]
        rows.append(
            [
                phase,
                bare,
                ms_cell(r["bare"]["mean_ms"]),
                ms_cell(r["router"]["mean_ms"]),
                f"{r['ratio_total']:.3f}",
                ms_cell(r["diff_mean_ms"]),
                ms_cell(r["outbox"]["mean_ms"]) if "outbox" in r else "—",
            ]
        )
    return headers, rows


def dual_write_table(results: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    headers = ["legacy", "legacy alone rows/s", "sqlite-vec alone rows/s", "both in sequence rows/s"]
    headers += ["router dual rows/s", "router / slower alone", "router / both in sequence"]
    rows = []
    for r in results:
        if _failed(r):
            rows.append([r["param"], *["—"] * 5, f"{r['status']}: {r['reason']}"])
            continue
        rates = r["rows_per_s"]
        rows.append(
            [
                r["legacy"],
                count_cell(rates["legacy"]),
                count_cell(rates["target"]),
                count_cell(r["both_in_sequence_rows_per_s"]),
                count_cell(rates["router"]),
                f"{r['ratio_to_slower']:.3f}",
                f"{r['ratio_to_sequence']:.3f}",
            ]
        )
    return headers, rows


def rollback_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    headers = ["run", "`dualvec rollback` took ms", "last process, from flag write ms"]
    headers += ["last process, from return ms", "each process, from return ms (< 0: before it)"]
    if _failed(result):
        return headers, [["—", "—", "—", "—", f"{result['status']}: {result['reason']}"]]
    rows = [
        [
            str(i + 1),
            f"{run['command_s'] * 1e3:.0f}",
            f"{max(run['from_write_s']) * 1e3:.0f}",
            f"{max(0.0, *run['from_return_s']) * 1e3:.0f}",
            ", ".join(f"{t * 1e3:.0f}" for t in run["from_return_s"]),
        ]
        for i, run in enumerate(result["runs"])
    ]
    for stat in ("median", "max"):
        write, back = result["last_from_write_s"][stat], result["last_from_return_s"][stat]
        rows.append([stat, "", f"{write * 1e3:.0f}", f"{back * 1e3:.0f}", ""])
    return headers, rows


def checks(results: dict[str, Any]) -> list[list[str]]:
    found = []
    for r in results.get("search", []):
        if _failed(r):
            continue
        if r["n"] == SEARCH_RATIO_SIZE:
            value, passed = f"{r['ratio_median']:.4f}", r["ratio_median"] <= SEARCH_RATIO_TARGET
            found.append(
                [f"search, router / bare, {r['n']:,}", value, f"<= {SEARCH_RATIO_TARGET}", verdict(passed)]
            )
        if r["n"] == SEARCH_DIFF_SIZE:
            label = f"search, router - bare, {r['n']:,}"
            found.append(router_diff_check(label, r["diff_median_us"], SEARCH_DIFF_TARGET_US))
    for r in results.get("dual_write", []):
        if _failed(r):
            continue
        passed = r["ratio_to_slower"] >= DUAL_WRITE_TARGET
        found.append(
            [
                f"dual write ({r['legacy']} + sqlite-vec) / slower store alone",
                f"{r['ratio_to_slower']:.3f}",
                f">= {DUAL_WRITE_TARGET}",
                verdict(passed),
            ]
        )
    rollback = results.get("rollback")
    if rollback is not None and not _failed(rollback):
        worst = rollback["last_from_return_s"]["max"]
        runs = len(rollback["runs"])
        found.append(
            [
                f"rollback, last of {rollback['processes']} processes on legacy (max of {runs} runs)",
                f"{worst * 1e3:.0f} ms",
                f"< {ROLLBACK_TARGET_S * 1e3:.0f} ms",
                verdict(worst < ROLLBACK_TARGET_S),
            ]
        )
    return found


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__, worker=SECTIONS[:3])
    add_subset(parser, "--sections", SECTIONS)
    add_sizes(parser, SIZES, "search: comma-separated collection sizes (default 10000,100000)")
    parser.add_argument(
        "--legacies",
        type=names_option,
        default=list(LEGACIES),
        help=f"dual-write: comma-separated legacy stores, upsert: the first (default {','.join(LEGACIES)})",
    )
    parser.add_argument("--queries", type=int, default=300, help="search: timed queries per size")
    parser.add_argument("--rounds", type=int, default=40, help="upsert: batches each side, per phase")
    parser.add_argument("--rows", type=int, default=50_000, help="dual-write: rows per configuration")
    parser.add_argument("--runs", type=int, default=5, help="rollback: repetitions")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.sections) - set(SECTIONS)) + sorted(set(args.legacies) - set(LEGACIES))
    if unknown:
        parser.error(f"unknown section(s) or legacy store(s) {unknown}")
    if min(args.queries, args.rounds, args.runs) < 1 or args.rows < BATCH or min(args.sizes) < K:
        parser.error(f"--queries, --rounds and --runs must be >= 1, --rows >= {BATCH}, sizes >= {K}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    start = time.perf_counter()
    results: dict[str, Any] = {}
    if "search" in args.sections:
        results["search"] = [run_worker("search", str(n), args) for n in args.sizes]
    if "upsert" in args.sections:
        results["upsert"] = run_worker("upsert", args.legacies[0], args)
    if "dual-write" in args.sections:
        results["dual_write"] = [run_worker("dual-write", legacy, args) for legacy in args.legacies]
    if "rollback" in args.sections:
        rollback_start = time.perf_counter()
        try:
            results["rollback"] = measure_rollback(args.runs)
        except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
            results["rollback"] = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
        elapsed = time.perf_counter() - rollback_start
        progress(f"{'rollback':>10} {'':>12}: {results['rollback']['status']} in {elapsed:.0f} s")
    found = checks(results)
    tables: list[tuple[str, tuple[list[str], list[list[str]]]]] = []
    if "search" in results:
        title = f"Search, router vs the bare sqlite-vec store ({args.queries} queries, k={K})"
        tables.append((title, search_table(results["search"])))
    if "upsert" in results:
        title = f"Upsert, router vs the bare stores ({args.rounds} batches of {BATCH} each)"
        tables.append((title, upsert_table(results["upsert"])))
    if "dual_write" in results:
        title = f"Dual-write throughput ({args.rows:,} rows in batches of {BATCH}, fresh stores each)"
        tables.append((title, dual_write_table(results["dual_write"])))
    if "rollback" in results:
        title = f"Rollback reaching {ROLLBACK_PROCESSES} serving processes"
        tables.append((title, rollback_table(results["rollback"])))
    print(f"{DIM} dims, cosine, sqlite-vec target\n")
    for title, (headers, rows) in tables:
        print(f"**{title}**\n")
        print(markdown_table(headers, rows))
        print()
    if found:
        print(markdown_table(CHECK_HEADERS, found))
    path = write_results(
        "router",
        {
            "benchmark": "router",
            "machine": machine(),
            "config": {
                "dim": DIM,
                "metric": SPEC.metric,
                "k": K,
                "batch": BATCH,
                "warmup": WARMUP,
                "queries": args.queries,
                "rounds": args.rounds,
                "rows": args.rows,
                "runs": args.runs,
                "sections": args.sections,
                "sizes": args.sizes,
                "legacies": args.legacies,
            },
            "results": results,
            "checks": as_records(CHECK_HEADERS, found),
            "wall_s": time.perf_counter() - start,
        },
    )
    progress(f"\nwrote {path}")


if __name__ == "__main__":
    main()
