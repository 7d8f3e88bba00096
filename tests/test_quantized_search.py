"""Quantized sqlite-vec search: exact distances, recall on embedding-like data, filters during
the coarse scan, matryoshka prefixes, the recorded layout, rebuilds and atomic writes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from dualvec import CollectionSpec, ConfigError, FieldSpec, Record, open_store
from dualvec.settings import CollectionConfig, Settings
from dualvec.spec import Metric
from dualvec.sqlite_driver import connect
from dualvec.stores.quantize import Coarse, IndexOptions
from dualvec.stores.sqlite_vec import SqliteVecStore
from dualvec.testing.data import make_records, sample_spec

DIM = 384
FIELDS = {
    "group": FieldSpec(type="int"),
    "lang": FieldSpec(type="str", optional=True),
    "title": FieldSpec(type="str", filterable=False),
}


def clustered(n: int, dim: int = DIM, seed: int = 0, queries: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Vectors like real embeddings: cluster centres plus noise (within-cluster cosine about
    0.67), ~100 per cluster; queries drawn the same way but not in the collection."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 100), dim)).astype(np.float32)

    def draw(count: int) -> np.ndarray:
        picked = centres[rng.integers(0, len(centres), count)]
        return (picked + 0.7 * rng.standard_normal((count, dim))).astype(np.float32)

    return draw(n), draw(queries)


def records_of(matrix: np.ndarray) -> list[Record]:
    return [
        Record(
            f"r{i}",
            vector,
            {"group": i % 50, "title": f"t{i}", **({"lang": ("en", "fr")[i % 2]} if i % 3 else {})},
        )
        for i, vector in enumerate(matrix)
    ]


def spec_of(metric: Metric = "cosine", dim: int = DIM) -> CollectionSpec:
    return CollectionSpec(name="emb", dim=dim, metric=metric, model="m", fields=FIELDS)


@pytest.fixture(scope="module")
def data() -> tuple[list[Record], np.ndarray]:
    matrix, queries = clustered(2000)
    return records_of(matrix), queries


def _open(path, options: str = "", metric: Metric = "cosine") -> SqliteVecStore:
    store = open_store(f"sqlite-vec://{path}?{options}", spec_of(metric))
    assert isinstance(store, SqliteVecStore)
    return store


def recall(found: list[str], want: list[str]) -> float:
    return len(set(found) & set(want)) / len(want)


class Truth:
    """The true top-k ids of `records`, in float64 NumPy (the conformance reference, vectorised)."""

    def __init__(self, records: list[Record], metric: Metric = "cosine") -> None:
        self.ids = [r.id for r in records]
        self.matrix = np.stack([r.vector for r in records]).astype(np.float64)
        self.metric = metric

    def top(self, query: np.ndarray, k: int = 10) -> list[str]:
        q = query.astype(np.float64)
        matrix = self.matrix
        if self.metric == "l2":
            dist = np.linalg.norm(matrix - q, axis=1)
        else:
            dist = 1 - matrix @ q / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(q))
        return [self.ids[i] for i in np.argsort(dist, kind="stable")[:k]]


# the coarse copy


def test_bit_codes_are_vec_quantize_binary_and_padded_to_bytes():
    rng = np.random.default_rng(1)
    conn = connect(":memory:")
    for dim in (16, 384):
        matrix = rng.standard_normal((5, dim)).astype(np.float32)
        coarse = Coarse(IndexOptions("bit"), "cosine", dim)
        ours = coarse.encode(matrix)
        theirs = [conn.execute("SELECT vec_quantize_binary(?)", (v.tobytes(),)).fetchone()[0] for v in matrix]
        assert ours == theirs
    # 12 dimensions: 16 bits, the last 4 zero in every vector, so they never add distance.
    coarse = Coarse(IndexOptions("bit"), "l2", 12)
    assert coarse.column_type == "bit[16]"
    assert coarse.encode(np.ones((1, 12), np.float32)) == [bytes([0xFF, 0x0F])]


def test_matryoshka_prefix_is_renormalised_for_cosine():
    vector = np.array([[3.0, 4.0, 100.0, -7.0]], np.float32)
    int8 = Coarse(IndexOptions("int8", matryoshka_dim=2), "cosine", 4)
    assert np.frombuffer(int8.encode(vector)[0], np.int8).tolist() == [76, 102]  # 0.6, 0.8 x 127
    floats = Coarse(IndexOptions("none", matryoshka_dim=2), "cosine", 4)
    assert np.frombuffer(floats.encode(vector)[0], np.float32).tolist() == pytest.approx([0.6, 0.8])
    assert floats.column_type == "float[2] distance_metric=l2"
    l2 = Coarse(IndexOptions("none", matryoshka_dim=2), "l2", 4)
    assert np.frombuffer(l2.encode(vector)[0], np.float32).tolist() == [3.0, 4.0]


def test_candidates_are_k_times_oversample_capped_at_4096():
    assert IndexOptions("bit").candidates(10) == 80
    assert IndexOptions("bit", oversample=1).candidates(10) == 10
    assert IndexOptions("int8", oversample=32).candidates(1000) == 4096
    assert IndexOptions("bit").candidates(4096) == 4096


# search


@pytest.fixture(scope="module")
def exact_distances(tmp_path_factory, data) -> dict[str, list[dict[str, float]]]:
    """Per metric, the exact store's distance to every record for the first queries."""
    records, queries = data
    found = {}
    for metric in ("cosine", "l2"):
        exact = _open(tmp_path_factory.mktemp("exact") / "v.db", metric=metric)
        try:
            exact.upsert(records[:1000])
            assert exact.exact
            found[metric] = [{h.id: h.distance for h in exact.search(q, k=1000)} for q in queries[:5]]
        finally:
            exact.close()
    return found


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("options", ["quantize=bit", "quantize=int8", "quantize=bit&matryoshka_dim=128"])
def test_distances_are_the_exact_stores(tmp_path, data, exact_distances, metric: Metric, options: str):
    """Only recall is approximate: every hit's distance is the one the exact store gives."""
    records, queries = data
    quantized = _open(tmp_path / "q.db", options, metric=metric)
    try:
        quantized.upsert(records[:1000])
        assert not quantized.exact
        for query, truth in zip(queries, exact_distances[metric], strict=False):
            hits = quantized.search(query, k=10)
            assert len(hits) == 10
            assert [h.distance for h in hits] == sorted(h.distance for h in hits)
            for hit in hits:
                assert hit.distance == truth[hit.id]
    finally:
        quantized.close()


def test_bit_recall_at_oversample_8_on_clustered_embeddings(tmp_path, data):
    records, queries = data
    store = _open(tmp_path / "bit.db", "quantize=bit&oversample=8")
    try:
        store.upsert(records)
        truth = Truth(records)
        recalls = [recall([h.id for h in store.search(q, k=10)], truth.top(q)) for q in queries]
    finally:
        store.close()
    assert np.mean(recalls) >= 0.9, recalls


def _lang(metadata: dict[str, object]) -> object:
    return metadata.get("lang")


@pytest.mark.parametrize("options", ["quantize=bit", "quantize=int8&matryoshka_dim=96"])
def test_filters_apply_during_the_coarse_scan(tmp_path, data, options: str):
    """A filter that keeps 2% of the rows still gives k hits, all matching: vec0 filters while
    it scans, so no candidate is spent on a row the filter drops."""
    records, queries = data
    store = _open(tmp_path / "q.db", options)
    try:
        store.upsert(records)
        cases: list[tuple[dict[str, object], Callable[[dict[str, object]], bool]]] = [
            ({"group": 7}, lambda m: m["group"] == 7),
            (
                {"group": {"$in": [3, 4]}, "lang": "fr"},
                lambda m: m["group"] in (3, 4) and m.get("lang") == "fr",
            ),
            (
                {"lang": {"$ne": "en"}, "group": {"$lt": 5}},
                lambda m: m.get("lang") == "fr" and m["group"] < 5,
            ),
        ]
        for where, predicate in cases:
            eligible = [r for r in records if predicate(r.metadata)]
            assert len(eligible) >= 10
            truth = Truth(eligible)
            found = []
            for query in queries[:10]:
                hits = store.search(query, k=10, filter=where)
                assert len(hits) == 10, where
                assert all(predicate(h.metadata) for h in hits), where
                found.append(recall([h.id for h in hits], truth.top(query)))
            assert np.mean(found) >= 0.9, (where, found)
        # Fewer matches than k: every match comes back.
        few = store.search(queries[0], k=50, filter={"group": 7, "lang": "en"})
        assert sorted(h.id for h in few) == sorted(
            r.id for r in records if r.metadata["group"] == 7 and r.metadata.get("lang") == "en"
        )
    finally:
        store.close()


def test_matryoshka_scans_a_prefix_and_rescores_on_the_full_vector(tmp_path):
    """Matryoshka-trained embeddings put most of the signal in the first dimensions."""
    matrix, queries = clustered(1000, seed=3, queries=20)
    decay = np.exp(-np.arange(DIM) / 96.0).astype(np.float32)
    records = records_of(matrix * decay)
    queries = queries * decay
    truth = Truth(records)
    for options, column in [
        ("matryoshka_dim=96", "float[96]"),
        ("quantize=int8&matryoshka_dim=96", "int8[96]"),
        ("quantize=bit&matryoshka_dim=96", "bit[96]"),
    ]:
        path = tmp_path / f"{column[:3]}.db"
        store = _open(path, options)
        try:
            store.upsert(records)
            assert column in _vec0_sql(path)
            recalls = [recall([h.id for h in store.search(q, k=10)], truth.top(q)) for q in queries]
            assert np.mean(recalls) >= 0.9, (options, np.mean(recalls))
            (got,) = store.get(["r5"])
            assert np.array_equal(got.vector, records[5].vector)  # the full float vector
        finally:
            store.close()


def test_k_up_to_the_limit_and_beyond_the_collection(tmp_path):
    records = make_records(50, 16)
    store = open_store(f"sqlite-vec://{tmp_path}/v.db?quantize=bit", sample_spec(dim=16))
    try:
        store.upsert(records)
        assert len(store.search(records[0].vector, k=4096)) == 50
        assert store.search(records[0].vector, k=1)[0].id == records[0].id
    finally:
        store.close()


# layout, refusal, rebuild


def _vec0_sql(path) -> str:
    conn = connect(path)
    try:
        return str(conn.execute("SELECT sql FROM sqlite_master WHERE name = 'emb'").fetchone()[0])
    finally:
        conn.close()


def _tables(path) -> set[str]:
    conn = connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("built", "reopened"),
    [
        ("", "quantize=bit"),
        ("quantize=bit", "quantize=int8"),
        ("quantize=bit", ""),
        ("quantize=bit", "quantize=none"),
        ("quantize=int8&matryoshka_dim=64", "quantize=int8"),
        ("matryoshka_dim=64", "matryoshka_dim=32"),
    ],
)
def test_reopening_with_another_layout_is_refused(tmp_path, built: str, reopened: str):
    path = tmp_path / "v.db"
    records = records_of(clustered(20)[0])
    store = _open(path, built)
    store.upsert(records)
    store.close()
    with pytest.raises(ConfigError, match=r"must be rebuilt first\. Add rebuild=true") as refused:
        _open(path, reopened)
    assert "emb" in str(refused.value)
    store = _open(path, built)  # untouched by the refusal
    try:
        assert store.count() == 20
    finally:
        store.close()


def test_oversample_is_a_search_setting_not_layout(tmp_path):
    path = tmp_path / "v.db"
    _open(path, "quantize=bit&oversample=4").close()
    store = _open(path, "quantize=bit&oversample=32")
    assert store.index.oversample == 32
    store.close()


def test_a_collection_from_before_layouts_were_recorded_is_exact(tmp_path):
    path = tmp_path / "v.db"
    records = records_of(clustered(20)[0])
    store = _open(path)
    store.upsert(records)
    store.close()
    conn = connect(path)
    conn.execute("DROP TABLE dualvec_vec_index")
    conn.close()
    store = _open(path)
    try:
        assert store.exact and store.count() == 20
        assert store.search(records[3].vector, k=1)[0].id == "r3"
    finally:
        store.close()
    with pytest.raises(ConfigError, match="built with quantize=none"):
        _open(path, "quantize=bit")


def test_rebuild_converts_a_collection_in_place_and_back(tmp_path, data):
    records, queries = data
    records = records[:300]
    path = tmp_path / "v.db"
    exact = _open(path)
    exact.upsert(records)
    want = [[h.id for h in exact.search(q, k=10, filter={"lang": "fr"})] for q in queries[:5]]
    exact.close()

    quantized = _open(path, "quantize=bit&rebuild=true")
    try:
        assert not quantized.exact
        assert "bit[384]" in _vec0_sql(path)
        _assert_holds(quantized, records)
        for query, ids in zip(queries[:5], want, strict=True):
            assert recall([h.id for h in quantized.search(query, k=10, filter={"lang": "fr"})], ids) >= 0.8
    finally:
        quantized.close()
    again = _open(path, "quantize=bit&rebuild=true")  # nothing left to rebuild: opens as is
    again.close()

    back = _open(path, "rebuild=1")
    try:
        assert back.exact
        assert "emb__records" not in _tables(path)
        _assert_holds(back, records)
        assert [h.id for h in back.search(queries[0], k=10, filter={"lang": "fr"})] == want[0]
    finally:
        back.close()


def _assert_holds(store: SqliteVecStore, records: list[Record]) -> None:
    by_id = {r.id: r for r in records}
    assert store.count() == len(records)
    scanned = [r for batch in store.scan(batch_size=128) for r in batch]
    assert sorted(r.id for r in scanned) == sorted(by_id)
    for record in scanned:
        assert np.array_equal(record.vector, by_id[record.id].vector)
        assert record.metadata == by_id[record.id].metadata


def test_int8_l2_scale_is_fixed_by_the_first_write_and_refreshed_by_rebuild(tmp_path):
    path = tmp_path / "v.db"
    small, _ = clustered(100, seed=4)
    large = small * 10
    store = _open(path, "quantize=int8", metric="l2")
    other = _open(path, "quantize=int8", metric="l2")  # opened before any write
    try:
        store.upsert(records_of(small))
        first = _scale(path)
        assert first == pytest.approx(float(np.abs(small).max()) / 127)
        big = [Record(f"big{i}", v, {"group": 1, "title": ""}) for i, v in enumerate(large)]
        store.upsert(big)
        assert _scale(path) == first  # clipped, not rescaled: codes already written stay valid
        hits = other.search(large[3], k=3)  # reads the scale the other store set
        assert hits[0].id == "big3" and hits[0].distance == 0.0
        store.rebuild()
        assert _scale(path) == pytest.approx(float(np.abs(large).max()) / 127)
        assert store.search(large[3], k=1)[0].id == "big3"
        assert store.count() == 200
    finally:
        store.close()
        other.close()


def _scale(path) -> float:
    conn = connect(path)
    try:
        return float(conn.execute("SELECT int8_scale FROM dualvec_vec_index").fetchone()[0])
    finally:
        conn.close()


def test_vector_and_quantized_copy_are_written_in_one_transaction(tmp_path, monkeypatch):
    records = records_of(clustered(30)[0])
    store = _open(tmp_path / "v.db", "quantize=bit")
    try:
        store.upsert(records[:20])

        def fail(_batch: list[Record]) -> None:
            raise RuntimeError("disk gone")

        monkeypatch.setattr(store, "_index", fail)
        replaced = Record("r0", records[25].vector, {"group": 49, "title": "new"})
        with pytest.raises(Exception, match="disk gone"):
            store.upsert([replaced, *records[20:]])
        monkeypatch.undo()
        assert store.count() == 20
        assert store.get(["r0"])[0] == records[0]
        assert store.get(["r21"]) == []
        assert store.search(records[0].vector, k=1)[0].id == "r0"
    finally:
        store.close()


# options


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("quantize=pq", "quantize='pq'"),
        ("quantize=bit&oversample=0", "oversample='0'"),
        ("quantize=bit&oversample=x", "oversample='x'"),
        ("oversample=8", "no effect on an exact collection"),
        (f"matryoshka_dim={DIM}", "a prefix of the collection's 384 dimensions"),
        ("quantize=bit&rebuild=maybe", "rebuild='maybe'"),
    ],
)
def test_bad_options_are_refused(tmp_path, query: str, message: str):
    with pytest.raises(ConfigError, match=message):
        _open(tmp_path / "v.db", query)
    assert not (tmp_path / "v.db").exists() or "emb" not in _tables(tmp_path / "v.db")


def test_collection_toml_keys_reach_the_target_url():
    def settings(target: str, **keys: object) -> Settings:
        config = CollectionConfig(dim=8, model="m", **keys)  # type: ignore[arg-type]
        return Settings(legacy_url="memory://", target_url=target, collections={"docs": config})

    assert settings("sqlite-vec:///d/v.db", quantize="bit", oversample=8).urls("docs")[1] == (
        "sqlite-vec:///d/v.db?quantize=bit&oversample=8"
    )
    assert settings("sqlite-vec:///d/v.db?busy_timeout=1&quantize=bit", quantize="bit").urls("docs")[1] == (
        "sqlite-vec:///d/v.db?busy_timeout=1&quantize=bit"
    )
    assert settings("sqlite-vec:///d/v.db", matryoshka_dim=4).urls("docs")[1].endswith("?matryoshka_dim=4")
    assert settings("sqlite-vec:///d/v.db").urls("docs")[1] == "sqlite-vec:///d/v.db"
    assert settings("sqlite-vec:///d/v.db", quantize="int8").specs("docs")[1].dim == 8
    with pytest.raises(ConfigError, match="quantize = int8 but its target URL"):
        settings("sqlite-vec:///d/v.db?quantize=bit", quantize="int8").urls("docs")
    with pytest.raises(ConfigError, match="only a sqlite-vec target"):
        settings("lancedb:///d/lance", quantize="bit").urls("docs")
