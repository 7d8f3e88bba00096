from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from dualvec import open_store
from dualvec.distance import distances, same_vector
from dualvec.errors import ConfigError, ModelMismatchError, StoreLockedError, ValidationError
from dualvec.records import Record
from dualvec.spec import CollectionSpec, FieldSpec
from dualvec.testing import make_records, sample_spec
from dualvec.testing.conformance import PersistentStoreConformance

DIM = 8
SHM = Path("/dev/shm")


@pytest.fixture
def folder(tmp_path):
    """Local mode commits every point on its own, one fsync each; on tmpfs, where fsync costs
    nothing, this file runs several times faster. Durability is Qdrant's, not under test here."""
    if not SHM.is_dir():
        yield tmp_path / "qdrant"
        return
    with tempfile.TemporaryDirectory(dir=SHM) as scratch:
        yield Path(scratch) / "qdrant"


class TestQdrantLocalStore(PersistentStoreConformance):
    @pytest.fixture
    def open_collection(self, folder):
        return lambda spec: open_store(f"qdrant-local://{folder}", spec)


# the folder lock, across processes

HOLD = textwrap.dedent(
    """
    import sys, time
    from dualvec import open_store
    from dualvec.testing import sample_spec
    store = open_store("qdrant-local://" + sys.argv[1], sample_spec())
    print("holding", flush=True)
    time.sleep(120)
    """
)

TRY = textwrap.dedent(
    """
    import sys
    from dualvec import open_store
    from dualvec.errors import StoreLockedError
    from dualvec.testing import sample_spec
    try:
        open_store("qdrant-local://" + sys.argv[1], sample_spec())
    except StoreLockedError as exc:
        print(exc)
        sys.exit(3)
    """
)


def test_folder_held_by_another_process_is_refused_until_it_dies(folder):
    command = [sys.executable, "-c", HOLD, str(folder)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "holding"
            with pytest.raises(StoreLockedError, match="another process") as caught:
                open_store(f"qdrant-local://{folder}", sample_spec())
            assert str(folder.resolve()) in str(caught.value)
            assert "Close that store or stop that process" in str(caught.value)
        finally:
            holder.kill()
    # The kernel drops the lock with the process: no stale lock file to clean up.
    open_store(f"qdrant-local://{folder}", sample_spec()).close()


def test_another_process_gets_a_clear_error_while_we_hold_the_folder(folder):
    with open_store(f"qdrant-local://{folder}", sample_spec()):
        child = subprocess.run(
            [sys.executable, "-c", TRY, str(folder)], check=False, capture_output=True, text=True, timeout=60
        )
    assert child.returncode == 3, child.stderr
    assert str(folder.resolve()) in child.stdout
    assert "Traceback" not in child.stderr


def test_stores_on_one_folder_share_its_client(folder):
    first = open_store(f"qdrant-local://{folder}", sample_spec(name="first", dim=DIM))
    second = open_store(f"qdrant-local://{folder}/../{folder.name}", sample_spec(name="second", dim=DIM))
    second.upsert(make_records(3, DIM))
    first.close()
    assert second.count() == 3
    second.close()
    # The last close released the folder for anyone.
    QdrantClient(path=str(folder)).close()


# ids and filters


def test_ids_that_look_like_qdrant_ids_come_back_unchanged(folder):
    ids = ["123E4567-E89B-12D3-A456-426614174000", "{123e4567-e89b-12d3-a456-426614174000}", "42", "007"]
    records = [Record(i, r.vector, r.metadata) for i, r in zip(ids, make_records(4, DIM), strict=True)]
    with open_store(f"qdrant-local://{folder}", sample_spec(dim=DIM)) as store:
        store.upsert(records)
        assert [r.id for r in store.get(ids)] == ids
        assert sorted(r.id for batch in store.scan(2) for r in batch) == sorted(ids)
        assert store.search(records[1].vector, k=1)[0].id == ids[1]


# wrapping a collection created without dualvec

WRAPPED = CollectionSpec(
    name="articles",
    dim=DIM,
    metric="cosine",
    model="their-embedder",
    id_source="doc_id",
    vector_source="text",
    fields={
        "topic": FieldSpec(type="str", source="category"),
        "year": FieldSpec(type="int"),
        "rating": FieldSpec(type="float", filterable=False),
    },
)
TOPICS = ("news", "sport", "tech")


def their_collection(folder: Path, n: int = 60) -> tuple[np.ndarray, list[dict]]:
    """What a user built with qdrant-client alone: integer ids, their own payload keys (one,
    `body`, unknown to dualvec), and two named vectors."""
    rng = np.random.default_rng(5)
    text = rng.standard_normal((n, DIM)).astype(np.float32)
    payloads = [
        {
            "doc_id": f"d{i}",
            "category": TOPICS[i % 3],
            "year": 2015 + i % 10,
            "rating": i / 2,
            "body": f"text {i}",
        }
        for i in range(n)
    ]
    client = QdrantClient(path=str(folder))
    client.create_collection(
        "articles",
        vectors_config={
            "text": models.VectorParams(size=DIM, distance=models.Distance.COSINE),
            "image": models.VectorParams(size=2, distance=models.Distance.DOT),
        },
    )
    client.upsert(
        "articles",
        [
            models.PointStruct(
                id=i, vector={"text": text[i].tolist(), "image": [i, 1.0]}, payload=payloads[i]
            )
            for i in range(n)
        ],
    )
    client.close()
    return text, payloads


def test_wrapping_an_existing_collection(folder):
    text, payloads = their_collection(folder)
    with open_store(f"qdrant-local://{folder}", WRAPPED) as store:
        (got,) = store.get(["d7"])
        assert same_vector(got.vector, text[7], "cosine")
        assert got.metadata == {"topic": "sport", "year": 2022, "rating": 3.5}

        query = np.random.default_rng(9).standard_normal(DIM).astype(np.float32)
        eligible = [i for i, p in enumerate(payloads) if p["category"] == "news" and p["year"] >= 2020]
        dist = distances(text[eligible], query, "cosine")
        hits = store.search(query, k=5, filter={"topic": "news", "year": {"$gte": 2020}})
        assert [h.id for h in hits] == [f"d{eligible[i]}" for i in np.argsort(dist)[:5]]
        assert [h.distance for h in hits] == pytest.approx(np.sort(dist)[:5].tolist(), abs=1e-5)

        scanned = {r.id: r for batch in store.scan(batch_size=16) for r in batch}
        assert sorted(scanned) == sorted(p["doc_id"] for p in payloads)

        new_vector = np.ones(DIM, np.float32)
        store.upsert(
            [
                Record("d7", new_vector, {"topic": "tech", "year": 2030}),
                Record("fresh", -new_vector, {"topic": "news", "year": 2031, "rating": 1.0}),
            ]
        )
        store.delete(["d8"])
        assert store.count() == len(payloads)
        assert store.search(new_vector, k=1)[0].id == "d7"
        assert store.get(["d8"]) == []

    client = QdrantClient(path=str(folder))
    try:
        (point,) = client.retrieve("articles", [7], with_vectors=True)
        # The user's id, their unknown payload key and their other vector all survived.
        assert point.payload == {"doc_id": "d7", "category": "tech", "year": 2030, "body": "text 7"}
        assert point.vector["image"] == [7.0, 1.0]
        assert same_vector(np.array(point.vector["text"], np.float32), new_vector, "cosine")
        (fresh,) = client.scroll("articles", models.Filter(must=[_match("doc_id", "fresh")]))[0]
        assert fresh.payload["category"] == "news"
        assert client.retrieve("articles", [8]) == []
    finally:
        client.close()

    # The first open bound the spec: another model is refused from now on.
    with pytest.raises(ModelMismatchError, match="their-embedder"):
        open_store(f"qdrant-local://{folder}", WRAPPED.model_copy(update={"model": "other"}))


def _match(key: str, value: str) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dim": DIM + 1}, "9-dimensional cosine"),
        ({"metric": "l2"}, "8-dimensional l2"),
        ({"vector_source": "video"}, "named vectors"),
        ({"id_source": "category", "fields": {"year": {"type": "int"}}}, "not unique"),
        ({"id_source": "year", "fields": {}}, "no string payload 'year'"),
    ],
    ids=["dim", "metric", "vector name", "repeated id", "id not a str"],
)
def test_a_spec_that_does_not_fit_their_collection_is_refused(folder, change, message):
    their_collection(folder, n=6)
    spec = CollectionSpec.model_validate({**WRAPPED.model_dump(), **change})
    with pytest.raises(ConfigError, match=message):
        open_store(f"qdrant-local://{folder}", spec)
    # The refused open bound nothing and released the folder.
    open_store(f"qdrant-local://{folder}", WRAPPED).close()


# ?id=point: the point ids are the record ids


def point_spec(id_type: str, name: str = "events") -> CollectionSpec:
    return CollectionSpec(
        name=name,
        dim=DIM,
        metric="l2",
        model="their-embedder",
        id_type=id_type,
        fields={
            "kind": FieldSpec(type="str", optional=True),
            "note": FieldSpec(type="str", filterable=False),
        },
    )


def their_points(folder: Path, ids: list, payloads: list[dict], name: str = "events") -> np.ndarray:
    """A collection an app keyed by its own point ids, with nothing of dualvec's in it."""
    vectors = np.random.default_rng(3).standard_normal((len(ids), DIM)).astype(np.float32)
    client = QdrantClient(path=str(folder))
    client.create_collection(
        name, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.EUCLID)
    )
    client.upsert(
        name,
        [
            models.PointStruct(id=i, vector=v.tolist(), payload=p)
            for i, v, p in zip(ids, vectors, payloads, strict=True)
        ],
    )
    client.close()
    return vectors


def their_payloads(folder: Path, name: str = "events") -> dict:
    client = QdrantClient(path=str(folder))
    try:
        points, _ = client.scroll(name, limit=100, with_payload=True)
    finally:
        client.close()
    return {p.id: p.payload for p in points}


def test_id_point_with_int_ids_writes_the_point_ids_themselves(folder):
    vectors = their_points(folder, [3, 10], [{"kind": "click", "id": "theirs"}, {"kind": "view"}])
    with open_store(f"qdrant-local://{folder}?id=point", point_spec("int")) as store:
        assert [r.id for r in store.get(["10", "3", "4"])] == ["10", "3"]
        store.upsert(
            [
                Record("3", vectors[0], {"note": "replaced"}),  # kind unset: the key goes
                Record("42", vectors[1] + 1, {"kind": "buy"}),
            ]
        )
        assert store.search(vectors[1] + 1, k=1)[0].id == "42"
        store.delete(["10", "999"])
        assert sorted(r.id for batch in store.scan() for r in batch) == ["3", "42"]
    # Int point ids, no id key added, the app's own key kept.
    assert their_payloads(folder) == {3: {"id": "theirs", "note": "replaced"}, 42: {"kind": "buy"}}


def test_id_point_with_uuid_ids(folder):
    first, second = uuid.UUID(int=1), uuid.UUID(int=2**100)
    vectors = their_points(folder, [str(first).upper(), second.hex], [{"kind": "a"}, {}])
    fresh = str(uuid.UUID(int=7))
    with open_store(f"qdrant-local://{folder}?id=point", point_spec("uuid")) as store:
        # Whatever spelling the app wrote, ids come back canonical.
        assert sorted(r.id for batch in store.scan() for r in batch) == sorted([str(first), str(second)])
        assert store.search(vectors[1], k=1)[0].id == str(second)
        store.upsert([Record(fresh, vectors[0], {"kind": "b"})])
        assert store.get([fresh])[0].metadata == {"kind": "b"}
    assert their_payloads(folder)[fresh] == {"kind": "b"}


def test_id_point_refuses_negative_ids_but_reads_the_apps_own(folder):
    # Local mode took a negative id from the app; a Qdrant server would not.
    vectors = their_points(folder, [-5, 1], [{"kind": "old"}, {"kind": "new"}])
    with open_store(f"qdrant-local://{folder}?id=point", point_spec("int")) as store:
        assert store.get(["-5"])[0].metadata == {"kind": "old"}
        with pytest.raises(ValidationError, match=r"id '-7'.*negative"):
            store.upsert([Record("8", vectors[0], {}), Record("-7", vectors[1], {})])
        assert store.get(["8", "-7"]) == []
        assert store.count() == 2


def test_id_point_refuses_int_ids_beyond_64_bits(folder):
    their_points(folder, [1, 2**63], [{}, {}])
    with pytest.raises(ConfigError, match=f"point id {2**63}, beyond {2**63 - 1}"):
        open_store(f"qdrant-local://{folder}?id=point", point_spec("int"))


def test_the_id_layout_is_bound_on_first_open(folder):
    """A collection dualvec filled (uuid5 point ids) also looks keyed by UUIDs: only the binding
    tells the two apart, so reading its point ids as record ids is refused."""
    spec = point_spec("uuid")
    with open_store(f"qdrant-local://{folder}", spec) as store:
        store.upsert([Record(str(uuid.UUID(int=9)), np.ones(DIM, np.float32), {})])
    with pytest.raises(ConfigError, match=r"opened with record ids in the payload, now with \?id=point"):
        open_store(f"qdrant-local://{folder}?id=point", spec)
    other = point_spec("int", name="other")
    open_store(f"qdrant-local://{folder}?id=point", other).close()
    with pytest.raises(ConfigError, match=r"opened with \?id=point"):
        open_store(f"qdrant-local://{folder}", other)


@pytest.mark.parametrize("option", ["id=payload", "id=", "id=Point"])
def test_unknown_id_options_are_refused(folder, option):
    with pytest.raises(ConfigError, match="the only value is 'point'"):
        open_store(f"qdrant-local://{folder}?{option}", point_spec("int"))


# ?table=: the app's name for the Qdrant collection


def test_table_names_the_qdrant_collection(folder):
    vectors = their_points(folder, [1, 2], [{"kind": "x"}, {"kind": "y"}], name="Events-v2.prod")
    spec = point_spec("int")
    url = f"qdrant-local://{folder}?id=point&table=Events-v2.prod"
    with open_store(url, spec) as store:
        assert store.count() == 2
        assert store.search(vectors[1], k=1, filter={"kind": "y"})[0].id == "2"
    # dualvec's bookkeeping is under the collection's name; no collection named after it appeared.
    assert (folder / "dualvec" / "events.json").exists()
    client = QdrantClient(path=str(folder))
    try:
        assert [c.name for c in client.get_collections().collections] == ["Events-v2.prod"]
    finally:
        client.close()


def test_a_payload_value_of_another_type_is_refused_naming_the_point(folder):
    their_points(folder, [1, 2], [{"kind": "x"}, {"kind": ["x", "y"]}])
    with open_store(f"qdrant-local://{folder}?id=point", point_spec("int")) as store:
        assert store.get(["1"])[0].metadata == {"kind": "x"}
        with pytest.raises(ConfigError, match=r"point 2 .* payload 'kind' holds list \['x', 'y'\].* str"):
            store.get(["2"])
