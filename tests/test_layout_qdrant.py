"""Qdrant collections as applications build them with qdrant-client alone, wrapped and migrated.

Each collection is made here with `QdrantClient(path=...)` the way Qdrant's docs show an app
doing it: the app's own point ids (unsigned ints, or UUIDs) and no id in the payload, payload
keys of the app's own naming, some points lacking an optional key (or holding null), a key
dualvec does not know about, and a Qdrant collection name of the app's choosing. Expected
records are computed from the data built here, never read through dualvec.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import migrate_through_cli
from qdrant_client import QdrantClient, models

from dualvec import open_store
from dualvec.distance import distances, same_vector
from dualvec.errors import ConfigError, ValidationError
from dualvec.records import Record
from dualvec.spec import CollectionSpec, FieldSpec
from dualvec.testing.conformance import assert_reads_match

DIM = 12
N = 40
MODEL = "app-embedder"

Predicate = Callable[[dict[str, Any]], bool]


def has(m: dict[str, Any], key: str) -> bool:
    return key in m


@dataclass
class Layout:
    """One app's collection: how it was built, and how dualvec is told about it."""

    name: str  # dualvec's collection
    table: str  # the app's Qdrant collection
    id_type: str
    metric: str
    legacy_spec: CollectionSpec  # the spec the config below yields for the legacy store
    target_spec: CollectionSpec
    toml: str  # body of [collections.NAME]
    filters: list[tuple[dict[str, Any], Predicate]]
    build: Callable[[Path], tuple[list[Any], np.ndarray, list[dict[str, Any]]]]

    def url(self, folder: Path) -> str:
        return f"qdrant-local://{folder}?id=point&table={self.table}"


# (A) chat sessions: uint point ids, cosine, payload keys in camelCase


def build_sessions(folder: Path) -> tuple[list[Any], np.ndarray, list[dict[str, Any]]]:
    rng = np.random.default_rng(21)
    vectors = rng.standard_normal((N, DIM)).astype(np.float32)
    # Sparse, large and zero ids: what an app numbering its own rows ends up with.
    ids: list[Any] = [0, 2**53 + 1, 2**62, *(1000 + 7 * i for i in range(N - 3))]
    payloads: list[dict[str, Any]] = []
    for i in range(N):
        payload: dict[str, Any] = {
            "channel": ("web", "app")[i % 2],
            "userLang": ("en", "fr", "de", "es")[i % 4],
            "turnCount": int(rng.integers(0, 12)),
            "sentiment": round(float(rng.uniform(-1, 1)), 3),
            "archived": bool(i % 5 == 0),
            "summary": f"session {i}",
            "raw": {"tokens": i * 10},  # the app's own, unknown to dualvec
        }
        # Each optional key is absent from about one point in three, null on a few more.
        for j, key in enumerate(("userLang", "turnCount", "sentiment", "archived")):
            if (i + j) % 3 == 0:
                del payload[key]
            elif (i + j) % 7 == 0:
                payload[key] = None
        payloads.append(payload)
    client = QdrantClient(path=str(folder))
    client.create_collection(
        collection_name="Chat-Sessions.v2",
        vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
    )
    client.upsert(
        collection_name="Chat-Sessions.v2",
        points=[
            models.PointStruct(id=ids[i], vector=vectors[i].tolist(), payload=payloads[i]) for i in range(N)
        ],
        wait=True,
    )
    client.close()
    return ids, vectors, payloads


SESSIONS_FIELDS = {
    "channel": FieldSpec(type="str"),
    "lang": FieldSpec(type="str", optional=True, source="userLang"),
    "turns": FieldSpec(type="int", optional=True, source="turnCount"),
    "sentiment": FieldSpec(type="float", optional=True),
    "archived": FieldSpec(type="bool", optional=True),
    "summary": FieldSpec(type="str", filterable=False),
}
SESSIONS_SPEC = CollectionSpec(
    name="sessions", dim=DIM, metric="cosine", model=MODEL, id_type="int", fields=SESSIONS_FIELDS
)
SESSIONS = Layout(
    name="sessions",
    table="Chat-Sessions.v2",
    id_type="int",
    metric="cosine",
    legacy_spec=SESSIONS_SPEC,
    target_spec=SESSIONS_SPEC,
    toml=f"""
dim = {DIM}
metric = "cosine"
model = "{MODEL}"
id_type = "int"

[collections.sessions.fields]
channel = {{ type = "str" }}
lang = {{ type = "str", optional = true, source = "userLang" }}
turns = {{ type = "int", optional = true, source = "turnCount" }}
sentiment = {{ type = "float", optional = true }}
archived = {{ type = "bool", optional = true }}
summary = {{ type = "str", filterable = false }}
""",
    filters=[
        ({"lang": {"$ne": "en"}}, lambda m: has(m, "lang") and m["lang"] != "en"),
        ({"lang": {"$nin": ["en", "de"]}}, lambda m: has(m, "lang") and m["lang"] not in ("en", "de")),
        ({"lang": {"$in": ["fr", "de"]}}, lambda m: m.get("lang") in ("fr", "de")),
        ({"turns": {"$gte": 5}}, lambda m: has(m, "turns") and m["turns"] >= 5),
        ({"turns": {"$lt": 5}}, lambda m: has(m, "turns") and m["turns"] < 5),
        ({"turns": {"$nin": [1, 2, 3]}}, lambda m: has(m, "turns") and m["turns"] not in (1, 2, 3)),
        (
            {"sentiment": {"$gt": -0.2, "$lte": 0.6}},
            lambda m: has(m, "sentiment") and -0.2 < m["sentiment"] <= 0.6,
        ),
        ({"archived": {"$ne": True}}, lambda m: m.get("archived") is False),
        (
            {"channel": "web", "lang": {"$ne": "fr"}},
            lambda m: m["channel"] == "web" and has(m, "lang") and m["lang"] != "fr",
        ),
    ],
    build=build_sessions,
)


# (B) notes: UUID point ids, L2, a named vector, payload keys mapped in the legacy table


def build_notes(folder: Path) -> tuple[list[Any], np.ndarray, list[dict[str, Any]]]:
    rng = np.random.default_rng(22)
    vectors = rng.standard_normal((N, DIM)).astype(np.float32)
    ids = [uuid.UUID(int=int(rng.integers(0, 2**62)) << 64 | i, version=4) for i in range(N)]
    payloads: list[dict[str, Any]] = []
    for i in range(N):
        payload: dict[str, Any] = {
            "noteTopic": ("work", "home", "travel")[i % 3],
            "wordCount": int(rng.integers(10, 500)),
            "pinned": bool(i % 4 == 0),
            "text": f"note {i}",
        }
        for j, key in enumerate(("noteTopic", "wordCount", "pinned")):
            if (i + 2 * j) % 5 == 1:  # about one point in five lacks each key
                del payload[key]
        payloads.append(payload)
    # Qdrant's docs accept UUIDs in several spellings: canonical, upper case, simple hex.
    spelled: list[Any] = [
        (str(u), str(u).upper(), u.hex)[i % 3] if i % 4 else str(u) for i, u in enumerate(ids)
    ]
    client = QdrantClient(path=str(folder))
    client.create_collection(
        collection_name="notes_2024",
        vectors_config={"embedding": models.VectorParams(size=DIM, distance=models.Distance.EUCLID)},
    )
    client.upsert(
        collection_name="notes_2024",
        points=[
            models.PointStruct(id=spelled[i], vector={"embedding": vectors[i].tolist()}, payload=payloads[i])
            for i in range(N)
        ],
        wait=True,
    )
    client.close()
    return ids, vectors, payloads


NOTES_TARGET = CollectionSpec(
    name="notes",
    dim=DIM,
    metric="l2",
    model=MODEL,
    id_type="uuid",
    fields={
        "topic": FieldSpec(type="str", optional=True),
        "words": FieldSpec(type="int", optional=True),
        "pinned": FieldSpec(type="bool", optional=True),
        "body": FieldSpec(type="str", filterable=False),
    },
)
NOTES_LEGACY = NOTES_TARGET.model_copy(
    update={
        "vector_source": "embedding",
        "fields": {
            "topic": FieldSpec(type="str", optional=True, source="noteTopic"),
            "words": FieldSpec(type="int", optional=True, source="wordCount"),
            "pinned": FieldSpec(type="bool", optional=True),
            "body": FieldSpec(type="str", filterable=False, source="text"),
        },
    }
)
NOTES = Layout(
    name="notes",
    table="notes_2024",
    id_type="uuid",
    metric="l2",
    legacy_spec=NOTES_LEGACY,
    target_spec=NOTES_TARGET,
    toml=f"""
dim = {DIM}
metric = "l2"
model = "{MODEL}"
id_type = "uuid"

[collections.notes.fields]
topic = {{ type = "str", optional = true }}
words = {{ type = "int", optional = true }}
pinned = {{ type = "bool", optional = true }}
body = {{ type = "str", filterable = false }}

[collections.notes.legacy]
vector_source = "embedding"
fields = {{ topic = "noteTopic", words = "wordCount", body = "text" }}
""",
    filters=[
        ({"topic": {"$ne": "work"}}, lambda m: has(m, "topic") and m["topic"] != "work"),
        ({"topic": {"$nin": ["home"]}}, lambda m: has(m, "topic") and m["topic"] != "home"),
        ({"topic": {"$in": ["home", "travel"]}}, lambda m: m.get("topic") in ("home", "travel")),
        ({"words": {"$gt": 200}}, lambda m: has(m, "words") and m["words"] > 200),
        ({"words": {"$lte": 200}}, lambda m: has(m, "words") and m["words"] <= 200),
        ({"words": {"$ne": 0}}, lambda m: has(m, "words")),
        ({"pinned": {"$ne": False}}, lambda m: m.get("pinned") is True),
        (
            {"topic": {"$nin": ["travel"]}, "words": {"$gte": 100}},
            lambda m: has(m, "topic") and m["topic"] != "travel" and has(m, "words") and m["words"] >= 100,
        ),
    ],
    build=build_notes,
)

LAYOUTS = [pytest.param(SESSIONS, id="uint-ids"), pytest.param(NOTES, id="uuid-ids")]


def expected_records(
    layout: Layout, ids: list[Any], vectors: np.ndarray, payloads: list[dict]
) -> list[Record]:
    """What dualvec should read: the point id as the record id (decimal, or canonical UUID),
    each declared field from its payload key, absent or null keys as missing."""
    out = []
    for point, vector, payload in zip(ids, vectors, payloads, strict=True):
        metadata = {}
        for name, field in layout.legacy_spec.fields.items():
            value = payload.get(field.source or name)
            if value is not None:
                metadata[name] = value
        out.append(Record(str(point), vector, metadata))
    return out


def app_view(folder: Path, layout: Layout, ids: list[Any], query: np.ndarray) -> tuple[dict, list]:
    """What the app itself reads: its points by its own ids, and a nearest-neighbour query."""
    using = None if layout.legacy_spec.vector_source == "vector" else layout.legacy_spec.vector_source
    client = QdrantClient(path=str(folder))
    try:
        points = client.retrieve(
            layout.table,
            [i if isinstance(i, int) else str(i) for i in ids],
            with_payload=True,
            with_vectors=True,
        )
        hits = client.query_points(layout.table, query=query.tolist(), using=using, limit=8).points
    finally:
        client.close()
    return (
        {str(p.id): (p.payload, p.vector) for p in points},
        [(h.id, h.payload, round(h.score, 5)) for h in hits],
    )


@pytest.fixture(params=LAYOUTS)
def app(request, tmp_path):
    """An app's collection, built and closed; (layout, folder, ids, vectors, payloads)."""
    layout: Layout = request.param
    folder = tmp_path / "app-qdrant"
    ids, vectors, payloads = layout.build(folder)
    return layout, folder, ids, vectors, payloads


# (a) every read agrees with the app's data


def test_reads_match_the_apps_data(app):
    layout, folder, ids, vectors, payloads = app
    expected = expected_records(layout, ids, vectors, payloads)
    # Every filter keeps some records and drops others: none is vacuous.
    for where, predicate in layout.filters:
        assert 0 < sum(predicate(r.metadata) for r in expected) < N, where
    with open_store(layout.url(folder), layout.legacy_spec) as store:
        assert_reads_match(store, expected, layout.filters)


def test_missing_values_match_neither_a_condition_nor_its_negation(app):
    layout, folder, ids, vectors, payloads = app
    expected = expected_records(layout, ids, vectors, payloads)
    # Every value set is >= 0 and != -1: a condition that every set value passes.
    field = "turns" if layout is SESSIONS else "words"
    lacking = {r.id for r in expected if field not in r.metadata}
    assert lacking
    with open_store(layout.url(folder), layout.legacy_spec) as store:
        for where in ({field: {"$ne": -1}}, {field: {"$gte": 0}}, {field: {"$nin": [-1]}}):
            hits = store.search(vectors[0], k=N, filter=where)
            assert {h.id for h in hits} == {r.id for r in expected} - lacking, where
        (got,) = store.get([r.id for r in expected if r.id in lacking][:1])
        assert field not in got.metadata


# (b) a whole migration from the command line, and (c) the app's reads afterwards


def test_migration_copies_the_apps_records_and_leaves_them_alone(app, tmp_path, monkeypatch):
    layout, folder, ids, vectors, payloads = app
    expected = expected_records(layout, ids, vectors, payloads)
    query = np.random.default_rng(4).standard_normal(DIM).astype(np.float32)
    before = app_view(folder, layout, ids, query)

    report = migrate_through_cli(tmp_path, monkeypatch, layout.url(folder), layout.name, layout.toml)
    assert report["clean"]

    target_url = f"sqlite-vec://{tmp_path}/.dualvec/target.db"
    with open_store(target_url, layout.target_spec) as target:
        copied = {r.id: r for batch in target.scan(100) for r in batch}
        assert sorted(copied) == sorted(r.id for r in expected)
        for record in expected:
            got = copied[record.id]
            assert got.metadata == record.metadata, record.id
            assert same_vector(got.vector, record.vector, layout.metric, 1e-5), record.id
        # The target answers by the app's ids and distances.
        assert [r.id for r in target.get([expected[5].id, expected[1].id])] == [
            expected[5].id,
            expected[1].id,
        ]
        hits = target.search(query, k=5)
        dist = distances(vectors, query, layout.metric)
        assert [h.id for h in hits] == [expected[i].id for i in np.argsort(dist)[:5]]

    # The app reads its own points exactly as before: same ids, payloads (no key added),
    # vectors and scores; and no collection appeared beside its own.
    after = app_view(folder, layout, ids, query)
    assert after == before
    assert {i: payload for i, (payload, _) in after[0].items()} == {
        r.id: payload for r, payload in zip(expected, payloads, strict=True)
    }
    client = QdrantClient(path=str(folder))
    try:
        assert [c.name for c in client.get_collections().collections] == [layout.table]
    finally:
        client.close()


# (d) what does not fit is refused at open, and bad ids before any write


def refused_open(folder: Path, url: str, spec: CollectionSpec) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        open_store(url, spec)
    # Nothing was bound, and the folder was released for the app.
    assert not (folder / "dualvec" / f"{spec.name}.json").exists()
    QdrantClient(path=str(folder)).close()
    return caught.value


def test_id_point_needs_int_or_uuid_ids(app):
    layout, folder, *_ = app
    error = refused_open(folder, layout.url(folder), layout.legacy_spec.model_copy(update={"id_type": "str"}))
    assert "id_type" in str(error)
    assert "'int' or 'uuid'" in str(error)


def test_points_of_the_other_id_kind_are_refused(app):
    layout, folder, ids, *_ = app
    other = "uuid" if layout.id_type == "int" else "int"
    error = str(
        refused_open(folder, layout.url(folder), layout.legacy_spec.model_copy(update={"id_type": other}))
    )
    if layout.id_type == "int":
        found = re.search(r"has integer point ids \(e\.g\. (\d+)\)", error)
        assert "expects UUID point ids" in error
    else:
        found = re.search(r"has UUID point ids \(e\.g\. '([0-9a-f-]{36})'\)", error)
        assert "expects unsigned integer point ids" in error
    assert found, error
    assert found.group(1) in {str(i) for i in ids}
    assert f"set id_type = {layout.id_type!r}" in error


@pytest.mark.parametrize(
    ("change", "found"),
    [({"dim": DIM + 4}, f"{DIM}-dimensional"), ({"metric": "dot"}, f"{DIM}-dimensional")],
    ids=["dimension", "distance"],
)
def test_a_spec_that_does_not_fit_is_refused(app, change, found):
    layout, folder, *_ = app
    native = {"cosine": "Cosine", "l2": "Euclid"}[layout.metric]
    error = str(refused_open(folder, layout.url(folder), layout.legacy_spec.model_copy(update=change)))
    assert f"qdrant collection {layout.table!r}" in error
    assert f"holds {found} {native} vectors" in error


@pytest.mark.parametrize("table", ["../outside", ".hidden", "a/b", "Chat Sessions", "", "x" * 256])
def test_collection_names_local_mode_cannot_hold_are_refused(app, table):
    layout, folder, *_ = app
    url = f"qdrant-local://{folder}?id=point&table={table}"
    error = str(refused_open(folder, url, layout.legacy_spec))
    assert "letters, digits, '_', '-' or '.'" in error
    assert not (folder.parent / "outside").exists()


BAD_IDS = {"int": ["-3", "abc", "4.0"], "uuid": ["not-a-uuid", "42"]}


def test_bad_ids_are_refused_before_anything_is_written(app):
    layout, folder, ids, vectors, payloads = app
    expected = expected_records(layout, ids, vectors, payloads)
    good = Record(
        "77" if layout.id_type == "int" else str(uuid.UUID(int=77)), vectors[0], expected[0].metadata
    )
    bad_ids = BAD_IDS[layout.id_type]
    if layout.id_type == "uuid":
        bad_ids = [*bad_ids, str(ids[3]).upper()]  # a UUID, but not spelled canonically
    with open_store(layout.url(folder), layout.legacy_spec) as store:
        for bad in bad_ids:
            # The good record first: the whole batch is refused, not just the bad one.
            with pytest.raises(ValidationError, match=f"id {bad!r}"):
                store.upsert([good, Record(bad, vectors[1], expected[1].metadata)])
            assert store.count() == N
            assert store.get([good.id]) == []
    client = QdrantClient(path=str(folder))
    try:
        points, _ = client.scroll(layout.table, limit=N + 10, with_payload=True)
    finally:
        client.close()
    assert len(points) == N
    assert sorted(str(p.id) for p in points) == sorted(r.id for r in expected)
