"""Migration benchmark: what one `Migration` of several collections saves over one
`Router.over` per collection, and what its routers cost per search.

Data: --collections collections (default 6) of --records records each (default 10k), from
`dualvec.testing.make_records` (random float32 vectors of 384 dimensions, four filterable metadata
fields and a stored-only title), cosine, k=10. All legacy collections live in one sqlite-blob
file (a table each), all targets in one sqlite-vec file (a vec0 table each), loaded once; every
measurement runs in a fresh process over those files, with an outbox and flag file of its own.

- footprint: the same open stores wrapped two ways, in turn (--repeats times each, taking turns
  going first): one `Migration` of every collection, or one `Router.over(legacy, target)` per
  collection (each its own migration: outbox connection, flag watcher, metrics, shadow pool,
  secondary-writer pool, replayer). Both start the replayer, as a service would. Before the
  wrappers open, the bare stores answer the same searches and take the same writes (their page
  caches and WAL warm), so what is measured is the wrappers. Measured against that baseline:
  Python threads (`threading.active_count()`), OS threads (`Threads:` of /proc/self/status) and
  RSS, right after opening and again after traffic through every router in phase dual with
  shadow_percent 100 (--searches searches each, every one shadowed on the other store, then two
  batches rewriting existing records: the outbox, the secondary writer) so that pool threads,
  started lazily, count too; then threads left once everything is closed. A separate run per
  layout, under tracemalloc, gives the Python and NumPy allocations the wrappers keep after
  opening and the peak during traffic (RSS is not taken from it: tracemalloc's own bookkeeping
  would inflate it). RSS is the median over repeats.
- search: one `Migration` of every collection, phase dual, read_percent 100, shadow 0, so every
  read is served by the sqlite-vec target. Query i goes to collection i mod --collections;
  `migration[name].search` and that router's own target store (the very same object) answer it
  one after the other, taking turns going first. Reported are the medians of the per-query
  difference and ratio.

Design, per process: a `Migration` starts the flag watcher and the replayer (2 threads); its
shadow pool grows to `shadow.workers` (2) threads and its secondary-writer pool to at most
min(collections, 8), both as work arrives. N routers opened alone have N of each.

Reading the numbers: the RSS that traffic adds is mostly not live objects (tracemalloc sees about
a megabyte kept) but memory glibc keeps in per-thread malloc arenas (a thread that allocates gets
an arena of its own, up to 8 per core) after a search's scratch buffers are freed; it stays after
closing, and grows with the number of threads that searched or wrote, not with the collections.
With MALLOC_ARENA_MAX=1 both layouts add about the same. The shared shadow pool is also a shared
budget: one Migration has `shadow.workers` threads and `shadow.max_pending` slots for all its
collections where N routers have N of each, so under back-to-back shadowed reads it drops
("saturated") sooner; the row of drops shows when it did. The search difference is the router's
own Python work (validating the query, reading the flags, two metric updates: about 20 µs when
run in a loop) run with cold CPU caches after each scan, so it swings with whatever else the
machine is doing; compare it across runs, not within one.

Targets, printed as PASS/FAIL:

- search: router - bare <= 50 µs per query (median), at 10k records per collection;
- threads: one Migration stays within the design bound above, after traffic.

Run (about 4 minutes on 2 cores; --quick, 1000 records and fewer queries, under a minute):

    .venv/bin/python benchmarks/migration.py
    .venv/bin/python benchmarks/migration.py --quick

Prints Markdown tables on stdout and progress on stderr; writes the full numbers to
benchmarks/results/migration.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    CHECK_HEADERS,
    MIB,
    ROUTER_VS_BARE_HEADERS,
    as_records,
    benchmark_parser,
    machine,
    markdown_table,
    median,
    proc_status,
    progress,
    rotated,
    router_diff_check,
    router_vs_bare,
    router_vs_bare_cells,
    rss_bytes,
    run_json_worker,
    timed,
    verdict,
    write_results,
)

from dualvec import open_store
from dualvec.closing import Closing
from dualvec.metrics import DROP_REASONS, DualvecMetrics
from dualvec.migration import Migration
from dualvec.protocol import VectorStore
from dualvec.router import Router
from dualvec.settings import Settings, ShadowSettings
from dualvec.testing import make_records, sample_spec

LAYOUTS = ("migration", "routers")
COLLECTIONS = 6
RECORDS = 10_000
DIM = 384
K = 10
BATCH = 1000
WARMUP = 3
QUERIES = 300
SEARCHES = 20
WRITE_ROWS = 100  # rewritten per collection during traffic, in two batches
REPEATS = 3
SHADOW_WORKERS = ShadowSettings().workers
MAX_SECONDARY_WRITERS = 8  # dualvec.migration._MAX_SECONDARY_WRITERS
SEARCH_DIFF_TARGET_US = 50.0
SEARCH_DIFF_SIZE = 10_000
QUICK = {"records": 1000, "queries": 30, "searches": 5, "repeats": 1}


def names(collections: int) -> list[str]:
    return [f"col{i}" for i in range(collections)]


def urls(data: Path, name: str) -> tuple[str, str]:
    """One sqlite-blob file and one sqlite-vec file hold every collection, a table each."""
    return f"sqlite-blob://{data}/legacy.db?table={name}", f"sqlite-vec://{data}/target.db"


def open_stores(data: Path, collections: int) -> dict[str, tuple[VectorStore, VectorStore]]:
    stores = {}
    for name in names(collections):
        spec = sample_spec(name=name, dim=DIM)
        legacy_url, target_url = urls(data, name)
        stores[name] = (open_store(legacy_url, spec), open_store(target_url, spec))
    return stores


def load(data: Path, collections: int, records: int) -> None:
    """Write the same records into both stores of every collection."""
    stores = open_stores(data, collections)
    try:
        for i, (name, pair) in enumerate(stores.items()):
            rows = make_records(records, DIM, seed=i, prefix=f"{name}-")
            for start in range(0, records, BATCH):
                for store in pair:
                    store.upsert(rows[start : start + BATCH])
    finally:
        for pair in stores.values():
            for store in pair:
                store.close()


def settings_in(state: Path, **flags: Any) -> Settings:
    return Settings(
        flag_file=state / "flags.json",
        outbox_path=state / "outbox.db",
        shadow=ShadowSettings(mismatch_log=state / "mismatches.jsonl"),
        **flags,
    )


def enter_state(data: Path) -> Path:
    """A fresh folder for this process's outbox and flag file, made the working directory so
    the repository's config/dualvec.toml does not reach `Settings`."""
    state = data / f"state-{uuid.uuid4().hex[:8]}"
    state.mkdir()
    os.chdir(state)
    return state


# footprint


def snapshot() -> dict[str, Any]:
    """Threads (Python's, and the kernel's count with native ones) and RSS of this process now."""
    gc.collect()
    return {"py_threads": threading.active_count(), "os_threads": proc_status("Threads"), "rss": rss_bytes()}


def delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    def diff(key: str) -> Any:
        return None if after[key] is None or before[key] is None else after[key] - before[key]

    rss = diff("rss")
    return {
        "py_threads": diff("py_threads"),
        "os_threads": diff("os_threads"),
        "rss_mib": None if rss is None else rss / MIB,
    }


def thread_kinds() -> dict[str, int]:
    """Live threads by name, pool numbering dropped (`dualvec-shadow_1` -> `dualvec-shadow`)."""
    return dict(sorted(Counter(re.sub(r"_\d+$", "", t.name) for t in threading.enumerate()).items()))


def wrap(
    layout: str, stores: dict[str, tuple[VectorStore, VectorStore]], settings: Settings
) -> tuple[dict[str, Router], list[DualvecMetrics], list[Closing]]:
    """The stores behind routers: one migration of all, or a migration of its own each."""
    if layout == "migration":
        migration = Migration(stores, settings)
        return dict(migration.routers), [migration.metrics], [migration]
    routers, registries = {}, []
    for name, (legacy, target) in stores.items():
        metrics = DualvecMetrics()  # the default Router.over builds; kept to read the counts back
        routers[name] = Router.over(legacy, target, settings, metrics=metrics)
        registries.append(metrics)
    return routers, registries, list(routers.values())


def sample_sum(registries: list[DualvecMetrics], metric: str, collections: list[str], **labels: str) -> float:
    return sum(
        m.registry.get_sample_value(metric, {"collection": name, **labels}) or 0.0
        for m in registries
        for name in collections
    )


def wait_for_shadows(
    registries: list[DualvecMetrics], collections: list[str], expected: int
) -> dict[str, int]:
    """Until every shadow read submitted is compared or dropped (30 s at most); the counts, drops
    by reason."""
    deadline = time.monotonic() + 30
    while True:
        counts = {
            outcome: int(
                sample_sum(registries, "dualvec_shadow_comparisons_total", collections, outcome=outcome)
            )
            for outcome in ("match", "mismatch", "in_flight")
        }
        counts |= {
            f"dropped_{reason}": int(
                sample_sum(registries, "dualvec_shadow_dropped_total", collections, reason=reason)
            )
            for reason in DROP_REASONS
        }
        if sum(counts.values()) >= expected or time.monotonic() > deadline:
            return counts
        time.sleep(0.01)


def measure_footprint(
    data: Path, layout: str, collections: int, searches: int, trace: bool
) -> dict[str, Any]:
    state = enter_state(data)
    stores = open_stores(data, collections)
    queries = np.random.default_rng(7).standard_normal((searches, DIM), dtype=np.float32)
    # Existing records, read back and written again: traffic leaves the data as it found it.
    rewrite = {
        name: target.get([f"{name}-{j}" for j in range(WRITE_ROWS)]) for name, (_, target) in stores.items()
    }
    for name, pair in stores.items():  # warm the bare stores: caches and WAL are not the wrappers'
        for store in pair:
            for query in queries:
                store.search(query, k=K)
            store.upsert(rewrite[name])
    before = snapshot()
    if trace:
        tracemalloc.start()
    try:
        (routers, registries, closables), open_ns = timed(
            partial(wrap, layout, stores, settings_in(state, phase="dual", shadow_percent=100))
        )
        opened = snapshot()
        if trace:
            traced_open = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
        for name, router in routers.items():
            for query in queries:
                router.search(query, k=K)
            half = WRITE_ROWS // 2
            router.upsert(rewrite[name][:half])
            router.upsert(rewrite[name][half:])
        shadows = wait_for_shadows(registries, list(routers), collections * searches)
        served = sample_sum(registries, "dualvec_reads_total", list(routers), store="legacy")
        depth = sum(router.outbox.stats().depth for router in routers.values())
        kinds = thread_kinds()
        after = snapshot()
        if trace:
            traced_after, traced_peak = tracemalloc.get_traced_memory()
    finally:
        if trace:
            tracemalloc.stop()
    for closable in closables:
        closable.close()
    closed = snapshot()
    result: dict[str, Any] = {
        "status": "ok",
        "layout": layout,
        "collections": collections,
        "open_ms": open_ns / 1e6,
        "baseline": before,
        "opened": delta(opened, before),
        "after_traffic": delta(after, before),
        "after_close": delta(closed, before),
        "threads_after_traffic": kinds,
        "searches": collections * searches,
        "served_by_legacy": served,
        "shadows": shadows,
        "outbox_depth": depth,
    }
    if trace:
        result["traced"] = {
            "after_open_mib": traced_open / MIB,
            "after_traffic_mib": traced_after / MIB,
            "traffic_peak_mib": traced_peak / MIB,
        }
    return result


# search


def measure_search(data: Path, collections: int, queries: int) -> dict[str, Any]:
    state = enter_state(data)
    warmup = WARMUP * collections  # a few untimed queries for every collection
    vectors = np.random.default_rng(1).standard_normal((warmup + queries, DIM), dtype=np.float32)
    with Migration(
        open_stores(data, collections), settings_in(state, phase="dual", read_percent=100)
    ) as migration:
        order = list(migration)
        compared = router_vs_bare([migration[name] for name in order], vectors, k=K, warmup=warmup)
        served = sample_sum([migration.metrics], "dualvec_reads_total", order, store="target")
    return {
        "status": "ok",
        "collections": collections,
        "warmup": warmup,
        **compared,
        "served_by_target": served,
    }


# orchestration


def run_worker(
    kind: str, data: Path, args: argparse.Namespace, layout: str = "", trace: bool = False
) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--data", str(data)]
    command += ["--collections", str(args.collections), "--records", str(args.records)]
    command += ["--queries", str(args.queries), "--searches", str(args.searches)]
    if layout:
        command += ["--layout", layout]
    if trace:
        command.append("--traced")
    start = time.perf_counter()
    result = run_json_worker(command, timeout=1800)
    label = f"{kind} {layout}{' (traced)' if trace else ''}"
    progress(f"{label:>28}: {result['status']} in {time.perf_counter() - start:.1f} s")
    return result


def design(collections: int) -> dict[str, dict[str, int]]:
    """Threads the design allows: at opening, and at most once the pools have grown."""
    one = {"opened": 2, "after_traffic": 2 + SHADOW_WORKERS + min(collections, MAX_SECONDARY_WRITERS)}
    alone = {"opened": 2 * collections, "after_traffic": collections * (2 + SHADOW_WORKERS + 1)}
    return {"migration": one, "routers": alone}


def summarise(runs: list[dict[str, Any]], traced: dict[str, Any]) -> dict[str, Any]:
    """Per layout: the median of each measure over its (untraced) runs."""
    summary: dict[str, Any] = {}
    for layout in LAYOUTS:
        ok = [r for r in runs if r["layout"] == layout and r["status"] == "ok"]
        if not ok:
            summary[layout] = None
            continue

        def med(stage: str, key: str, ok: list[dict[str, Any]] = ok) -> float | None:
            values = [r[stage][key] for r in ok if r[stage][key] is not None]
            return median(values) if values else None

        summary[layout] = {
            "runs": len(ok),
            **{
                f"{stage}_{key}": med(stage, key)
                for stage in ("opened", "after_traffic", "after_close")
                for key in ("py_threads", "os_threads", "rss_mib")
            },
            "open_ms": median([r["open_ms"] for r in ok]),
            "shadows_dropped": median(
                [sum(v for k, v in r["shadows"].items() if k.startswith("dropped")) for r in ok]
            ),
            "shadows_dropped_max": max(
                sum(v for k, v in r["shadows"].items() if k.startswith("dropped")) for r in ok
            ),
            "threads_after_traffic": ok[-1]["threads_after_traffic"],
            "traced": traced.get(layout, {}).get("traced"),
        }
    return summary


def _num(value: float | None, fmt: str = "{:.0f}") -> str:
    return "—" if value is None else fmt.format(value)


def _ratio(many: float | None, one: float | None) -> str:
    return "—" if many is None or one is None or one <= 0 else f"{many / one:.1f}"


def _kinds(summary: dict[str, Any] | None) -> str:
    if summary is None:
        return "—"
    kinds = summary["threads_after_traffic"]
    return ", ".join(
        f"{name.removeprefix('dualvec-')} {n}" for name, n in kinds.items() if name.startswith("dualvec")
    )


def footprint_table(
    summary: dict[str, Any], collections: int, searches: int
) -> tuple[list[str], list[list[str]]]:
    bound = design(collections)
    one, many = summary["migration"], summary["routers"]
    headers = ["added to the warm bare stores", "one Migration", f"{collections} x Router.over"]
    headers += [f"{collections} x Router.over / one Migration", "design (one / many)"]

    def row(label: str, key: str, fmt: str = "{:.0f}", design_text: str = "") -> list[str]:
        a = None if one is None else one[key]
        b = None if many is None else many[key]
        return [label, _num(a, fmt), _num(b, fmt), _ratio(b, a), design_text]

    def traced(layout: dict[str, Any] | None, key: str) -> float | None:
        return None if layout is None or layout["traced"] is None else layout["traced"][key]

    rows = [
        row(
            "Python threads, opened",
            "opened_py_threads",
            design_text=f"{bound['migration']['opened']} / {bound['routers']['opened']}",
        ),
        row(
            "Python threads, after traffic",
            "after_traffic_py_threads",
            design_text=f"≤ {bound['migration']['after_traffic']} / ≤ {bound['routers']['after_traffic']}",
        ),
        row("OS threads, after traffic", "after_traffic_os_threads"),
        row("threads left after close", "after_close_py_threads", design_text="0 / 0"),
        row("RSS, opened, MiB", "opened_rss_mib", "{:.1f}"),
        row("RSS, after traffic, MiB", "after_traffic_rss_mib", "{:.1f}"),
    ]
    for label, key in (
        ("tracemalloc, kept after opening, MiB", "after_open_mib"),
        ("tracemalloc, peak during traffic, MiB", "traffic_peak_mib"),
    ):
        a, b = traced(one, key), traced(many, key)
        rows.append([label, _num(a, "{:.2f}"), _num(b, "{:.2f}"), _ratio(b, a), ""])
    rows.append(row("time to open, ms", "open_ms", "{:.1f}"))
    rows.append(
        [
            f"shadow reads dropped of {searches} (median, max over runs)",
            *(
                "—" if s is None else f"{s['shadows_dropped']:.0f}, {s['shadows_dropped_max']}"
                for s in (one, many)
            ),
            "",
            "",
        ]
    )
    rows.append(["dualvec threads after traffic", _kinds(one), _kinds(many), "", ""])
    return headers, rows


def search_table(result: dict[str, Any], records: int) -> tuple[list[str], list[list[str]]]:
    headers = ["collections x vectors", *ROUTER_VS_BARE_HEADERS, "served by target"]
    if result["status"] != "ok":
        return headers, [["—", *["—"] * 7, f"{result['status']}: {result['reason']}"]]
    r = result
    return headers, [
        [
            f"{r['collections']} x {records:,}",
            *router_vs_bare_cells(r),
            f"{r['served_by_target']:.0f} / {r['router']['n'] + r['warmup']}",
        ]
    ]


def checks(summary: dict[str, Any], search: dict[str, Any], args: argparse.Namespace) -> list[list[str]]:
    found = []
    if search["status"] == "ok" and args.records == SEARCH_DIFF_SIZE:
        label = f"search, router - bare, {args.collections} x {args.records:,}"
        found.append(router_diff_check(label, search["diff_median_us"], SEARCH_DIFF_TARGET_US))
    one = summary["migration"]
    if one is not None and one["after_traffic_py_threads"] is not None:
        bound = design(args.collections)["migration"]["after_traffic"]
        threads = one["after_traffic_py_threads"]
        found.append(
            [
                f"threads of one Migration of {args.collections}, after traffic",
                f"{threads:.0f}",
                f"<= {bound}",
                verdict(threads <= bound),
            ]
        )
    return found


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__, worker=("footprint", "search"))
    parser.add_argument("--collections", type=int, default=COLLECTIONS, help="collections open at once")
    parser.add_argument("--records", type=int, help=f"records per collection (default {RECORDS:,})")
    parser.add_argument("--queries", type=int, help=f"search: timed queries (default {QUERIES})")
    parser.add_argument(
        "--searches", type=int, help=f"footprint: shadowed searches per collection (default {SEARCHES})"
    )
    parser.add_argument("--repeats", type=int, help=f"footprint: runs per layout, median (default {REPEATS})")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: defaults become {', '.join(f'--{k} {v}' for k, v in QUICK.items())}",
    )
    parser.add_argument("--layout", choices=LAYOUTS, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    defaults = {"records": RECORDS, "queries": QUERIES, "searches": SEARCHES, "repeats": REPEATS}
    for key, value in (QUICK if args.quick else defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if min(args.collections, args.queries, args.searches, args.repeats) < 1 or args.records < WRITE_ROWS:
        parser.error(
            f"--collections, --queries, --searches, --repeats must be >= 1, --records >= {WRITE_ROWS}"
        )
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker == "footprint":
        print(
            json.dumps(
                measure_footprint(args.data, args.layout, args.collections, args.searches, args.traced)
            )
        )
        return
    if args.worker == "search":
        print(json.dumps(measure_search(args.data, args.collections, args.queries)))
        return
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dualvec-bench-") as folder:
        data = Path(folder)
        _, load_ns = timed(partial(load, data, args.collections, args.records))
        progress(f"{'load':>28}: {args.collections} x {args.records:,} records in {load_ns / 1e9:.1f} s")
        runs = [
            {"layout": layout, **run_worker("footprint", data, args, layout)}
            for i in range(args.repeats)
            for layout in rotated(LAYOUTS, i)
        ]
        traced = {layout: run_worker("footprint", data, args, layout, trace=True) for layout in LAYOUTS}
        search = run_worker("search", data, args)
    summary = summarise(runs, traced)
    found = checks(summary, search, args)
    print(f"{args.collections} collections x {args.records:,} records, {DIM} dims, cosine, k={K}\n")
    title = (
        f"Footprint, one Migration vs one Router.over per collection (phase dual, shadow 100%, "
        f"{args.searches} searches and 2 writes per collection; RSS median of {args.repeats})"
    )
    print(f"**{title}**\n")
    print(markdown_table(*footprint_table(summary, args.collections, args.collections * args.searches)))
    title = f"Search through `migration[name]` vs its bare sqlite-vec target ({args.queries} queries)"
    print(f"\n**{title}**\n")
    print(markdown_table(*search_table(search, args.records)))
    if found:
        print()
        print(markdown_table(CHECK_HEADERS, found))
    failed = [r for r in [*runs, *traced.values(), search] if r["status"] != "ok"]
    for r in failed:
        progress(f"\nfailed: {r.get('layout', 'search')}: {r['reason']}")
    path = write_results(
        "migration",
        {
            "benchmark": "migration",
            "machine": machine(),
            "config": {
                "collections": args.collections,
                "records": args.records,
                "dim": DIM,
                "metric": "cosine",
                "k": K,
                "warmup_per_collection": WARMUP,
                "queries": args.queries,
                "searches": args.searches,
                "write_rows": WRITE_ROWS,
                "repeats": args.repeats,
                "quick": args.quick,
                "shadow_workers": SHADOW_WORKERS,
            },
            "design_threads": design(args.collections),
            "summary": summary,
            "footprint_runs": runs,
            "footprint_traced": traced,
            "search": search,
            "checks": as_records(CHECK_HEADERS, found),
            "wall_s": time.perf_counter() - start,
        },
    )
    progress(f"\nwrote {path}")


if __name__ == "__main__":
    main()
