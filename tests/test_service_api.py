"""The data API end to end, against the real ASGI app over real stores: two collections, each a
sqlite-blob legacy store and a sqlite-vec target, in phase dual from the flag file.

What a client sees must be what a Python caller of the Router sees: the same records, the same
hits, the same distances to the bit, the same errors (as JSON), and nothing written by a
refused request.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from openapi_spec_validator import validate

from dualvec.flags import write_flag_file
from dualvec.migration import Migration
from dualvec.service.app import create_app
from dualvec.service.limits import Limits
from dualvec.service.models import (
    CollectionsResponse,
    ErrorResponse,
    ExportResponse,
    RecordsResponse,
    SearchResponse,
)
from dualvec.settings import CollectionConfig, Flags, Phase, Settings
from dualvec.spec import FieldSpec
from dualvec.testing import make_records
from dualvec.testing.data import SAMPLE_FIELDS
from dualvec.validation import MAX_K

DIM = 8
MAX_BATCH = 20
MAX_BODY = 64 * 1024
TOKEN = "s3cret-token"


def service_settings(tmp_path) -> Settings:
    return Settings(
        collections={
            "docs": CollectionConfig(
                dim=DIM,
                model="test-embedder",
                fields=SAMPLE_FIELDS,
                legacy_url=f"sqlite-blob://{tmp_path}/docs-legacy.db",
                target_url=f"sqlite-vec://{tmp_path}/docs-target.db",
            ),
            "notes": CollectionConfig(
                dim=4,
                model="m",
                metric="l2",
                fields={"lang": FieldSpec(type="str")},
                legacy_url=f"sqlite-blob://{tmp_path}/notes-legacy.db",
                target_url=f"sqlite-vec://{tmp_path}/notes-target.db",
            ),
        },
        flag_file=tmp_path / "flags.json",
        outbox_path=tmp_path / "outbox.db",
    )


def b64(vector) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()


def as_json(record, form: str = "numbers") -> dict:
    vector = (
        {"vector": [float(x) for x in record.vector]}
        if form == "numbers"
        else {"vector_b64": b64(record.vector)}
    )
    return {"id": record.id, **vector, "metadata": record.metadata}


def app_for(tmp_path, admin_token: str | None = None):
    settings = service_settings(tmp_path)
    write_flag_file(settings.flag_file, Flags(phase=Phase.DUAL))
    return create_app(
        lambda: Migration.from_settings(settings, start_replayer=False),
        limits=Limits(max_body_bytes=MAX_BODY, max_batch=MAX_BATCH),
        admin_token=admin_token,
    )


@pytest.fixture
def client(tmp_path):
    with TestClient(app_for(tmp_path)) as client:
        yield client


@pytest.fixture
def migration(client) -> Migration:
    return client.app.state.service.migration


def load(client):
    """`docs` holds 15 records, `notes` 3, in both stores."""
    records = make_records(15, DIM)
    assert client.post(
        "/collections/docs/records", json={"records": [as_json(r) for r in records]}
    ).json() == {"upserted": 15}
    notes = [{"id": f"n{i}", "vector": [float(i), 1, 0, 0], "metadata": {"lang": "en"}} for i in range(3)]
    assert client.post("/collections/notes/records", json={"records": notes}).status_code == 200
    return records


@pytest.fixture
def loaded(client):
    return load(client)


@pytest.fixture(scope="module")
def refusing(tmp_path_factory):
    """One loaded service for every bad-input case: each asserts that it wrote nothing, so they
    can share it."""
    with TestClient(app_for(tmp_path_factory.mktemp("refusing"))) as client:
        load(client)
        yield client


def counts(migration) -> dict[tuple[str, str], int]:
    return {
        (name, role): router.stores[role].count()
        for name, router in migration.routers.items()
        for role in ("legacy", "target")
    }


# the schema


def test_openapi_schema_is_valid_and_names_both_vector_forms(client):
    schema = client.get("/openapi.json").json()
    validate(schema)
    paths = schema["paths"]
    assert {
        "/collections",
        "/collections/{name}/records",
        "/collections/{name}/search",
        "/collections/{name}/get",
        "/collections/{name}/delete",
        "/collections/{name}/records/{id}",
        "/collections/{name}/count",
        "/healthz",
        "/readyz",
        "/metrics",
        "/admin/status",
    } <= set(paths)
    record = schema["components"]["schemas"]["RecordIn"]["properties"]
    assert "little-endian float32" in record["vector_b64"]["description"]
    search = paths["/collections/{name}/search"]["post"]
    assert search["operationId"] == "search"
    error = {"$ref": "#/components/schemas/ErrorResponse"}
    for status in ("404", "409", "413", "422", "503"):
        assert search["responses"][status]["content"]["application/json"]["schema"] == error


def test_collections_lists_each_spec(client):
    body = CollectionsResponse.model_validate(client.get("/collections").json())
    assert sorted(body.collections) == ["docs", "notes"]
    docs = body.collections["docs"]
    assert (docs.dim, docs.metric, docs.model, docs.id_type) == (DIM, "cosine", "test-embedder", "str")
    assert docs.fields["title"].filterable is False
    assert body.collections["notes"].metric == "l2"


# the data API end to end


def test_upsert_writes_both_stores_and_count_reads_the_primary(client, migration, loaded):
    assert counts(migration) == {
        ("docs", "legacy"): 15,
        ("docs", "target"): 15,
        ("notes", "legacy"): 3,
        ("notes", "target"): 3,
    }
    assert client.get("/collections/docs/count").json() == {"count": 15}
    assert client.get("/collections/notes/count").json() == {"count": 3}


def test_search_answers_what_the_library_answers_to_the_bit(client, migration, loaded):
    router = migration["docs"]
    for query in make_records(5, DIM, seed=7):
        for flt in (None, {"lang": "en"}, {"year": {"$gte": 2010}, "lang": {"$in": ["en", "fr"]}}):
            body = {"vector": [float(x) for x in query.vector], "k": 5, "filter": flt, "routing_key": "t1"}
            answer = client.post("/collections/docs/search", json=body)
            assert answer.status_code == 200, answer.text
            hits = SearchResponse.model_validate(answer.json()).hits
            expected = router.search(query.vector, 5, flt, routing_key="t1")
            assert [(h.id, h.distance, h.metadata) for h in hits] == [
                (h.id, h.distance, h.metadata) for h in expected
            ]
            assert hits, flt
            if flt == {"lang": "en"}:
                assert {h.metadata["lang"] for h in hits} == {"en"}


def test_both_vector_forms_give_the_same_answers(client, loaded):
    query = make_records(1, DIM, seed=3)[0].vector
    numbers = client.post("/collections/docs/search", json={"vector": [float(x) for x in query], "k": 7})
    compact = client.post("/collections/docs/search", json={"vector_b64": b64(query), "k": 7})
    assert numbers.status_code == compact.status_code == 200
    assert numbers.json() == compact.json()

    # A record written in the compact form reads back bit for bit in both forms.
    record = make_records(1, DIM, seed=11, prefix="compact-")[0]
    assert (
        client.post("/collections/docs/records", json={"records": [as_json(record, "b64")]}).status_code
        == 200
    )
    as_numbers = client.post("/collections/docs/get", json={"ids": [record.id]}).json()["records"][0]
    as_b64 = client.post("/collections/docs/get", json={"ids": [record.id], "vector_format": "b64"}).json()
    stored = np.asarray(as_numbers["vector"], dtype=np.float32)
    assert stored.tobytes() == np.asarray(record.vector, dtype=np.float32).tobytes()
    assert as_b64["records"][0]["vector_b64"] == b64(record.vector)
    assert "vector" not in as_b64["records"][0]


def test_get_returns_records_in_the_order_asked_and_skips_missing_ids(client, loaded):
    answer = client.post("/collections/docs/get", json={"ids": ["doc-3", "missing", "doc-1", "doc-3"]})
    body = RecordsResponse.model_validate(answer.json())
    assert [r.id for r in body.records] == ["doc-3", "doc-1"]
    by_id = {r.id: r for r in loaded}
    for record in body.records:
        assert np.asarray(record.vector, np.float32).tobytes() == by_id[record.id].vector.tobytes()
        assert record.metadata == by_id[record.id].metadata


def test_delete_by_list_and_by_path_reaches_both_stores(client, migration, loaded):
    assert client.post(
        "/collections/docs/delete", json={"ids": ["doc-0", "doc-1", "doc-1", "nope"]}
    ).json() == {"deleted": 3}
    # An id may hold a slash: the path's last part is the whole id.
    slashed = {"id": "a/b c", "vector": [1.0] * DIM, "metadata": loaded[0].metadata}
    assert client.post("/collections/docs/records", json={"records": [slashed]}).status_code == 200
    assert client.delete("/collections/docs/records/a%2Fb%20c").json() == {"deleted": 1}
    assert client.delete("/collections/docs/records/doc-2").json() == {"deleted": 1}
    assert counts(migration)[("docs", "legacy")] == counts(migration)[("docs", "target")] == 12
    left = client.post("/collections/docs/get", json={"ids": ["doc-0", "doc-2", "a/b c", "doc-3"]}).json()
    assert [r["id"] for r in left["records"]] == ["doc-3"]


def test_model_must_match_the_collection(client, loaded):
    record = as_json(make_records(1, DIM, seed=99, prefix="m-")[0])
    ok = client.post("/collections/docs/records", json={"records": [record], "model": "test-embedder"})
    assert ok.json() == {"upserted": 1}
    query = {"vector": record["vector"], "k": 1, "model": "test-embedder"}
    assert client.post("/collections/docs/search", json=query).json()["hits"][0]["id"] == record["id"]


# export


def export_all(client, name: str, limit: int, **params) -> list[dict]:
    records, cursor, pages = [], None, 0
    while True:
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        page = ExportResponse.model_validate(client.get(f"/collections/{name}/records", params=query).json())
        records += [r.model_dump(exclude_none=True) for r in page.records]
        pages += 1
        if page.next_cursor is None:
            return records
        cursor = page.next_cursor
        assert pages < 100


def test_export_pages_through_every_record_once_in_id_order(client, loaded):
    exported = export_all(client, "docs", limit=4)
    assert [r["id"] for r in exported] == sorted(r.id for r in loaded)
    by_id = {r.id: r for r in loaded}
    for record in exported:
        assert np.asarray(record["vector"], np.float32).tobytes() == by_id[record["id"]].vector.tobytes()
    compact = export_all(client, "docs", limit=6, vector_format="b64")
    assert [r["vector_b64"] for r in compact] == [b64(by_id[r["id"]].vector) for r in compact]


def test_export_during_writes_keeps_its_promise(client, loaded):
    """Held throughout: exactly once; updated before its page: the new value; deleted before
    its page: left out; created after the first page: not included."""
    ids = sorted(r.id for r in loaded)
    first = client.get("/collections/docs/records", params={"limit": 5}).json()
    assert [r["id"] for r in first["records"]] == ids[:5]
    later = ids[7]
    changed = {"id": later, "vector": [0.5] * DIM, "metadata": {**loaded[0].metadata, "title": "changed"}}
    created = {"id": "zzz-new", "vector": [0.25] * DIM, "metadata": loaded[0].metadata}
    assert client.post("/collections/docs/records", json={"records": [changed, created]}).status_code == 200
    assert client.post("/collections/docs/delete", json={"ids": [ids[6], ids[1]]}).status_code == 200

    rest, cursor = [], first["next_cursor"]
    while cursor:
        page = client.get("/collections/docs/records", params={"limit": 5, "cursor": cursor}).json()
        rest += page["records"]
        cursor = page["next_cursor"]
    seen = [r["id"] for r in first["records"]] + [r["id"] for r in rest]
    assert len(seen) == len(set(seen))
    assert [r["id"] for r in rest] == [i for i in ids[5:] if i != ids[6]]
    assert next(r for r in rest if r["id"] == later)["metadata"]["title"] == "changed"


def test_a_forgotten_export_goes_on_after_its_cursor(client, loaded):
    ids = sorted(r.id for r in loaded)
    first = client.get("/collections/docs/records", params={"limit": 10}).json()
    client.app.state.service.exports = type(client.app.state.service.exports)()  # as after a restart
    created = {"id": "zzz-after", "vector": [0.25] * DIM, "metadata": loaded[0].metadata}
    assert client.post("/collections/docs/records", json={"records": [created]}).status_code == 200
    rest = client.get(
        "/collections/docs/records", params={"limit": 10, "cursor": first["next_cursor"]}
    ).json()
    assert [r["id"] for r in rest["records"]] == [*ids[10:], "zzz-after"]
    assert rest["next_cursor"] is None


# health, readiness, metrics, admin


def test_probes_and_metrics(client, loaded):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {
        "status": "ready",
        "collections": {"docs": {"phase": "dual"}, "notes": {"phase": "dual"}},
    }
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'dualvec_phase{collection="docs",phase="dual"} 1.0' in metrics.text
    assert 'dualvec_reads_total{collection="docs",store="legacy"}' in metrics.text


def test_admin_status_is_open_without_a_token(client, loaded):
    status = client.get("/admin/status").json()["collections"]
    assert status["docs"]["phase"] == "dual"
    assert status["docs"]["legacy"]["count"] == status["docs"]["target"]["count"] == 15
    assert status["notes"]["outbox"] == {"depth": 0, "oldest_age_seconds": 0.0}


def test_admin_status_needs_the_bearer_token_when_one_is_set(tmp_path):
    with TestClient(app_for(tmp_path, admin_token=TOKEN)) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            answer = client.get("/admin/status", headers=headers)
            assert answer.status_code == 401, headers
            assert answer.json()["error"]["type"] == "Unauthorized"
            assert answer.headers["www-authenticate"].startswith("Bearer")
        assert client.get("/admin/status", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert client.get("/collections/docs/count").json() == {"count": 0}  # the data API is not guarded


def test_requests_before_the_stores_open_are_not_ready(tmp_path):
    app = app_for(tmp_path)
    client = TestClient(app)  # no `with`: the app never started
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["error"]["type"] == "NotReady"
    assert client.get("/healthz").status_code == 200


# bad input: refused with a status, the error shape, the field named, and nothing written

VALID = {
    "id": "fresh-0",
    "vector": [0.5] * DIM,
    "metadata": {"lang": "en", "year": 2020, "score": 0.5, "public": True},
}


def bad(record_changes: dict | None = None, drop: str | None = None) -> dict:
    """An upsert of one valid new record and a second one that is bad as described."""
    second = {**VALID, "id": "fresh-1", **(record_changes or {})}
    if drop:
        second.pop(drop)
    return {"records": [VALID, second]}


def raw(text: str, content_type: str = "application/json") -> tuple[str, bytes]:
    """A body sent as these bytes, not encoded from a value."""
    return content_type, text.encode()


NAN_TOKEN = '{"records": [{"id": "x", "vector": [1, 2, NaN, 4, 5, 6, 7, 8], "metadata": {}}]}'
INF_TOKEN = '{"vector": [Infinity, 0, 0, 0, 0, 0, 0, 0], "k": 3}'
QUERY = [0.5] * DIM

CASES = [
    # (id, method, path, json body or raw bytes, status, type, field)
    (
        "malformed JSON",
        "POST",
        "/collections/docs/records",
        raw('{"records": ['),
        400,
        "MalformedJSON",
        "body",
    ),
    (
        "not JSON at all",
        "POST",
        "/collections/docs/search",
        raw("vector=1,2", "text/plain"),
        400,
        "MalformedJSON",
        "body",
    ),
    ("array body", "POST", "/collections/docs/records", [VALID], 422, "ValidationError", "body"),
    ("missing records", "POST", "/collections/docs/records", {}, 422, "ValidationError", "records"),
    (
        "records not a list",
        "POST",
        "/collections/docs/records",
        {"records": {}},
        422,
        "ValidationError",
        "records",
    ),
    ("empty batch", "POST", "/collections/docs/records", {"records": []}, 422, "ValidationError", "records"),
    (
        "missing id",
        "POST",
        "/collections/docs/records",
        bad(drop="id"),
        422,
        "ValidationError",
        "records[1].id",
    ),
    (
        "id not a string",
        "POST",
        "/collections/docs/records",
        bad({"id": 7}),
        422,
        "ValidationError",
        "records[1].id",
    ),
    (
        "empty id",
        "POST",
        "/collections/docs/records",
        bad({"id": ""}),
        422,
        "ValidationError",
        "records[1].id",
    ),
    (
        "id with NUL",
        "POST",
        "/collections/docs/records",
        bad({"id": "a\x00b"}),
        422,
        "ValidationError",
        "records[1].id",
    ),
    (
        "id too long",
        "POST",
        "/collections/docs/records",
        bad({"id": "x" * 2000}),
        422,
        "ValidationError",
        "records[1].id",
    ),
    (
        "unknown key",
        "POST",
        "/collections/docs/records",
        bad({"vectr": [1]}),
        422,
        "ValidationError",
        "records[1].vectr",
    ),
    (
        "no vector",
        "POST",
        "/collections/docs/records",
        bad(drop="vector"),
        422,
        "ValidationError",
        "records[1].vector",
    ),
    (
        "both vector forms",
        "POST",
        "/collections/docs/records",
        bad({"vector_b64": b64(QUERY)}),
        422,
        "ValidationError",
        "records[1].vector",
    ),
    (
        "wrong dimension",
        "POST",
        "/collections/docs/records",
        bad({"vector": [1.0] * 7}),
        422,
        "ValidationError",
        "records[1].vector",
    ),
    (
        "NaN token",
        "POST",
        "/collections/docs/records",
        raw(NAN_TOKEN),
        422,
        "ValidationError",
        "records[0].vector[2]",
    ),
    (
        "NaN string",
        "POST",
        "/collections/docs/records",
        bad({"vector": [1, 2, "NaN", 4, 5, 6, 7, 8]}),
        422,
        "ValidationError",
        "records[1].vector[2]",
    ),
    (
        "Infinity token",
        "POST",
        "/collections/docs/search",
        raw(INF_TOKEN),
        422,
        "ValidationError",
        "vector[0]",
    ),
    (
        "beyond float32",
        "POST",
        "/collections/docs/records",
        bad({"vector": [1e39] * DIM}),
        422,
        "ValidationError",
        "records[1].vector",
    ),
    (
        "bool in vector",
        "POST",
        "/collections/docs/records",
        bad({"vector": [True] * DIM}),
        422,
        "ValidationError",
        "records[1].vector[0]",
    ),
    (
        "zero vector, cosine",
        "POST",
        "/collections/docs/records",
        bad({"vector": [0] * DIM}),
        422,
        "ValidationError",
        "records[1].vector",
    ),
    (
        "bad base64",
        "POST",
        "/collections/docs/records",
        bad({"vector": None, "vector_b64": "not base64!"}),
        422,
        "ValidationError",
        "records[1].vector_b64",
    ),
    (
        "base64 of the wrong length",
        "POST",
        "/collections/docs/records",
        bad({"vector": None, "vector_b64": b64([1.0] * (DIM - 1))}),
        422,
        "ValidationError",
        "records[1].vector_b64",
    ),
    (
        "NaN in base64",
        "POST",
        "/collections/docs/records",
        bad({"vector": None, "vector_b64": b64([float("nan")] * DIM)}),
        422,
        "ValidationError",
        "records[1].vector_b64",
    ),
    (
        "duplicate ids",
        "POST",
        "/collections/docs/records",
        bad({"id": "fresh-0"}),
        422,
        "ValidationError",
        "records[1].id",
    ),
    (
        "unknown metadata field",
        "POST",
        "/collections/docs/records",
        bad({"metadata": {**VALID["metadata"], "colour": "red"}}),
        422,
        "ValidationError",
        "records[1].metadata",
    ),
    (
        "metadata of the wrong type",
        "POST",
        "/collections/docs/records",
        bad({"metadata": {**VALID["metadata"], "year": "2020"}}),
        422,
        "ValidationError",
        "records[1].metadata.year",
    ),
    (
        "filterable field missing",
        "POST",
        "/collections/docs/records",
        bad({"metadata": {"year": 2020, "score": 0.5, "public": True}}),
        422,
        "ValidationError",
        "records[1].metadata.lang",
    ),
    (
        "metadata not an object",
        "POST",
        "/collections/docs/records",
        bad({"metadata": ["en"]}),
        422,
        "ValidationError",
        "records[1].metadata",
    ),
    (
        "another model",
        "POST",
        "/collections/docs/records",
        {**bad(), "model": "other"},
        409,
        "ModelMismatchError",
        "model",
    ),
    (
        "batch over the limit",
        "POST",
        "/collections/docs/records",
        {"records": [{**VALID, "id": f"n{i}"} for i in range(MAX_BATCH + 1)]},
        413,
        "PayloadTooLarge",
        "records",
    ),
    (
        "body over the limit",
        "POST",
        "/collections/docs/records",
        {"records": [{**VALID, "id": f"n{i}", "vector": [0.123456789] * DIM} for i in range(400)]},
        413,
        "PayloadTooLarge",
        "body",
    ),
    (
        "unknown collection",
        "POST",
        "/collections/nope/records",
        {"records": [VALID]},
        404,
        "NotFound",
        "name",
    ),
    (
        "hostile collection name",
        "POST",
        "/collections/docs';%20DROP%20TABLE%20docs;--/search",
        {"vector": QUERY},
        404,
        "NotFound",
        "name",
    ),
    (
        "path in a collection name",
        "GET",
        "/collections/..%5C..%5Cetc%5Cpasswd/count",
        None,
        404,
        "NotFound",
        "name",
    ),
    ("k = 0", "POST", "/collections/docs/search", {"vector": QUERY, "k": 0}, 422, "ValidationError", "k"),
    (
        "k too big",
        "POST",
        "/collections/docs/search",
        {"vector": QUERY, "k": MAX_K + 1},
        422,
        "ValidationError",
        "k",
    ),
    (
        "k as a string",
        "POST",
        "/collections/docs/search",
        {"vector": QUERY, "k": "10"},
        422,
        "ValidationError",
        "k",
    ),
    (
        "k as a float",
        "POST",
        "/collections/docs/search",
        {"vector": QUERY, "k": 1.5},
        422,
        "ValidationError",
        "k",
    ),
    (
        "search without a vector",
        "POST",
        "/collections/docs/search",
        {"k": 3},
        422,
        "ValidationError",
        "vector",
    ),
    (
        "query of the wrong dimension",
        "POST",
        "/collections/docs/search",
        {"vector": [1.0] * 3},
        422,
        "ValidationError",
        "vector",
    ),
    (
        "query NaN string",
        "POST",
        "/collections/docs/search",
        {"vector": ["NaN"] * DIM},
        422,
        "ValidationError",
        "vector[0]",
    ),
    (
        "unknown search key",
        "POST",
        "/collections/docs/search",
        {"vector": QUERY, "kk": 3},
        422,
        "ValidationError",
        "kk",
    ),
    (
        "unknown filter operator",
        "POST",
        "/collections/docs/search",
        {"vector": QUERY, "filter": {"year": {"$regex": "20.*"}}},
        422,
        "ValidationError",
        "filter.year",
    ),
    (
        "unknown filter field",
        "POST",
        "/collections/docs/search",
        {"vector": QUERY, "filter": {"colour": "red"}},
        422,
        "ValidationError",
        "filter",
    ),
    (
        "filter on a stored-only field",
        "POST",
        "/collections/docs/search",
        {"vector": QUERY, "filter": {"title": "x"}},
        422,
        "ValidationError",
        "filter",
    ),
    (
        "filter value of the wrong type",
        "POST",
        "/collections/docs/search",
        {"vector": QUERY, "filter": {"year": "2020"}},
        422,
        "ValidationError",
        "filter.year.$eq",
    ),
    (
        "$in without a list",
        "POST",
        "/collections/docs/search",
        {"vector": QUERY, "filter": {"lang": {"$in": "en"}}},
        422,
        "ValidationError",
        "filter.lang.$in",
    ),
    (
        "routing key not a string",
        "POST",
        "/collections/docs/search",
        {"vector": QUERY, "routing_key": 5},
        422,
        "ValidationError",
        "routing_key",
    ),
    ("ids not a list", "POST", "/collections/docs/get", {"ids": "doc-1"}, 422, "ValidationError", "ids"),
    ("no ids", "POST", "/collections/docs/delete", {"ids": []}, 422, "ValidationError", "ids"),
    (
        "an empty id",
        "POST",
        "/collections/docs/delete",
        {"ids": ["doc-1", ""]},
        422,
        "ValidationError",
        "ids[1]",
    ),
    (
        "too many ids",
        "POST",
        "/collections/docs/delete",
        {"ids": [f"doc-{i}" for i in range(MAX_BATCH + 1)]},
        413,
        "PayloadTooLarge",
        "ids",
    ),
    (
        "bad vector_format",
        "POST",
        "/collections/docs/get",
        {"ids": ["doc-1"], "vector_format": "hex"},
        422,
        "ValidationError",
        "vector_format",
    ),
    (
        "bad cursor",
        "GET",
        "/collections/docs/records?cursor=not-a-cursor",
        None,
        422,
        "ValidationError",
        "cursor",
    ),
    ("limit = 0", "GET", "/collections/docs/records?limit=0", None, 422, "ValidationError", "limit"),
    (
        "limit not a number",
        "GET",
        "/collections/docs/records?limit=ten",
        None,
        422,
        "ValidationError",
        "limit",
    ),
    (
        "limit over the batch limit",
        "GET",
        f"/collections/docs/records?limit={MAX_BATCH + 1}",
        None,
        422,
        "ValidationError",
        "limit",
    ),
    ("empty id in the path", "DELETE", "/collections/docs/records/", None, 422, "ValidationError", "id"),
    (
        "id with NUL in the path",
        "DELETE",
        "/collections/docs/records/a%00b",
        None,
        422,
        "ValidationError",
        "id",
    ),
    ("unknown route", "GET", "/collection/docs", None, 404, "NotFound", None),
    ("trailing slash", "GET", "/collections/", None, 404, "NotFound", None),
    ("wrong method", "PUT", "/collections/docs/search", {"vector": QUERY}, 405, "MethodNotAllowed", None),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "kind", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_refused_naming_the_field_and_writes_nothing(
    refusing, method, path, body, status, kind, field
):
    client, migration = refusing, refusing.app.state.service.migration
    before = counts(migration)
    if isinstance(body, tuple):
        content_type, content = body
        answer = client.request(method, path, content=content, headers={"content-type": content_type})
    else:
        answer = client.request(method, path, json=body)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    error = ErrorResponse.model_validate(answer.json()).error
    assert set(answer.json()) == {"error"} and set(answer.json()["error"]) == {"type", "message", "field"}
    assert (error.type, error.field) == (kind, field), error.message
    assert error.message and "Traceback" not in error.message
    assert counts(migration) == before
    assert client.post("/collections/docs/get", json={"ids": ["fresh-0", "fresh-1", "n0"]}).json() == {
        "records": []
    }


def test_a_cursor_of_another_collection_is_refused(client, loaded):
    cursor = client.get("/collections/docs/records", params={"limit": 2}).json()["next_cursor"]
    answer = client.get("/collections/notes/records", params={"cursor": cursor})
    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == "cursor"
    assert "docs" in answer.json()["error"]["message"]


def test_a_store_failure_is_a_503_without_a_trace(client, migration, loaded):
    migration["notes"].stores["legacy"].close()  # the primary in dual: every write now fails
    answer = client.post(
        "/collections/notes/records",
        json={"records": [{"id": "x", "vector": [1, 0, 0, 0], "metadata": {"lang": "en"}}]},
    )
    assert answer.status_code == 503
    error = answer.json()["error"]
    assert error["type"] == "StoreError" and "Traceback" not in error["message"]
    assert answer.headers["retry-after"] == "1"


def test_an_unknown_collection_answer_names_the_declared_ones(client):
    error = client.get("/collections/nope/count").json()["error"]
    assert "['docs', 'notes']" in error["message"]


def test_malformed_json_body_is_named_with_its_position(client):
    error = client.post(
        "/collections/docs/search", content=b'{"vector": [1,}', headers={"content-type": "application/json"}
    ).json()["error"]
    assert "character" in error["message"]
    json.dumps(error)  # plain JSON all the way down


def test_a_body_over_the_limit_without_a_length_is_refused_as_it_arrives(refusing):
    before = counts(refusing.app.state.service.migration)
    chunks = (b" " * 8192 for _ in range(MAX_BODY // 8192 + 2))
    answer = refusing.post(
        "/collections/docs/records", content=chunks, headers={"content-type": "application/json"}
    )
    assert "content-length" not in answer.request.headers
    assert answer.status_code == 413
    assert answer.json()["error"]["type"] == "PayloadTooLarge"
    assert counts(refusing.app.state.service.migration) == before


def test_a_fault_of_the_service_is_a_500_in_the_error_shape_without_a_trace(tmp_path):
    app = app_for(tmp_path)

    def broken() -> None:
        raise RuntimeError("secret internals")

    app.add_api_route("/broken", broken)
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.get("/broken")
    assert answer.status_code == 500
    error = answer.json()["error"]
    assert error["type"] == "InternalError"
    assert "secret" not in error["message"] and "Traceback" not in answer.text
