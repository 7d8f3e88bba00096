"""Backfill and verify benchmark: how fast `dualvec.backfill` copies a LanceDB collection into
sqlite-vec, and how fast `dualvec.verify` then compares the two, beside what the stores alone do
on the same data, and what memory either takes at two collection sizes.

Data: `dualvec.testing.make_records` (random float32 vectors of 384 dimensions, four filterable
metadata fields and a stored-only title), cosine, 10k and 100k records. Per size, a setup process
loads the legacy LanceDB store (upserts of 10k, then one compaction by the adapter's own
`optimize`, as a long-lived table would be). Then --repeats rounds, each in a fresh folder and
every measurement in a process of its own (so one's memory never shows in another's numbers):

- insert: rows/s of `SqliteVecStore.upsert` in batches of 1000 into a fresh store (the ceiling
  for a copy into sqlite-vec);
- backfill: `backfill(legacy, target, outbox, batch_size=1000, checkpoint=...)` into a fresh
  sqlite-vec store, with an Outbox and a checkpoint file in the round's folder, as `dualvec
  backfill` runs it; records/s = records scanned / seconds. No write lands meanwhile, so backfill
  copies what its scan read;
- backfill, writes landing: the same, but after the first batch another connection commits an
  intent to the outbox and clears it (what every live write and replay does), so backfill
  re-reads every later batch from legacy under the lock, as it does beside live writers. Insert
  and the two backfills take turns going first;
- scan: rows/s of `store.scan(1000)` over everything, LanceDB (legacy) and sqlite-vec (the
  backfilled target);
- verify: `verify(legacy, target, outbox, primary="legacy", batch_size=1000)` on the backfilled
  pair, which must come out clean. Its rate counts records checked on both sides (2 per record:
  the primary's and the secondary's), as `dualvec verify`'s progress does.

Once per size, after the rounds (on a target backfilled under tracemalloc):

- verify with a checkpoint file, as `dualvec verify` always runs it. It is stopped after
  --budget seconds (its cost per batch grows with the ids already checked); the rate so far is
  then an upper bound, and the check fails;
- backfill and verify under tracemalloc: the peak of Python and NumPy allocations.

Memory: the peak RSS growth over each call of every round (the kernel's high-water mark, reset
just before through /proc/self/clear_refs, less the RSS before), for the stores' own insert and
scans too, as references. The traced peak must not grow with the collection. RSS also counts the
stores' native memory, which fills up towards caps as the collection grows (each SQLite
connection's page cache stops at its 64 MiB cache_size; LanceDB keeps caches of its own), so it
is held to a looser bound that allows one full page cache per connection reading the target.

Targets, printed as PASS/FAIL (median of the per-round ratios):

- backfill records/s >= 0.8 x sqlite-vec's own bulk-insert rows/s (with writes landing: shown,
  no target; it is what a backfill beside live writers costs);
- verify records/s >= 0.5 x the slower of the two stores' scan rows/s (with and without the
  checkpoint);
- memory flat in the collection size, largest vs smallest size: traced peak at most 1.5 x
  (+ 2 MiB); RSS peak growth at most 1.5 x + 64 MiB per SQLite connection on the target
  (backfill 1: the store's; verify 2: the store's, for `get`, and its scan's).

The 1-minute load average before and after goes into the output: on a shared machine the ratios,
measured in turns, hold up better than the absolute rates.

Run (about 5 minutes on 2 cores, one of them the checkpointed verify's 60 s budget at 100k):

    .venv/bin/python benchmarks/backfill.py
    .venv/bin/python benchmarks/backfill.py --sizes 10000 --repeats 1

Prints Markdown tables on stdout and progress on stderr; writes the full numbers to
benchmarks/results/backfill.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from _common import (
    MIB,
    add_sizes,
    benchmark_parser,
    count_cell,
    machine,
    markdown_table,
    median,
    package_versions,
    proc_status,
    progress,
    rate,
    rotated,
    rss_bytes,
    run_json_worker,
    timed,
    verdict,
    write_results,
)

from dualvec import VectorStore, open_store
from dualvec.backfill import backfill
from dualvec.outbox import Outbox
from dualvec.progress import Progress
from dualvec.testing import make_records, sample_spec
from dualvec.verify import verify

T = TypeVar("T")

SIZES = (10_000, 100_000)
DIM = 384
BATCH = 1000
LOAD_BATCH = 10_000
REPEATS = 3
BACKFILL_TARGET = 0.8
VERIFY_TARGET = 0.5
FLAT_TRACED = (1.5, 2.0)  # (factor, MiB of slack): largest size vs smallest
FLAT_RSS_FACTOR = 1.5
SQLITE_CACHE_MIB = 64.0  # the cache_size `dualvec.sqlite_driver.connect` sets on every connection
# SQLite connections each operation reads the target through: the store's own, and verify's scan.
TARGET_CONNECTIONS = {"backfill": 1, "verify": 2}
WORKER_TIMEOUT_S = 600.0
BUDGET_S = 60.0
SPEC = sample_spec(name="bench", dim=DIM)
PACKAGES = ("lancedb", "pylance", "pyarrow", "sqlite-vec", "pysqlite3-binary")
ROUND_KINDS = ("insert", "backfill", "backfill-writes", "scan-legacy", "scan-target", "verify")


def legacy_url(size_folder: Path, optimize_every: int = 200) -> str:
    return f"lancedb://{size_folder}/legacy?optimize_every={optimize_every}"


def target_url(folder: Path, name: str = "target.db") -> str:
    return f"sqlite-vec://{folder}/{name}"


# memory


def _reset_high_water_mark() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS; False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return proc_status("VmHWM") is not None


class PeakRss:
    """Peak RSS over one call, above the RSS before it. The kernel's high-water mark where it can
    be reset; otherwise the largest of the samples taken at each progress callback."""

    def __init__(self) -> None:
        self.samples: list[int | None] = []

    def sample(self, _progress: Progress | None = None) -> None:
        self.samples.append(rss_bytes())

    def run(self, fn: Callable[[], T]) -> tuple[T, int, dict[str, Any]]:
        gc.collect()
        before = rss_bytes()
        self.samples = [before]
        exact = _reset_high_water_mark()
        result, ns = timed(fn)
        hwm = proc_status("VmHWM") if exact else None
        known = [s for s in self.samples if s is not None]
        if before is None:
            growth = None
        elif hwm is not None:
            growth = (hwm * 1024 - before) / MIB
        else:
            growth = (max(known) - before) / MIB
        memory = {
            "rss_before_mib": None if before is None else before / MIB,
            "rss_peak_growth_mib": growth,
            "rss_method": "VmHWM" if hwm is not None else "progress samples",
        }
        return result, ns, memory


def traced(fn: Callable[[], T]) -> tuple[T, float]:
    """`fn()` under tracemalloc, and its peak traced allocation in MiB."""
    gc.collect()
    tracemalloc.start()
    try:
        result = fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, peak / MIB


# workers: one measurement each, in its own process


def setup_legacy(size_folder: Path, n: int) -> dict[str, Any]:
    """Load the legacy LanceDB store; its last upsert triggers the adapter's compaction."""
    records = make_records(n, DIM)
    loads = math.ceil(n / LOAD_BATCH)
    store = open_store(legacy_url(size_folder, optimize_every=loads), SPEC)
    try:
        _, ns = timed(lambda: [store.upsert(records[s : s + LOAD_BATCH]) for s in range(0, n, LOAD_BATCH)])
        count = store.count()
    finally:
        store.close()
    if count != n:
        raise RuntimeError(f"legacy holds {count} records after loading {n}")
    return {"status": "ok", "seconds": ns / 1e9}


def measure_insert(folder: Path, n: int) -> dict[str, Any]:
    records = make_records(n, DIM)
    batches = [records[s : s + BATCH] for s in range(0, n, BATCH)]
    store = open_store(target_url(folder, "insert.db"), SPEC)
    watch = PeakRss()
    try:
        _, ns, memory = watch.run(lambda: [store.upsert(batch) for batch in batches])
        count = store.count()
    finally:
        store.close()
    return {"status": "ok", "rows": count, "seconds": ns / 1e9, "rows_per_s": rate(count, ns), **memory}


def measure_scan(url: str, n: int) -> dict[str, Any]:
    store = open_store(url, SPEC)
    watch = PeakRss()
    try:
        rows, ns, memory = watch.run(lambda: sum(len(batch) for batch in store.scan(BATCH)))
    finally:
        store.close()
    if rows != n:
        raise RuntimeError(f"scan returned {rows} rows of {n}")
    return {"status": "ok", "rows": rows, "seconds": ns / 1e9, "rows_per_s": rate(rows, ns), **memory}


def _open_pair(size_folder: Path, folder: Path) -> tuple[VectorStore, VectorStore, Outbox]:
    return (
        open_store(legacy_url(size_folder), SPEC),
        open_store(target_url(folder), SPEC),
        Outbox(folder / "outbox.db", SPEC.name),
    )


def _close(legacy: VectorStore, target: VectorStore, outbox: Outbox) -> None:
    outbox.close()
    target.close()
    legacy.close()


def land_a_write(outbox_path: Path) -> None:
    """Commit to the outbox what a live write commits there (an intent, then its clearing),
    through a connection of its own, without touching either store."""
    with Outbox(outbox_path, SPEC.name) as writer, writer.write_lock():
        writer.record(["bench-write"], "upsert", "legacy")
        writer.clear(["bench-write"])


def measure_backfill(
    size_folder: Path, folder: Path, n: int, trace: bool, *, writes: bool = False
) -> dict[str, Any]:
    """`writes`: a write lands after the first batch, so every later batch is re-read."""
    legacy, target, outbox = _open_pair(size_folder, folder)
    watch = PeakRss()

    def on_progress(progress: Progress) -> None:
        watch.sample(progress)
        if writes and progress.done == BATCH:
            land_a_write(folder / "outbox.db")

    def call() -> Any:
        return backfill(
            legacy,
            target,
            outbox,
            batch_size=BATCH,
            checkpoint=folder / "backfill.json",
            on_progress=on_progress,
        )

    try:
        if trace:
            result, peak = traced(call)
            return {"status": "ok", "traced_peak_mib": peak, "seconds": result.seconds}
        result, ns, memory = watch.run(call)
        count = target.count()
    finally:
        _close(legacy, target, outbox)
    if result.copied != n or count != n:
        raise RuntimeError(f"backfill copied {result.copied} of {n}; the target holds {count}")
    return {
        "status": "ok",
        "result": result.as_dict(),
        "seconds": ns / 1e9,
        "rows_per_s": rate(result.scanned, ns),
        **memory,
    }


class _OverBudget(Exception):
    """Raised from a progress callback to stop a run that has used up its time budget."""


def measure_verify(
    size_folder: Path, folder: Path, n: int, *, trace: bool, checkpointed: bool, budget: float
) -> dict[str, Any]:
    """Verify the backfilled pair; `checkpointed`: with a checkpoint file as `dualvec verify`
    passes one, stopped after `budget` seconds (its rate so far is then an upper bound: the
    later batches are the slower ones)."""
    legacy, target, outbox = _open_pair(size_folder, folder)
    watch = PeakRss()
    started = time.monotonic()
    progress: list[Progress] = []

    def on_progress(p: Progress) -> None:
        watch.sample(p)
        progress.append(p)
        if checkpointed and time.monotonic() - started > budget:
            raise _OverBudget

    def call() -> Any:
        return verify(
            legacy,
            target,
            outbox,
            primary="legacy",
            batch_size=BATCH,
            checkpoint=folder / "verify.db" if checkpointed else None,
            restart=True,
            on_progress=on_progress,
        )

    try:
        if trace:
            result, peak = traced(call)
            return {"status": "ok", "traced_peak_mib": peak, "seconds": result.seconds}
        try:
            result, ns, memory = watch.run(call)
        except _OverBudget:
            last = progress[-1]
            return {
                "status": "ok",
                "complete": False,
                "checked": last.done,
                "seconds": last.elapsed,
                "rows_per_s": last.done / last.elapsed,
                "reason": f"stopped at the {budget:.0f} s budget, {last.done:,} of {2 * n:,} checked",
            }
    finally:
        _close(legacy, target, outbox)
    checked = sum(result.checked.values())
    if not result.clean or checked != 2 * n:
        raise RuntimeError(f"verify after backfill: {result.summary()}")
    return {
        "status": "ok",
        "complete": True,
        "result": result.as_dict(),
        "seconds": ns / 1e9,
        "rows_per_s": rate(checked, ns),  # records checked, both passes
        "collection_rows_per_s": rate(n, ns),
        **memory,
    }


def worker(args: argparse.Namespace) -> dict[str, Any]:
    n, size_folder, folder = args.sizes[0], args.size_folder, args.folder
    if args.worker == "setup":
        return setup_legacy(size_folder, n)
    if args.worker == "insert":
        return measure_insert(folder, n)
    if args.worker == "scan-legacy":
        return measure_scan(legacy_url(size_folder), n)
    if args.worker == "scan-target":
        return measure_scan(target_url(folder), n)
    if args.worker in ("backfill", "backfill-writes"):
        writes = args.worker == "backfill-writes"
        if writes:
            folder = folder / "writes"  # a target of its own; verify and the scan read the other
            folder.mkdir()
        return measure_backfill(size_folder, folder, n, args.traced, writes=writes)
    checkpointed = args.worker == "verify-checkpoint"
    return measure_verify(
        size_folder, folder, n, trace=args.traced, checkpointed=checkpointed, budget=args.budget
    )


def run_worker(
    kind: str,
    n: int,
    size_folder: Path,
    folder: Path | None = None,
    *,
    trace: bool = False,
    budget: float = 0.0,
) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", kind, "--sizes", str(n), "--budget", str(budget)]
    command += ["--size-folder", str(size_folder), "--folder", str(folder or size_folder)]
    if trace:
        command.append("--traced")
    result, ns = timed(lambda: run_json_worker(command, WORKER_TIMEOUT_S))
    label = f"{kind}{' (traced)' if trace else ''}"
    progress(f"{label:>20} {n:>7,}: {result['status']} in {ns / 1e9:.1f} s")
    return result


# one size


def measure_size(root: Path, n: int, repeats: int, budget: float) -> dict[str, Any]:
    size_folder = root / f"n{n}"
    size_folder.mkdir()
    out: dict[str, Any] = {"n": n, "setup": run_worker("setup", n, size_folder), "rounds": []}
    if out["setup"]["status"] != "ok":
        return out
    for i in range(repeats):
        folder = size_folder / f"round{i}"
        folder.mkdir()
        found: dict[str, dict[str, Any]] = {}
        # The copy and its ceiling take turns going first; the scans too; verify needs the copy.
        copies = rotated(["insert", "backfill", "backfill-writes"], i)
        for kind in [*copies, *rotated(["scan-legacy", "scan-target"], i)]:
            if kind == "scan-target" and found["backfill"]["status"] != "ok":
                found[kind] = {"status": "error", "reason": "no backfilled target"}
                continue
            found[kind] = run_worker(kind, n, size_folder, folder)
        if found["backfill"]["status"] == "ok":
            found["verify"] = run_worker("verify", n, size_folder, folder)
        else:
            found["verify"] = {"status": "error", "reason": "no backfilled target"}
        out["rounds"].append(found)
        shutil.rmtree(folder)
    folder = size_folder / "traced"
    folder.mkdir()
    out["traced"] = {"backfill": run_worker("backfill", n, size_folder, folder, trace=True)}
    if out["traced"]["backfill"]["status"] == "ok":
        out["traced"]["verify"] = run_worker("verify", n, size_folder, folder, trace=True)
        out["verify_checkpoint"] = run_worker("verify-checkpoint", n, size_folder, folder, budget=budget)
    shutil.rmtree(size_folder)
    return out


def summarise(size: dict[str, Any]) -> dict[str, Any]:
    """Medians of rates and per-round ratios; the largest RSS growth of any round."""
    rounds = [r for r in size["rounds"] if all(r[k]["status"] == "ok" for k in ROUND_KINDS)]
    if not rounds:
        return {"n": size["n"], "status": "error", "reason": first_error(size)}

    def rates(kind: str) -> list[float]:
        return [r[kind]["rows_per_s"] for r in rounds]

    traced_runs = {op: size["traced"].get(op, {}) for op in ("backfill", "verify")}
    traced_peaks = {
        op: run["traced_peak_mib"] if run.get("status") == "ok" else None for op, run in traced_runs.items()
    }
    slower_scan = median(
        [min(r["scan-legacy"]["rows_per_s"], r["scan-target"]["rows_per_s"]) for r in rounds]
    )
    checkpointed = size.get("verify_checkpoint", {"status": "error", "reason": "not run"})
    if checkpointed["status"] == "ok":
        checkpointed = {**checkpointed, "ratio": checkpointed["rows_per_s"] / slower_scan}
    return {
        "n": size["n"],
        "status": "ok",
        "rounds": len(rounds),
        "verify_checkpoint": checkpointed,
        "rows_per_s": {kind: median(rates(kind)) for kind in ROUND_KINDS},
        "backfill_ratio": median([b / i for b, i in zip(rates("backfill"), rates("insert"), strict=True)]),
        "backfill_writes_ratio": median(
            [b / i for b, i in zip(rates("backfill-writes"), rates("insert"), strict=True)]
        ),
        "verify_ratio": median(
            [
                v / min(a, b)
                for v, a, b in zip(rates("verify"), rates("scan-legacy"), rates("scan-target"), strict=True)
            ]
        ),
        "rss_peak_growth_mib": {
            kind: max_or_none([r[kind]["rss_peak_growth_mib"] for r in rounds]) for kind in ROUND_KINDS
        },
        "traced_peak_mib": traced_peaks,
    }


def max_or_none(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if len(known) == len(values) and known else None


def first_error(size: dict[str, Any]) -> str:
    parts = [size["setup"], *(r[k] for r in size["rounds"] for k in ROUND_KINDS if k in r)]
    for part in parts:
        if part["status"] != "ok":
            return str(part.get("reason", part["status"]))
    return "no complete round"


# checks and tables


def checks(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    ok = [s for s in summaries if s["status"] == "ok"]
    for s in ok:
        r = s["rows_per_s"]
        found.append(
            {
                "check": "backfill / sqlite-vec insert",
                "n": s["n"],
                "measured": f"{r['backfill']:,.0f} / {r['insert']:,.0f} rows/s",
                "ratio": s["backfill_ratio"],
                "target": f">= {BACKFILL_TARGET}",
                "verdict": verdict(s["backfill_ratio"] >= BACKFILL_TARGET),
            }
        )
        found.append(
            {
                "check": "backfill with writes landing / sqlite-vec insert",
                "n": s["n"],
                "measured": f"{r['backfill-writes']:,.0f} / {r['insert']:,.0f} rows/s",
                "ratio": s["backfill_writes_ratio"],
                "target": "—",
                "verdict": "info",
            }
        )
        slower = min(r["scan-legacy"], r["scan-target"])
        found.append(
            {
                "check": "verify / slower store's scan",
                "n": s["n"],
                "measured": f"{r['verify']:,.0f} / {slower:,.0f} rows/s",
                "ratio": s["verify_ratio"],
                "target": f">= {VERIFY_TARGET}",
                "verdict": verdict(s["verify_ratio"] >= VERIFY_TARGET),
            }
        )
        checkpointed = s["verify_checkpoint"]
        if checkpointed["status"] == "ok":
            partial = "" if checkpointed["complete"] else " (stopped at budget: at most)"
            found.append(
                {
                    "check": "verify with checkpoint (as the CLI) / slower scan",
                    "n": s["n"],
                    "measured": f"{checkpointed['rows_per_s']:,.0f}{partial} / {slower:,.0f} rows/s",
                    "ratio": checkpointed["ratio"],
                    "target": f">= {VERIFY_TARGET}",
                    "verdict": verdict(checkpointed["complete"] and checkpointed["ratio"] >= VERIFY_TARGET),
                }
            )
    if len(ok) >= 2:
        small, large = ok[0], ok[-1]
        for op in ("backfill", "verify"):
            rss_slack = SQLITE_CACHE_MIB * TARGET_CONNECTIONS[op]
            for what, key, (factor, slack) in (
                ("traced peak", "traced_peak_mib", FLAT_TRACED),
                ("RSS peak growth", "rss_peak_growth_mib", (FLAT_RSS_FACTOR, rss_slack)),
            ):
                a, b = small[key][op], large[key][op]
                if a is None or b is None:
                    continue
                found.append(
                    {
                        "check": f"{op} {what}, {large['n']:,} vs {small['n']:,}",
                        "n": large["n"],
                        "measured": f"{b:.1f} vs {a:.1f} MiB",
                        "ratio": b / a if a > 0 else math.inf,
                        "target": f"<= {factor} x + {slack:.0f} MiB",
                        "verdict": verdict(b <= factor * a + slack),
                    }
                )
    return found


def _mib(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def rate_rows(summaries: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for s in summaries:
        if s["status"] != "ok":
            rows.append([f"{s['n']:,}", *["—"] * 10, f"error: {s['reason']}"])
            continue
        r = s["rows_per_s"]
        checkpointed = s["verify_checkpoint"]
        notes = [f"median of {s['rounds']}"]
        if checkpointed["status"] != "ok":
            notes.append(f"verify with checkpoint: {checkpointed['status']}: {checkpointed['reason']}")
        elif not checkpointed["complete"]:
            notes.append(f"verify with checkpoint {checkpointed['reason']}")
        rows.append(
            [
                f"{s['n']:,}",
                count_cell(r["insert"]),
                count_cell(r["backfill"]),
                f"{s['backfill_ratio']:.2f}",
                count_cell(r["backfill-writes"]),
                f"{s['backfill_writes_ratio']:.2f}",
                count_cell(r["scan-legacy"]),
                count_cell(r["scan-target"]),
                count_cell(r["verify"]),
                f"{s['verify_ratio']:.2f}",
                "—" if checkpointed["status"] != "ok" else count_cell(checkpointed["rows_per_s"]),
                "; ".join(notes),
            ]
        )
    return rows


MEMORY_ROWS = (
    ("backfill", "backfill"),
    ("backfill-writes", "backfill, writes landing"),
    ("verify", "verify"),
    ("insert", "sqlite-vec insert (reference)"),
    ("scan-legacy", "LanceDB scan (reference)"),
    ("scan-target", "sqlite-vec scan (reference)"),
)


def memory_table(summaries: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """One row per operation, one column per size: flat means the same number across a row."""
    ok = [s for s in summaries if s["status"] == "ok"]
    headers = ["operation"]
    headers += [f"RSS peak growth, {s['n']:,}" for s in ok]
    headers += [f"traced peak, {s['n']:,}" for s in ok]
    rows = [
        [
            label,
            *(_mib(s["rss_peak_growth_mib"][kind]) for s in ok),
            *(_mib(s["traced_peak_mib"].get(kind)) for s in ok),
        ]
        for kind, label in MEMORY_ROWS
    ]
    rows.append(
        [
            "verify, checkpoint (CLI)",
            *(_mib(s["verify_checkpoint"].get("rss_peak_growth_mib")) for s in ok),
            *("—" for _ in ok),
        ]
    )
    return headers, rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__, worker=["setup", *ROUND_KINDS, "verify-checkpoint"])
    add_sizes(parser, SIZES, "comma-separated collection sizes (default 10000,100000)")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="rounds per size (median)")
    parser.add_argument(
        "--budget",
        type=float,
        default=BUDGET_S,
        help="seconds after which the verify with a checkpoint is stopped (default %(default)s)",
    )
    parser.add_argument("--size-folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1 or min(args.sizes) < BATCH:
        parser.error(f"--repeats must be at least 1 and every size at least {BATCH}")
    args.sizes = sorted(set(args.sizes)) if not args.worker else args.sizes
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    start = time.perf_counter()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="dualvec-bench-") as tmp:
        sizes = [measure_size(Path(tmp), n, args.repeats, args.budget) for n in args.sizes]
    summaries = [summarise(size) for size in sizes]
    found = checks(summaries)
    load = {"before": load_before, "after": os.getloadavg()}
    print(f"{DIM} dims, cosine, LanceDB -> sqlite-vec, batches of {BATCH}, {args.repeats} round(s)")
    before, after = load["before"][0], load["after"][0]
    print(f"(1-min load average {before:.2f} before, {after:.2f} after, on {os.cpu_count()} CPUs)\n")
    print("**Throughput** (rows/s; verify counts records checked on both sides)\n")
    headers = ["vectors", "sqlite-vec insert", "backfill", "backfill / insert"]
    headers += ["backfill, writes landing", "writes landing / insert", "LanceDB scan"]
    headers += ["sqlite-vec scan", "verify", "verify / slower scan", "verify, checkpoint (CLI)", "notes"]
    print(markdown_table(headers, rate_rows(summaries)))
    print("\n**Memory** (MiB; RSS: largest peak growth of any round; traced: one run under tracemalloc)\n")
    print(markdown_table(*memory_table(summaries)))
    if found:
        print()
        rows = [
            [c["check"], f"{c['n']:,}", c["measured"], f"{c['ratio']:.2f}", c["target"], c["verdict"]]
            for c in found
        ]
        print(markdown_table(["check", "vectors", "measured", "ratio", "target", "result"], rows))
    path = write_results(
        "backfill",
        {
            "benchmark": "backfill",
            "machine": {**machine(), "packages": package_versions(PACKAGES), "load_average": load},
            "config": {
                "dim": DIM,
                "metric": SPEC.metric,
                "batch": BATCH,
                "load_batch": LOAD_BATCH,
                "repeats": args.repeats,
                "sizes": args.sizes,
            },
            "sizes": sizes,
            "summary": summaries,
            "checks": found,
            "wall_s": time.perf_counter() - start,
        },
    )
    progress(f"\nwrote {path} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
