"""The distance bound on a quantized store's coarse scan: a speed-up that never changes results.

An unfiltered search asks vec0 only for rows within a distance estimated from a sample of the
collection's codes; the hits must be those of the unbounded two-step search (vec0's top
k x oversample by coarse distance, ranked by exact distance), whether the bound was generous
or too tight (then the store scans again without it)."""

from __future__ import annotations

import numpy as np
import pytest

from dualvec import CollectionSpec, FieldSpec, Record, open_store
from dualvec.sqlite_driver import connect
from dualvec.stores.quantize import Coarse, CoarseSample, IndexOptions

DIM = 64
K = 10
OVERSAMPLE = 8
OPTIONS = ["quantize=bit", "quantize=int8", "matryoshka_dim=32"]


CENTRES = np.random.default_rng(0).standard_normal((60, DIM)).astype(np.float32)


def clustered(n: int, seed: int = 0) -> np.ndarray:
    """Vectors around 60 centres (embedding-like); queries drawn with another seed."""
    rng = np.random.default_rng(seed)
    picked = CENTRES[rng.integers(0, len(CENTRES), n)]
    return (picked + 0.7 * rng.standard_normal((n, DIM))).astype(np.float32)


SPEC = CollectionSpec(
    name="emb", dim=DIM, metric="cosine", model="m", fields={"group": FieldSpec(type="int")}
)


@pytest.fixture(scope="module")
def matrix() -> np.ndarray:
    return clustered(3000)


@pytest.fixture(scope="module", params=OPTIONS)
def store(request, matrix, tmp_path_factory):
    path = tmp_path_factory.mktemp("bound") / "v.db"
    opened = open_store(f"sqlite-vec://{path}?{request.param}&oversample={OVERSAMPLE}", SPEC)
    opened.upsert([Record(f"r{i}", v, {"group": i % 3}) for i, v in enumerate(matrix)])
    yield opened
    opened.close()


def unbounded(store, query: np.ndarray, matrix: np.ndarray) -> list[str]:
    """vec0's own top k x oversample by coarse distance, ranked by exact cosine in NumPy."""
    code = store._coarse.encode(query[np.newaxis, :])[0]
    rows = store._reader.execute(
        f"SELECT id FROM emb WHERE vector__coarse MATCH {store._coarse.param} AND k = ?",
        (code, K * OVERSAMPLE),
    ).fetchall()
    ids = [row[0] for row in rows]
    vectors = matrix[[int(i[1:]) for i in ids]]
    cosine = vectors @ query / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
    return [ids[i] for i in np.argsort(-cosine, kind="stable")[:K]]


def traced(store) -> list[str]:
    statements: list[str] = []
    store._reader.set_trace_callback(statements.append)
    return statements


def test_an_unfiltered_search_is_bounded_and_finds_what_an_unbounded_one_finds(store, matrix):
    queries = clustered(20, seed=1)
    statements = traced(store)
    try:
        for query in queries:
            assert [h.id for h in store.search(query, k=K)] == unbounded(store, query, matrix)
    finally:
        store._reader.set_trace_callback(None)
    searches = [s for s in statements if "dualvec candidates" in s]
    assert len(searches) >= len(queries)
    # Nearly every search is answered by the bounded scan alone.
    assert sum("distance <=" in s for s in searches) >= len(queries)
    assert len(searches) <= len(queries) + 2


def test_bounds_that_let_too_few_rows_through_are_dropped(store, matrix, monkeypatch):
    monkeypatch.setattr(CoarseSample, "bounds", lambda self, code, wanted: [0.0, 0.0])
    statements = traced(store)
    try:
        for query in clustered(5, seed=2):
            assert [h.id for h in store.search(query, k=K)] == unbounded(store, query, matrix)
    finally:
        store._reader.set_trace_callback(None)
    searches = [s for s in statements if "dualvec candidates" in s]
    assert [("distance <=" in s) for s in searches] == [True, True, False] * 5


def test_a_filtered_search_is_not_bounded(store):
    statements = traced(store)
    try:
        hits = store.search(clustered(1, seed=3)[0], k=K, filter={"group": 1})
    finally:
        store._reader.set_trace_callback(None)
    assert len(hits) == K and all(h.metadata["group"] == 1 for h in hits)
    assert not any("distance <=" in s for s in statements)


@pytest.mark.parametrize(
    ("options", "metric", "sql"),
    [
        ("bit", "cosine", "vec_distance_hamming(vec_bit(?), vec_bit(?))"),
        ("int8", "cosine", "vec_distance_l2(vec_int8(?), vec_int8(?))"),
        ("int8", "l2", "vec_distance_l2(vec_int8(?), vec_int8(?))"),
        ("none", "cosine", "vec_distance_l2(?, ?)"),
    ],
)
def test_the_sample_measures_coarse_distance_as_vec0_does(options, metric, sql):
    rng = np.random.default_rng(4)
    matrix = rng.standard_normal((50, DIM)).astype(np.float32)
    index = IndexOptions(options, 8, 32 if options == "none" else None)  # type: ignore[arg-type]
    coarse = Coarse(index, metric, DIM)
    scale = coarse.scale_for(matrix)
    codes = coarse.codes(matrix, scale)
    ours = coarse.distances(codes[1:], codes[0])
    conn = connect(":memory:")
    theirs = [
        conn.execute(f"SELECT {sql}", (codes[0].tobytes(), c.tobytes())).fetchone()[0] for c in codes[1:]
    ]
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
