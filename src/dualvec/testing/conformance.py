"""The conformance suite: one set of tests every store passes unchanged.

Subclass `StoreConformance` (and `PersistentStoreConformance` for stores that keep data on disk)
in a test module and provide one fixture, `open_collection`: a callable taking a
`CollectionSpec` and returning an open store; calling it again with the same spec (after the
first store is closed) must reopen the same data. Set `metrics` to what the store supports.

Expected results come from a float64 NumPy computation written here, independent of the stores.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pytest

from dualvec.distance import same_vector
from dualvec.errors import ConfigError, ModelMismatchError, UnsupportedMetricError, ValidationError
from dualvec.protocol import VectorStore
from dualvec.records import Record
from dualvec.spec import CollectionSpec, FieldSpec, Metric
from dualvec.testing.data import SAMPLE_FIELDS, make_records, sample_spec
from dualvec.validation import MAX_K

__all__ = ["PersistentStoreConformance", "StoreConformance", "assert_reads_match"]

OpenCollection = Callable[[CollectionSpec], VectorStore]
ALL_METRICS: tuple[Metric, ...] = ("cosine", "l2", "dot")
DIM = 16
N = 300


def reference_distances(records: list[Record], query: npt.ArrayLike, metric: Metric) -> dict[str, float]:
    q = np.asarray(query, dtype=np.float64)
    out = {}
    for r in records:
        v = np.asarray(r.vector, dtype=np.float64)
        if metric == "l2":
            out[r.id] = math.sqrt(float(((v - q) ** 2).sum()))
        elif metric == "dot":
            out[r.id] = -float(v @ q)
        else:
            out[r.id] = 1.0 - float(v @ q) / (float(np.linalg.norm(v)) * float(np.linalg.norm(q)))
    return out


def reference_top(
    records: list[Record], query: npt.ArrayLike, metric: Metric, k: int
) -> list[tuple[str, float]]:
    dist = reference_distances(records, query, metric)
    return sorted(dist.items(), key=lambda item: item[1])[:k]


FILTER_CASES: list[tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]] = [
    ({"lang": "fr"}, lambda m: m["lang"] == "fr"),
    ({"lang": {"$eq": "de"}}, lambda m: m["lang"] == "de"),
    ({"lang": {"$ne": "en"}}, lambda m: m["lang"] != "en"),
    ({"year": {"$gt": 2015}}, lambda m: m["year"] > 2015),
    ({"year": {"$gte": 2015}}, lambda m: m["year"] >= 2015),
    ({"year": {"$lt": 2005}}, lambda m: m["year"] < 2005),
    ({"year": {"$lte": 2005}}, lambda m: m["year"] <= 2005),
    ({"score": {"$gte": 0.25, "$lt": 0.5}}, lambda m: 0.25 <= m["score"] < 0.5),
    ({"lang": {"$in": ["en", "es"]}}, lambda m: m["lang"] in ("en", "es")),
    ({"lang": {"$nin": ["en", "es"]}}, lambda m: m["lang"] not in ("en", "es")),
    ({"year": {"$in": [2001, 2003, 2020]}}, lambda m: m["year"] in (2001, 2003, 2020)),
    ({"public": True}, lambda m: m["public"] is True),
    ({"public": {"$ne": True}}, lambda m: m["public"] is False),
    (
        {"lang": {"$in": ["fr", "de"]}, "year": {"$gte": 2010}, "public": False},
        lambda m: m["lang"] in ("fr", "de") and m["year"] >= 2010 and not m["public"],
    ),
]

BAD_RECORDS: dict[str, Callable[[Record], Record]] = {
    "wrong dimension": lambda r: Record(r.id, np.ones(DIM + 1, np.float32), r.metadata),
    "nan": lambda r: Record(r.id, np.full(DIM, np.nan, np.float32), r.metadata),
    "infinity": lambda r: Record(r.id, np.full(DIM, np.inf, np.float32), r.metadata),
    "beyond float32": lambda r: Record(r.id, np.full(DIM, 1e300), r.metadata),
    "not numbers": lambda r: Record(r.id, ["a"] * DIM, r.metadata),
    "empty id": lambda r: Record("", r.vector, r.metadata),
    "non-str id": lambda r: Record(42, r.vector, r.metadata),  # type: ignore[arg-type]
    "unknown field": lambda r: Record(r.id, r.vector, {**r.metadata, "colour": "red"}),
    "wrong type": lambda r: Record(r.id, r.vector, {**r.metadata, "year": "2020"}),
    "bool for int": lambda r: Record(r.id, r.vector, {**r.metadata, "year": True}),
    "missing filterable": lambda r: Record(
        r.id, r.vector, {k: v for k, v in r.metadata.items() if k != "lang"}
    ),
    "null filterable": lambda r: Record(r.id, r.vector, {**r.metadata, "lang": None}),
    "nan metadata": lambda r: Record(r.id, r.vector, {**r.metadata, "score": float("nan")}),
}

# Filters over optional fields: a missing value matches no condition, negations included.
OPTIONAL_FILTER_CASES: list[tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]] = [
    ({"lang": "fr"}, lambda m: m.get("lang") == "fr"),
    ({"lang": {"$ne": "fr"}}, lambda m: "lang" in m and m["lang"] != "fr"),
    ({"lang": {"$in": ["en", "de"]}}, lambda m: m.get("lang") in ("en", "de")),
    ({"lang": {"$nin": ["en", "de"]}}, lambda m: "lang" in m and m["lang"] not in ("en", "de")),
    ({"year": {"$gte": 2012}}, lambda m: "year" in m and m["year"] >= 2012),
    ({"year": {"$lt": 2012}}, lambda m: "year" in m and m["year"] < 2012),
    ({"score": {"$lte": 0.5}}, lambda m: "score" in m and m["score"] <= 0.5),
    ({"public": {"$ne": True}}, lambda m: m.get("public") is False),
    (
        {"lang": {"$ne": "es"}, "public": True},
        lambda m: "lang" in m and m["lang"] != "es" and m.get("public") is True,
    ),
]
OPTIONAL_FIELDS = {
    name: FieldSpec(type=field.type, filterable=field.filterable, optional=field.filterable)
    for name, field in SAMPLE_FIELDS.items()
}


def records_with_gaps(n: int, seed: int = 11) -> list[Record]:
    """Sample records where each optional field is missing from about one record in three."""
    out = []
    for i, record in enumerate(make_records(n, DIM, seed=seed, prefix="gap-")):
        missing = {name for j, name in enumerate(OPTIONAL_FIELDS) if (i + j) % 3 == 0}
        out.append(
            Record(record.id, record.vector, {k: v for k, v in record.metadata.items() if k not in missing})
        )
    return out


def _any(_metadata: dict[str, Any]) -> bool:
    return True


def assert_reads_match(
    store: VectorStore,
    records: list[Record],
    filters: Sequence[tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]] = (),
    *,
    queries: int = 5,
) -> None:
    """Every read of `store` agrees with `records`, what it should hold: count, get, scan, and
    search (unfiltered and under each filter) against the float64 reference. For tests of a
    store wrapped around data an application made itself."""
    by_id = {r.id: r for r in records}
    metric = store.spec.metric
    assert store.count() == len(records)
    sample = [records[i].id for i in range(0, len(records), max(1, len(records) // 7))]
    got = store.get(sample)
    assert [r.id for r in got] == sample
    for record in got:
        assert same_vector(record.vector, by_id[record.id].vector, metric)
        assert record.metadata == by_id[record.id].metadata
    scanned = [r for batch in store.scan(batch_size=64) for r in batch]
    assert sorted(r.id for r in scanned) == sorted(by_id)
    for record in scanned:
        assert record.metadata == by_id[record.id].metadata
    rng = np.random.default_rng(3)
    for query in rng.standard_normal((queries, store.spec.dim)).astype(np.float32):
        for where, predicate in [({}, _any), *filters]:
            eligible = [r for r in records if predicate(r.metadata)]
            k = min(10, max(1, len(eligible)))
            want = reference_top(eligible, query, metric, k)
            hits = store.search(query, k=k, filter=where or None)
            assert all(predicate(h.metadata) for h in hits), where
            truth = reference_distances(records, query, metric)
            for hit in hits:
                assert hit.metadata == by_id[hit.id].metadata
                assert hit.distance == pytest.approx(truth[hit.id], abs=1e-4)
            if store.exact:
                assert [h.id for h in hits] == [i for i, _ in want], where


HOSTILE_IDS = ["x' OR '1'='1", "x') OR true --", 'x" OR 1=1', "x\\", "x\\' OR 'a'='a", "%", "*", "`x`"]
HOSTILE_VALUES = ["en' OR '1'='1", 'en" OR 1=1 --', "en'; DROP TABLE docs; --", "%", "*", "en\\"]


class StoreConformance:
    """Behaviour every store shares. Provide `open_collection`; set `metrics`.

    In a cosine collection a store may hand back the normalised vector (Qdrant does): only the
    direction is part of the contract there.
    """

    metrics: ClassVar[frozenset[Metric]] = frozenset(ALL_METRICS)

    @pytest.fixture
    def open_collection(self) -> OpenCollection:
        raise NotImplementedError("a store's test module provides open_collection")

    @pytest.fixture
    def store(self, open_collection: OpenCollection) -> Iterator[VectorStore]:
        metric: Metric = "cosine" if "cosine" in self.metrics else sorted(self.metrics)[0]
        store = open_collection(sample_spec(dim=DIM, metric=metric))
        yield store
        store.close()

    @pytest.fixture
    def loaded(self, store: VectorStore) -> tuple[VectorStore, list[Record]]:
        records = make_records(N, DIM, seed=1)
        store.upsert(records)
        return store, records

    # round trips

    def test_upsert_then_get_returns_the_same_records(self, loaded: tuple[VectorStore, list[Record]]) -> None:
        store, records = loaded
        wanted = [records[5], records[0], records[299]]
        got = store.get([r.id for r in wanted])
        assert [r.id for r in got] == [r.id for r in wanted]
        for want, have in zip(wanted, got, strict=True):
            assert have.vector.dtype == np.float32
            assert same_vector(have.vector, want.vector, store.spec.metric)
            assert have.metadata == want.metadata
        assert store.count() == N

    def test_upsert_replaces_vector_and_metadata(self, loaded: tuple[VectorStore, list[Record]]) -> None:
        store, records = loaded
        replacement = make_records(1, DIM, seed=99)[0]
        new = Record(records[3].id, replacement.vector, {**replacement.metadata, "lang": "xx"})
        store.upsert([new])
        (got,) = store.get([new.id])
        assert same_vector(got.vector, new.vector, store.spec.metric)
        assert got.metadata["lang"] == "xx"
        assert store.count() == N
        hits = store.search(new.vector, k=1, filter={"lang": "xx"})
        assert [h.id for h in hits] == [new.id]

    def test_stored_only_field_may_be_omitted(self, store: VectorStore) -> None:
        record = make_records(1, DIM, seed=3)[0]
        bare = Record("bare", record.vector, {k: v for k, v in record.metadata.items() if k != "title"})
        store.upsert([bare])
        assert store.get(["bare"])[0].metadata == bare.metadata

    def test_ids_are_any_text(self, store: VectorStore) -> None:
        ids = ["with space", "quote'd", 'dq"', "ünïcødé-🙂", "x" * 1000, "0", "-1", "a/b\\c"]
        records = [
            Record(i, r.vector, r.metadata) for i, r in zip(ids, make_records(len(ids), DIM), strict=True)
        ]
        store.upsert(records)
        assert [r.id for r in store.get(ids)] == ids
        hits = store.search(records[2].vector, k=len(ids))
        assert {h.id for h in hits} == set(ids)
        assert hits[0].id == ids[2]

    def test_delete_removes_and_ignores_missing(self, loaded: tuple[VectorStore, list[Record]]) -> None:
        store, records = loaded
        gone = [records[1].id, records[2].id]
        store.delete([*gone, "never-existed"])
        assert store.get(gone) == []
        assert store.count() == N - 2
        hits = store.search(records[1].vector, k=5)
        assert records[1].id not in {h.id for h in hits}

    def test_hostile_ids_touch_only_themselves(self, store: VectorStore) -> None:
        records = make_records(20, DIM)
        templates = make_records(len(HOSTILE_IDS), DIM, seed=1)
        store.upsert([Record(i, r.vector, r.metadata) for i, r in zip(HOSTILE_IDS, templates, strict=True)])
        store.upsert(records)
        store.delete(["x' OR '1'='1 ", "x", "' OR ''='"])  # near misses match nothing
        total = len(HOSTILE_IDS) + len(records)
        assert store.count() == total
        assert [r.id for r in store.get(HOSTILE_IDS)] == HOSTILE_IDS
        for gone, hostile in enumerate(HOSTILE_IDS, start=1):
            store.delete([hostile])
            assert store.get([hostile]) == []
            assert store.count() == total - gone
        assert sorted(r.id for batch in store.scan() for r in batch) == sorted(r.id for r in records)

    def test_get_skips_missing_and_keeps_order(self, loaded: tuple[VectorStore, list[Record]]) -> None:
        store, records = loaded
        got = store.get([records[9].id, "missing", records[4].id])
        assert [r.id for r in got] == [records[9].id, records[4].id]
        assert store.get([]) == []

    # search

    @pytest.mark.parametrize("metric", ALL_METRICS)
    def test_search_matches_exact_reference(self, open_collection: OpenCollection, metric: Metric) -> None:
        spec = sample_spec(name=f"m_{metric}", dim=DIM, metric=metric)
        if metric not in self.metrics:
            with pytest.raises(UnsupportedMetricError, match=metric):
                open_collection(spec)
            return
        records = make_records(N, DIM, seed=2)
        store = open_collection(spec)
        try:
            store.upsert(records)
            queries = np.random.default_rng(7).standard_normal((10, DIM)).astype(np.float32)
            for query in queries:
                want = reference_top(records, query, metric, 10)
                hits = store.search(query, k=10)
                if store.exact:
                    assert [h.id for h in hits] == [i for i, _ in want]
                else:
                    assert len({h.id for h in hits} & {i for i, _ in want}) >= 9
                truth = reference_distances(records, query, metric)
                for hit in hits:
                    assert hit.distance == pytest.approx(truth[hit.id], abs=1e-5)
        finally:
            store.close()

    def test_hits_carry_metadata(self, loaded: tuple[VectorStore, list[Record]]) -> None:
        store, records = loaded
        by_id = {r.id: r for r in records}
        for hit in store.search(records[10].vector, k=5):
            assert hit.metadata == by_id[hit.id].metadata

    def test_k_larger_than_collection_returns_everything(self, store: VectorStore) -> None:
        records = make_records(7, DIM, seed=4)
        store.upsert(records)
        hits = store.search(records[0].vector, k=100)
        assert sorted(h.id for h in hits) == sorted(r.id for r in records)
        assert [h.distance for h in hits] == sorted(h.distance for h in hits)

    def test_search_on_empty_collection(self, store: VectorStore) -> None:
        assert store.search(np.ones(DIM, np.float32), k=3) == []
        assert store.count() == 0

    @pytest.mark.parametrize(
        ("filter", "predicate"), FILTER_CASES, ids=lambda c: str(c) if isinstance(c, dict) else ""
    )
    def test_filter_operators(
        self,
        loaded: tuple[VectorStore, list[Record]],
        filter: dict[str, Any],
        predicate: Callable[[dict[str, Any]], bool],
    ) -> None:
        store, records = loaded
        eligible = [r for r in records if predicate(r.metadata)]
        assert eligible, "the sample data must exercise the filter"
        query = records[0].vector
        k = min(len(eligible), 20)
        want = reference_top(eligible, query, store.spec.metric, k)
        hits = store.search(query, k=k, filter=filter)
        assert all(predicate(h.metadata) for h in hits)
        if store.exact:
            assert [h.id for h in hits] == [i for i, _ in want]
        else:
            assert len({h.id for h in hits} & {i for i, _ in want}) >= 0.9 * k

    def test_filter_matching_nothing(self, loaded: tuple[VectorStore, list[Record]]) -> None:
        store, records = loaded
        assert store.search(records[0].vector, k=5, filter={"lang": "zz"}) == []

    @pytest.mark.parametrize("value", HOSTILE_VALUES)
    def test_hostile_filter_values_are_data(
        self, loaded: tuple[VectorStore, list[Record]], value: str
    ) -> None:
        store, records = loaded
        assert store.search(records[0].vector, k=5, filter={"lang": value}) == []
        assert store.search(records[0].vector, k=5, filter={"lang": {"$in": [value, "fr"]}})
        hits = store.search(records[0].vector, k=N, filter={"lang": {"$ne": value}})
        assert len(hits) == N
        assert store.count() == N

    @pytest.mark.parametrize(
        "bad_filter",
        [
            {"colour": "red"},
            {"title": "title 1"},
            {"lang": {"$regex": "e.*"}},
            {"year": "2020"},
            {"year": {"$in": []}},
            {"score": {"$in": [0.5]}},
            {"public": {"$gt": False}},
            {"lang": {"$gt": "de"}},
            {"lang": None},
            {"lang); DROP TABLE docs; --": "en"},
        ],
    )
    def test_bad_filters_are_refused(
        self, loaded: tuple[VectorStore, list[Record]], bad_filter: dict[str, Any]
    ) -> None:
        store, records = loaded
        with pytest.raises(ValidationError, match="filter"):
            store.search(records[0].vector, k=5, filter=bad_filter)

    @pytest.mark.parametrize("k", [0, -1, MAX_K + 1, 10**9, 2.5, True, "10"])
    def test_bad_k_is_refused(self, store: VectorStore, k: Any) -> None:
        with pytest.raises(ValidationError, match="k"):
            store.search(np.ones(DIM, np.float32), k=k)

    def test_bad_query_vectors_are_refused(self, store: VectorStore) -> None:
        for vector in (np.ones(DIM + 1), np.full(DIM, np.nan), [1.0] * (DIM - 1)):
            with pytest.raises(ValidationError, match="query vector"):
                store.search(vector, k=1)

    # bad input writes nothing

    @pytest.mark.parametrize("defect", sorted(BAD_RECORDS))
    def test_bad_batch_writes_nothing(self, loaded: tuple[VectorStore, list[Record]], defect: str) -> None:
        store, _records = loaded
        fresh = make_records(3, DIM, seed=5, prefix="new-")
        batch = [fresh[0], BAD_RECORDS[defect](fresh[1]), fresh[2]]
        with pytest.raises(ValidationError, match="record 1"):
            store.upsert(batch)
        assert store.count() == N
        assert store.get([r.id for r in fresh]) == []

    def test_duplicate_ids_in_batch_are_refused(self, store: VectorStore) -> None:
        a, b = make_records(2, DIM, seed=6)
        with pytest.raises(ValidationError, match="duplicate id"):
            store.upsert([a, Record(a.id, b.vector, b.metadata)])
        assert store.count() == 0

    def test_zero_vector_refused_for_cosine(self, open_collection: OpenCollection) -> None:
        if "cosine" not in self.metrics:
            pytest.fail("every store must support cosine")
        store = open_collection(sample_spec(name="zero", dim=DIM, metric="cosine"))
        try:
            record = make_records(1, DIM)[0]
            with pytest.raises(ValidationError, match="zero vector"):
                store.upsert([Record("z", np.zeros(DIM, np.float32), record.metadata)])
            assert store.count() == 0
        finally:
            store.close()

    def test_other_model_is_refused(self, loaded: tuple[VectorStore, list[Record]]) -> None:
        store, records = loaded
        with pytest.raises(ModelMismatchError, match="other-model"):
            store.upsert(make_records(1, DIM, prefix="m-"), model="other-model")
        with pytest.raises(ModelMismatchError):
            store.search(records[0].vector, k=1, model="other-model")
        assert store.get(["m-0"]) == []
        store.upsert(make_records(1, DIM, prefix="m-"), model=store.spec.model)
        assert store.get(["m-0"])

    def test_bad_ids_for_get_and_delete(self, loaded: tuple[VectorStore, list[Record]]) -> None:
        store, _ = loaded
        for bad in ("doc-1", [""], [None], [7]):
            with pytest.raises(ValidationError):
                store.delete(bad)  # type: ignore[arg-type]
            with pytest.raises(ValidationError):
                store.get(bad)  # type: ignore[arg-type]
        assert store.count() == N

    # scan

    def test_scan_yields_every_record_once(self, loaded: tuple[VectorStore, list[Record]]) -> None:
        store, records = loaded
        seen: list[str] = []
        by_id = {r.id: r for r in records}
        for batch in store.scan(batch_size=37):
            assert 0 < len(batch) <= 37
            for record in batch:
                assert same_vector(record.vector, by_id[record.id].vector, store.spec.metric)
                assert record.metadata == by_id[record.id].metadata
            seen.extend(r.id for r in batch)
        assert sorted(seen) == sorted(by_id)

    def test_scan_of_empty_collection(self, store: VectorStore) -> None:
        assert list(store.scan(batch_size=10)) == []

    @pytest.mark.parametrize("batch_size", [0, -5, True, 1.5])
    def test_bad_scan_batch_size(self, store: VectorStore, batch_size: Any) -> None:
        with pytest.raises(ValidationError, match="batch_size"):
            next(iter(store.scan(batch_size=batch_size)))

    # optional fields

    def test_optional_fields_round_trip_missing(self, open_collection: OpenCollection) -> None:
        spec = sample_spec(name="gaps", dim=DIM).model_copy(update={"fields": OPTIONAL_FIELDS})
        store = open_collection(spec)
        try:
            records = records_with_gaps(60)
            store.upsert(records)
            assert_reads_match(store, records, OPTIONAL_FILTER_CASES)
            # A value set later, and removed again, reads back each time.
            first = records[0]
            store.upsert([Record(first.id, first.vector, {"lang": "xx"})])
            assert store.get([first.id])[0].metadata == {"lang": "xx"}
            assert [h.id for h in store.search(first.vector, k=1, filter={"lang": "xx"})] == [first.id]
            store.upsert([Record(first.id, first.vector, {})])
            assert store.get([first.id])[0].metadata == {}
            assert store.search(first.vector, k=60, filter={"lang": {"$nin": ["zz"]}})[0].id != first.id
        finally:
            store.close()

    def test_required_field_still_refused_when_missing(self, store: VectorStore) -> None:
        record = make_records(1, DIM)[0]
        with pytest.raises(ValidationError, match="optional = true"):
            store.upsert(
                [Record("r", record.vector, {k: v for k, v in record.metadata.items() if k != "year"})]
            )
        assert store.count() == 0

    # integer ids

    def test_integer_ids_are_decimal_strings(self, open_collection: OpenCollection) -> None:
        spec = sample_spec(name="numbered", dim=DIM).model_copy(update={"id_type": "int"})
        store = open_collection(spec)
        try:
            ids = ["0", "7", "42", "1000000", str(2**53 + 1)]
            records = [
                Record(i, r.vector, r.metadata) for i, r in zip(ids, make_records(len(ids), DIM), strict=True)
            ]
            store.upsert(records)
            assert [r.id for r in store.get(["42", "0", "9"])] == ["42", "0"]
            assert store.search(records[2].vector, k=1)[0].id == "42"
            assert sorted(r.id for batch in store.scan() for r in batch) == sorted(ids)
            for bad in ("abc", "07", "4.2", " 42", str(2**64)):
                with pytest.raises(ValidationError, match=f"id {bad!r}"):
                    store.upsert([Record(bad, records[0].vector, records[0].metadata)])
            store.delete(["7"])
            assert store.count() == len(ids) - 1
        finally:
            store.close()

    def test_collections_are_isolated(self, open_collection: OpenCollection) -> None:
        first = open_collection(sample_spec(name="first", dim=DIM))
        second = open_collection(sample_spec(name="second", dim=DIM))
        try:
            first.upsert(make_records(5, DIM, prefix="a-"))
            second.upsert(make_records(3, DIM, prefix="b-"))
            assert first.count() == 5
            assert second.count() == 3
            assert second.get(["a-0"]) == []
        finally:
            first.close()
            second.close()


class PersistentStoreConformance(StoreConformance):
    """What a store that keeps data on disk adds: reopening, and a spec bound to the data."""

    def test_reopen_keeps_everything(self, open_collection: OpenCollection) -> None:
        spec = sample_spec(name="durable", dim=DIM)
        records = make_records(50, DIM, seed=8)
        store = open_collection(spec)
        store.upsert(records)
        store.delete([records[0].id])
        store.close()
        reopened = open_collection(spec)
        try:
            assert reopened.count() == 49
            got = reopened.get([records[1].id])[0]
            assert same_vector(got.vector, records[1].vector, reopened.spec.metric)
            assert got.metadata == records[1].metadata
            assert reopened.search(records[1].vector, k=1)[0].id == records[1].id
        finally:
            reopened.close()

    def test_reopen_with_another_model_or_dimension_is_refused(self, open_collection: OpenCollection) -> None:
        spec = sample_spec(name="bound", dim=DIM)
        store = open_collection(spec)
        store.upsert(make_records(3, DIM))
        store.close()
        with pytest.raises(ModelMismatchError, match="test-embedder"):
            open_collection(spec.model_copy(update={"model": "another-embedder"}))
        with pytest.raises(ConfigError, match="different spec"):
            open_collection(sample_spec(name="bound", dim=DIM * 2))
        store = open_collection(spec)
        try:
            assert store.count() == 3
        finally:
            store.close()
