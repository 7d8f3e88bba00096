"""Store benchmark: insert, search and scan for every dualvec backend, beside hand-written
references measured in the same run.

Data: 10k and 100k random float32 vectors of 384 dimensions, cosine, with two filterable metadata
fields (`lang` str, `year` int). Per store and size, in a fresh temp dir:

- insert: rows/s of `store.upsert` in batches of 1000 into an empty store;
- search: p50/p95 latency of `store.search(q, k=10)` over --queries random queries (after 3
  warm-up queries), and recall@10 against exact NumPy search;
- scan: rows/s of `store.scan(batch_size=1000)` over every record, and its memory. The
  tracemalloc peak (Python and NumPy allocations) is bounded by batch_size, so it should be the
  same at 10k and 100k. The RSS growth during the scan also counts native memory: for the SQLite
  stores mostly the scan connection's page cache, which fills up to its cache_size (64 MiB, set
  by `dualvec.sqlite_driver.connect`) and then stays there whatever the collection size.

References, measured in the sqlite-vec store's process on the same data:

- numpy exact: normalised matrix @ query, then argpartition; p50/p95;
- vec0 by hand: `executemany` INSERT into an empty vec0 table with the same batches (one
  transaction each), rows/s; `SELECT id, distance FROM t WHERE embedding MATCH ? AND k = ?`,
  p50/p95. The connection comes from `dualvec.sqlite_driver.connect`, as the store's does.

Store and hand-written calls alternate batch by batch and query by query, and which one goes
first alternates too, so noise on the machine hits both alike. Targets, printed as PASS/FAIL:

- sqlite-vec store search p50 / hand vec0 p50 <= 1.05 at 100k vectors;
- sqlite-vec store upsert rows/s / hand executemany rows/s >= 0.7 (median batch times).

Each store and size runs in its own process, so one store's memory never shows in another's
numbers, and a missing package or adapter, or a crash, becomes a row of the table rather than the
end of the run. An insert that runs past --budget seconds is stopped there and that size is
reported as skipped, with the rows it got through.

Run (about 6 minutes on 2 cores, 2 of them Qdrant local's 100k insert hitting the budget):

    .venv/bin/python benchmarks/stores.py
    .venv/bin/python benchmarks/stores.py --stores sqlite-vec,memory --sizes 10000 --queries 50

Prints a Markdown table (for the README) on stdout and progress on stderr; writes the full
numbers to benchmarks/results/stores.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    MIB,
    Matrix,
    Search,
    add_sizes,
    add_subset,
    benchmark_parser,
    count_cell,
    latency,
    machine,
    markdown_table,
    median,
    ms_cell,
    numpy_search,
    package_versions,
    progress,
    rate,
    rss_bytes,
    run_json_worker,
    store_search,
    store_url,
    timed,
    verdict,
    write_results,
)

from dualvec import CollectionSpec, FieldSpec, Record, VectorStore, open_store
from dualvec.sqlite_driver import connect
from dualvec.testing.data import LANGS

STORES = ("sqlite-vec", "sqlite-blob", "memory", "lancedb", "qdrant-local", "sqlite-vss")
SIZES = (10_000, 100_000)
DIM = 384
K = 10
BATCH = 1000
WARMUP = 3
SEARCH_TARGET = 1.05
SEARCH_TARGET_SIZE = 100_000
UPSERT_TARGET = 0.7
PACKAGES = ("sqlite-vec", "pysqlite3-binary", "lancedb", "pyarrow", "qdrant-client", "sqlite-vss")

SPEC = CollectionSpec(
    name="bench",
    dim=DIM,
    metric="cosine",
    model="bench-embedder",
    fields={"lang": FieldSpec(type="str"), "year": FieldSpec(type="int")},
)
HAND_TABLE = (
    f"CREATE VIRTUAL TABLE t USING vec0(id text primary key, "
    f"embedding float[{DIM}] distance_metric=cosine, lang text, year integer)"
)
HAND_INSERT = "INSERT INTO t (id, embedding, lang, year) VALUES (?, ?, ?, ?)"
HAND_QUERY = "SELECT id, distance FROM t WHERE embedding MATCH ? AND k = ?"


@dataclass(frozen=True)
class Data:
    records: list[Record]
    normed: Matrix  # unit rows, for the NumPy reference
    queries: Matrix  # WARMUP warm-up queries first
    truth: list[set[str]]  # exact top-k ids per query


def make_data(n: int, queries: int) -> Data:
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((n, DIM), dtype=np.float32)
    records = [
        Record(f"doc-{i}", matrix[i], {"lang": LANGS[i % len(LANGS)], "year": 2000 + i % 25})
        for i in range(n)
    ]
    normed = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    qs = np.random.default_rng(1).standard_normal((WARMUP + queries, DIM), dtype=np.float32)
    scores = normed @ (qs / np.linalg.norm(qs, axis=1, keepdims=True)).T
    best = np.argpartition(-scores, K, axis=0)[:K]
    truth = [{f"doc-{i}" for i in best[:, q]} for q in range(len(qs))]
    return Data(records, normed, qs, truth)


class HandVec0:
    """The reference: a bare vec0 table written and queried by hand, no dualvec code in the path."""

    def __init__(self, path: Path) -> None:
        self.conn = connect(path)
        self.conn.execute(HAND_TABLE)

    def insert(self, batch: list[Record]) -> None:
        rows = [(r.id, r.vector.tobytes(), r.metadata["lang"], r.metadata["year"]) for r in batch]
        self.conn.execute("BEGIN")
        self.conn.executemany(HAND_INSERT, rows)
        self.conn.execute("COMMIT")

    def search(self, query: Matrix) -> list[str]:
        return [row[0] for row in self.conn.execute(HAND_QUERY, (query.tobytes(), K)).fetchall()]

    def close(self) -> None:
        self.conn.close()


def run_inserts(
    store: VectorStore, hand: HandVec0 | None, records: list[Record], budget_s: float
) -> dict[str, Any]:
    """Upsert every batch, alternating with the hand-written insert; stop once past the budget."""
    samples: dict[str, list[int]] = {"store": [], "hand": []}
    rows = 0
    for i, start in enumerate(range(0, len(records), BATCH)):
        batch = records[start : start + BATCH]
        calls: list[tuple[str, Callable[[], None]]] = [("store", partial(store.upsert, batch))]
        if hand is not None:
            calls.append(("hand", partial(hand.insert, batch)))
        for name, call in calls if i % 2 == 0 else calls[::-1]:
            samples[name].append(timed(call)[1])
        rows += len(batch)
        if sum(samples["store"]) > budget_s * 1e9:
            break
    result: dict[str, Any] = {name: _insert_stats(rows, ns) for name, ns in samples.items() if ns}
    result["complete"] = rows == len(records)
    return result


def _insert_stats(rows: int, batch_ns: list[int]) -> dict[str, Any]:
    return {
        "rows": rows,
        "seconds": sum(batch_ns) / 1e9,
        "rows_per_s": rate(rows, sum(batch_ns)),
        "batch": latency(batch_ns),
    }


def run_searches(store: VectorStore, hand: HandVec0 | None, data: Data) -> dict[str, Any]:
    """Time each query on the store and the references in turn; every call sees the same query."""
    calls: list[tuple[str, Search]] = [("store", store_search(store, K))]
    if hand is not None:
        ids = [record.id for record in data.records]
        calls += [("hand", hand.search), ("numpy", numpy_search(data.normed, ids, K))]
    samples: dict[str, list[int]] = {name: [] for name, _ in calls}
    hits: dict[str, int] = dict.fromkeys(samples, 0)
    for i, query in enumerate(data.queries):
        for name, search in calls if i % 2 == 0 else calls[::-1]:
            ids, ns = timed(partial(search, query))
            if i >= WARMUP:
                samples[name].append(ns)
                hits[name] += len(data.truth[i].intersection(ids))
    result: dict[str, Any] = {
        name: {**latency(ns), "recall": hits[name] / (K * len(ns)), "samples_ms": [t / 1e6 for t in ns]}
        for name, ns in samples.items()
    }
    if hand is not None:
        pairs = zip(samples["store"], samples["hand"], strict=True)
        result["paired_ratio_median"] = median([s / h for s, h in pairs])
    return result


def run_scan(store: VectorStore, n: int) -> dict[str, Any]:
    """One timed pass sampling RSS after each batch, then one pass under tracemalloc."""
    rows = 0
    rss = [rss_bytes()]
    start = time.perf_counter_ns()
    for batch in store.scan(batch_size=BATCH):
        rows += len(batch)
        rss.append(rss_bytes())
    elapsed = time.perf_counter_ns() - start
    gc.collect()
    tracemalloc.start()
    traced_rows = sum(len(batch) for batch in store.scan(batch_size=BATCH))
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    known = [b for b in rss if b is not None]
    return {
        "rows": rows,
        "complete": rows == traced_rows == n,
        "rows_per_s": rate(rows, elapsed),
        "traced_peak_mib": traced_peak / MIB,
        "rss_growth_mib": (max(known) - known[0]) / MIB if len(known) == len(rss) else None,
    }


def measure(name: str, n: int, queries: int, budget_s: float) -> dict[str, Any]:
    """Everything for one store at one size; runs in a worker process."""
    data = make_data(n, queries)
    with tempfile.TemporaryDirectory(prefix="dualvec-bench-") as folder:
        try:
            store = open_store(store_url(name, folder), SPEC)
        except Exception as exc:  # any failure to open means the backend cannot run here
            return {"status": "unavailable", "reason": f"{type(exc).__name__}: {exc}"}
        hand = HandVec0(Path(folder) / "hand.db") if name == "sqlite-vec" else None
        try:
            result: dict[str, Any] = {"status": "ok"}
            result["insert"] = run_inserts(store, hand, data.records, budget_s)
            if not result["insert"]["complete"]:
                done = result["insert"]["store"]
                result["status"] = "skipped"
                result["reason"] = (
                    f"insert passed the {budget_s:.0f} s budget: {done['rows']:,} rows in "
                    f"{done['seconds']:.0f} s; search and scan not measured"
                )
                return result
            result["count"] = store.count()
            result["search"] = run_searches(store, hand, data)
            result["exact"] = store.exact  # LanceDB turns approximate once an ANN index exists
            result["scan"] = run_scan(store, n)
            return result
        finally:
            store.close()
            if hand is not None:
                hand.close()


def run_worker(name: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    """Measure one store at one size in a fresh process; a crash becomes an error result."""
    command = [sys.executable, __file__, "--worker", "--stores", name, "--sizes", str(n)]
    command += ["--queries", str(args.queries), "--budget", str(args.budget)]
    result, ns = timed(partial(run_json_worker, command, 3 * args.budget + 600))
    elapsed = ns / 1e9
    progress(f"{name:>12} {n:>7,}: {result['status']} in {elapsed:.0f} s")
    return {"store": name, "n": n, "wall_s": elapsed, **result}


def result_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in results:
        n = count_cell(r["n"])
        if r["status"] in ("unavailable", "error"):
            rows.append([r["store"], n, *["—"] * 7, f"{r['status']}: {r['reason']}"])
            continue
        insert = count_cell(r["insert"]["store"]["rows_per_s"])
        if r["status"] == "skipped":
            rows.append([r["store"], n, insert, *["—"] * 6, f"skipped: {r['reason']}"])
            continue
        search, scan = r["search"]["store"], r["scan"]
        rss = scan["rss_growth_mib"]
        rows.append(
            [
                r["store"],
                n,
                insert,
                ms_cell(search["p50_ms"]),
                ms_cell(search["p95_ms"]),
                f"{search['recall']:.3f}",
                count_cell(scan["rows_per_s"]),
                f"{scan['traced_peak_mib']:.1f}",
                "—" if rss is None else f"{rss:.1f}",
                "; ".join(notes(r)),
            ]
        )
        if "hand" in r["search"]:
            hand, ref = r["search"]["hand"], r["search"]["numpy"]
            hand_insert = count_cell(r["insert"]["hand"]["rows_per_s"])
            dashes = ["—"] * 3
            hand_search = [ms_cell(hand["p50_ms"]), ms_cell(hand["p95_ms"]), f"{hand['recall']:.3f}"]
            ref_search = [ms_cell(ref["p50_ms"]), ms_cell(ref["p95_ms"]), f"{ref['recall']:.3f}"]
            rows.append(["vec0 by hand (ref)", n, hand_insert, *hand_search, *dashes, "executemany, MATCH"])
            rows.append(["numpy exact (ref)", n, "—", *ref_search, *dashes, "matrix @ query, argpartition"])
    return rows


def notes(r: dict[str, Any]) -> list[str]:
    """What a measured store got wrong, or how to read its numbers."""
    found = []
    if not r["exact"]:
        found.append("approximate index")
    elif r["search"]["store"]["recall"] < 1.0:
        found.append("exact search, yet true neighbours missing")
    if r["count"] != r["n"]:
        found.append(f"count() says {r['count']:,}")
    if not r["scan"]["complete"]:
        found.append(f"scan returned {r['scan']['rows']:,} rows")
    return found


def checks(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sqlite-vec store against the hand-written vec0 references, per size."""
    found = []
    for r in results:
        if r["store"] != "sqlite-vec" or r["status"] != "ok":
            continue
        search = r["search"]
        ratio = search["store"]["p50_ms"] / search["hand"]["p50_ms"]
        found.append(
            {
                "check": "search p50, store / hand",
                "n": r["n"],
                "unit": "ms",
                "store": search["store"]["p50_ms"],
                "hand": search["hand"]["p50_ms"],
                "ratio": ratio,
                "paired_ratio_median": search["paired_ratio_median"],
                "target": f"<= {SEARCH_TARGET}",
                "verdict": verdict(ratio <= SEARCH_TARGET)
                if r["n"] >= SEARCH_TARGET_SIZE
                else f"info (target is for {SEARCH_TARGET_SIZE:,})",
            }
        )
        store_rate, hand_rate = (
            BATCH / (r["insert"][who]["batch"]["p50_ms"] / 1e3) for who in ("store", "hand")
        )
        found.append(
            {
                "check": "upsert, store / hand (median batch)",
                "n": r["n"],
                "unit": "rows/s",
                "store": store_rate,
                "hand": hand_rate,
                "ratio": store_rate / hand_rate,
                "target": f">= {UPSERT_TARGET}",
                "verdict": verdict(store_rate / hand_rate >= UPSERT_TARGET),
            }
        )
    return found


def check_rows(found: list[dict[str, Any]]) -> list[list[str]]:
    fmt = {"ms": lambda v: f"{ms_cell(v)} ms", "rows/s": lambda v: f"{count_cell(v)} rows/s"}
    return [
        [
            c["check"],
            count_cell(c["n"]),
            fmt[c["unit"]](c["store"]),
            fmt[c["unit"]](c["hand"]),
            f"{c['ratio']:.3f}",
            c["target"],
            c["verdict"],
        ]
        for c in found
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__)
    add_subset(parser, "--stores", STORES)
    add_sizes(parser, SIZES, "comma-separated collection sizes (default 10000,100000)")
    parser.add_argument("--queries", type=int, default=100, help="timed queries per store and size")
    parser.add_argument(
        "--budget", type=float, default=120.0, help="seconds of insert after which a size is skipped"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.stores) - set(STORES))
    if unknown:
        parser.error(f"unknown store(s) {unknown}; choose from {','.join(STORES)}")
    if args.queries < 1 or min(args.sizes) < K:
        parser.error(f"--queries must be at least 1 and every size at least k={K}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.stores[0], args.sizes[0], args.queries, args.budget)))
        return
    start = time.perf_counter_ns()
    results = []
    for name in args.stores:
        for n in args.sizes:
            results.append(run_worker(name, n, args))
            if results[-1]["status"] == "unavailable":
                break  # the same at every size
    found = checks(results)
    headers = ["store", "vectors", "insert rows/s", "search p50 ms", "search p95 ms", "recall@10"]
    headers += ["scan rows/s", "scan peak MiB (traced)", "scan RSS growth MiB", "notes"]
    print(f"{DIM} dims, cosine, k={K}, batches of {BATCH}, {args.queries} queries per store and size\n")
    print(markdown_table(headers, result_rows(results)))
    if found:
        print()
        print(
            markdown_table(
                ["check", "vectors", "store", "hand", "ratio", "target", "result"], check_rows(found)
            )
        )
    path = write_results(
        "stores",
        {
            "benchmark": "stores",
            "machine": {**machine(), "packages": package_versions(PACKAGES)},
            "config": {
                "dim": DIM,
                "metric": SPEC.metric,
                "k": K,
                "batch": BATCH,
                "warmup": WARMUP,
                "queries": args.queries,
                "budget_s": args.budget,
                "stores": args.stores,
                "sizes": args.sizes,
            },
            "results": results,
            "checks": found,
            "wall_s": (time.perf_counter_ns() - start) / 1e9,
        },
    )
    progress(f"\nwrote {path}")


if __name__ == "__main__":
    main()
