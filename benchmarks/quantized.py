"""Quantized sqlite-vec benchmark: exact vs bit vs int8 (and bit with matryoshka 128) search,
beside LanceDB flat search and NumPy brute force on the same data, the things a user would
otherwise reach for.

Data: clustered float32 vectors like real embeddings (n/100 centres drawn N(0, 1), each vector
a centre plus N(0, 0.7²) noise, so neighbours in a cluster have cosine ~0.67), 384 dimensions,
cosine, k=10; queries drawn the same way, not in the collection. Truth: float64 NumPy top-10.

Per size, in a fresh temp dir:

- insert: rows/s of `store.upsert` in batches of 1000 into an empty store (a quantized store
  writes its plain records table and the vec0 coarse table in one transaction);
- search: every method answers each query in turn, the first to go rotating query by query, so
  machine noise falls on all alike (after 3 warm-up queries). p50/p95 latency, recall@10, and
  "p50 vs exact": the median over queries of each query's time over the exact store's time in
  the same round. Quantized stores run at oversample 8 (k x 8 = 80 candidates);
- oversample sweep: each quantized store reopened with oversample 1, 2, 4, 8, 16, 32 (again
  interleaved query by query): recall@10 and p50 at each; reported is the smallest oversample
  reaching --recall (0.95) and its p50.

References: LanceDB 0.40 flat search (no index: a full scan, `distance_type("cosine")`, id and
distance selected) on a table made from the same Arrow data, on its own thread pool; NumPy
brute force (unit matrix @ unit query in float32, argpartition) with one BLAS thread
(--blas-threads), as sqlite-vec scans on one: a multi-threaded OpenBLAS spin-waits after each
call, and on 2 cores that slowed NumPy itself 4x and every method measured beside it.

Each size runs in its own process, so one size's memory never shows in another's numbers.

Run (about 6 minutes on 2 cores; --quick: 10k vectors, 30 queries, about 20 s):

    .venv/bin/python benchmarks/quantized.py
    .venv/bin/python benchmarks/quantized.py --quick
    .venv/bin/python benchmarks/quantized.py --sizes 50000 --queries 100 --recall 0.9

Prints a Markdown table on stdout and progress on stderr; writes the full numbers to
benchmarks/results/quantized.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    Matrix,
    add_sizes,
    benchmark_parser,
    interleaved,
    machine,
    markdown_table,
    numpy_search,
    package_versions,
    progress,
    rate,
    run_blas_worker,
    sizes_option,
    store_search,
    timed,
    write_results,
)

from dualvec import CollectionSpec, Record, VectorStore, open_store

SIZES = (10_000, 100_000)
DIM = 384
K = 10
BATCH = 1000
WARMUP = 3
NOISE = 0.7
OVERSAMPLES = (1, 2, 4, 8, 16, 32)
MAIN_OVERSAMPLE = 8
PACKAGES = ("sqlite-vec", "pysqlite3-binary", "lancedb", "pyarrow", "numpy")
SPEC = CollectionSpec(name="bench", dim=DIM, metric="cosine", model="bench-embedder")
# name -> URL options of the sqlite-vec stores ("" is the exact store).
STORES = {
    "sqlite-vec exact": "",
    "sqlite-vec bit": "quantize=bit",
    "sqlite-vec int8": "quantize=int8",
    "sqlite-vec bit, matryoshka 128": "quantize=bit&matryoshka_dim=128",
}
EXACT = "sqlite-vec exact"
LANCE = "LanceDB flat"
NUMPY = "NumPy brute force"


@dataclass(frozen=True)
class Data:
    matrix: Matrix
    ids: list[str]
    queries: Matrix  # WARMUP warm-up queries first
    truth: list[set[str]]  # exact top-k ids per query


def make_data(n: int, queries: int, seed: int = 0) -> Data:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 100), DIM), dtype=np.float32)

    def draw(count: int) -> Matrix:
        picked = centres[rng.integers(0, len(centres), count)]
        return (picked + NOISE * rng.standard_normal((count, DIM), dtype=np.float32)).astype(np.float32)

    matrix, qs = draw(n), draw(WARMUP + queries)
    unit = matrix.astype(np.float64) / np.linalg.norm(matrix, axis=1, keepdims=True)
    ids = [f"doc-{i}" for i in range(n)]
    truth = []
    for q in qs.astype(np.float64):
        scores = unit @ (q / np.linalg.norm(q))
        best = np.argpartition(-scores, K)[:K]
        truth.append({ids[i] for i in best})
    return Data(matrix, ids, qs, truth)


def insert(store: VectorStore, data: Data) -> dict[str, Any]:
    """Upsert every batch; rows/s over all of them."""
    total = 0
    for start in range(0, len(data.ids), BATCH):
        batch = [Record(data.ids[i], data.matrix[i]) for i in range(start, min(start + BATCH, len(data.ids)))]
        total += timed(partial(store.upsert, batch))[1]
    return {"rows": len(data.ids), "seconds": total / 1e9, "rows_per_s": rate(len(data.ids), total)}


class LanceFlat:
    """A LanceDB table of the same vectors, searched by a full scan (no index)."""

    def __init__(self, folder: Path, data: Data) -> None:
        import lancedb
        import pyarrow as pa

        vectors = pa.FixedSizeListArray.from_arrays(pa.array(data.matrix.ravel()), DIM)
        table = pa.table({"id": pa.array(data.ids), "vector": vectors})
        self.db = lancedb.connect(folder)
        start = time.perf_counter_ns()
        self.table = self.db.create_table("bench", data=table)
        self.insert = {
            "rows": len(data.ids),
            "rows_per_s": rate(len(data.ids), time.perf_counter_ns() - start),
        }

    def search(self, query: Matrix) -> list[str]:
        search = self.table.search(query).distance_type("cosine").limit(K)
        result = search.select(["id", "_distance"]).to_arrow()
        ids: list[str] = result["id"].to_pylist()
        return ids


def sweep(url: str, data: Data, target: float, oversamples: Sequence[int]) -> dict[str, Any]:
    """Recall and p50 of one quantized store at each oversample; the smallest reaching `target`."""
    stores = {o: open_store(f"{url}&oversample={o}", SPEC) for o in oversamples}
    try:
        methods = {str(o): store_search(s, K) for o, s in stores.items()}
        measured = interleaved(methods, data.queries, data.truth, k=K, warmup=WARMUP)
    finally:
        for store in stores.values():
            store.close()
    points = [
        {"oversample": o, "recall": measured[str(o)]["recall"], "p50_ms": measured[str(o)]["p50_ms"]}
        for o in oversamples
    ]
    reached = next((p for p in points if p["recall"] >= target), None)
    return {"points": points, "target": target, "reached": reached}


def measure(n: int, args: argparse.Namespace) -> dict[str, Any]:
    data = make_data(n, args.queries)
    progress(f"{n:,}: data ready")
    result: dict[str, Any] = {"n": n, "insert": {}, "sweeps": {}}
    with tempfile.TemporaryDirectory(prefix="dualvec-quantized-") as folder:
        urls = {name: f"sqlite-vec://{folder}/{i}.db?{opts}" for i, (name, opts) in enumerate(STORES.items())}
        stores: dict[str, VectorStore] = {}
        try:
            for name, url in urls.items():
                options = url.split("?", 1)[1]
                stores[name] = open_store(url + (f"&oversample={MAIN_OVERSAMPLE}" if options else ""), SPEC)
                result["insert"][name] = insert(stores[name], data)
                progress(f"{n:,}: {name} loaded, {result['insert'][name]['rows_per_s']:,.0f} rows/s")
            lance = LanceFlat(Path(folder) / "lance", data)
            result["insert"][LANCE] = lance.insert
            methods = {name: store_search(store, K) for name, store in stores.items()}
            methods[LANCE] = lance.search
            unit = data.matrix / np.linalg.norm(data.matrix, axis=1, keepdims=True)
            methods[NUMPY] = numpy_search(unit, data.ids, K)
            result["search"] = interleaved(
                methods, data.queries, data.truth, k=K, warmup=WARMUP, against={"vs_exact": EXACT}
            )
            progress(f"{n:,}: searched")
        finally:
            for store in stores.values():
                store.close()
        for name, url in urls.items():
            if name != EXACT:
                result["sweeps"][name] = sweep(url, data, args.recall, args.oversamples)
                progress(f"{n:,}: {name} swept")
    return result


def table_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in results:
        for name, found in r["search"].items():
            swept = r["sweeps"].get(name)
            reached = swept and swept["reached"]
            if swept is None:
                smallest = ["—", "—"]
            elif reached:
                smallest = [str(reached["oversample"]), f"{reached['p50_ms']:.2f}"]
            else:
                best = max(p["recall"] for p in swept["points"])
                smallest = [f"> {swept['points'][-1]['oversample']} (best {best:.3f})", "—"]
            insert = r["insert"].get(name)
            rows.append(
                [
                    f"{r['n']:,}",
                    name,
                    str(MAIN_OVERSAMPLE) if swept is not None else "—",
                    "—" if insert is None else f"{insert['rows_per_s']:,.0f}",
                    f"{found['p50_ms']:.2f}",
                    f"{found['p95_ms']:.2f}",
                    f"{found['vs_exact']:.2f}",
                    f"{found['recall']:.3f}",
                    *smallest,
                ]
            )
    return rows


def sweep_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in results:
        for name, swept in r["sweeps"].items():
            cells = [f"{p['recall']:.3f} / {p['p50_ms']:.1f}" for p in swept["points"]]
            rows.append([f"{r['n']:,}", name, *cells])
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__)
    add_sizes(parser, SIZES, "comma-separated sizes (10000,100000)")
    parser.add_argument("--queries", type=int, default=200, help="timed queries per size (200)")
    parser.add_argument("--recall", type=float, default=0.95, help="recall@10 the sweep looks for")
    parser.add_argument(
        "--oversamples", type=sizes_option, default=list(OVERSAMPLES), help="oversamples to sweep"
    )
    parser.add_argument("--quick", action="store_true", help="10k vectors, 30 queries")
    parser.add_argument(
        "--blas-threads", type=int, default=1, help="NumPy's BLAS threads (1, as sqlite-vec's scan)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.queries = [10_000], 30
    if args.queries < 1 or min(args.sizes) <= K or not 0 < args.recall <= 1:
        parser.error(f"--queries must be at least 1, sizes above k={K}, --recall in (0, 1]")
    return args


def run_worker(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """Measure one size in a fresh process (`_common.run_blas_worker`)."""
    command = [sys.executable, __file__, "--worker", "--sizes", str(n), "--queries", str(args.queries)]
    command += ["--recall", str(args.recall), "--oversamples", ",".join(map(str, args.oversamples))]
    return run_blas_worker(command, n, blas_threads=args.blas_threads, timeout=3600)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.sizes[0], args)))
        return
    start = time.perf_counter_ns()
    results = [run_worker(n, args) for n in args.sizes]
    print(
        f"{DIM} dims, cosine, k={K}, clustered vectors (n/100 centres + N(0, {NOISE}²) noise), "
        f"{args.queries} queries per size, sqlite-vec and NumPy (BLAS threads: {args.blas_threads}) "
        "on one thread, LanceDB on its own thread pool\n"
    )
    headers = ["vectors", "method", "oversample", "insert rows/s", "p50 ms", "p95 ms"]
    headers += ["p50 vs exact", "recall@10", f"smallest oversample for recall {args.recall}", "p50 ms there"]
    print(markdown_table(headers, table_rows(results)))
    print("\nOversample sweep, recall@10 / p50 ms:\n")
    print(markdown_table(["vectors", "method", *(str(o) for o in args.oversamples)], sweep_rows(results)))
    path = write_results(
        "quantized",
        {
            "benchmark": "quantized",
            "machine": {**machine(), "packages": package_versions(PACKAGES)},
            "config": {
                "dim": DIM,
                "metric": SPEC.metric,
                "k": K,
                "batch": BATCH,
                "warmup": WARMUP,
                "noise": NOISE,
                "queries": args.queries,
                "sizes": args.sizes,
                "oversample": MAIN_OVERSAMPLE,
                "oversamples": args.oversamples,
                "recall_target": args.recall,
                "blas_threads": args.blas_threads,
                "stores": STORES,
            },
            "results": results,
            "wall_s": (time.perf_counter_ns() - start) / 1e9,
        },
    )
    progress(f"\nwrote {path}")


if __name__ == "__main__":
    main()
