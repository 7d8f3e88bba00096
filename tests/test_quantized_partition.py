"""Partition keys (`partition = true` on a filterable field) in sqlite-vec, exact and quantized."""

from __future__ import annotations

import numpy as np
import pytest

from dualvec import CollectionSpec, ConfigError, FieldSpec, Record, open_store
from dualvec.filters import matches, parse_filter
from dualvec.sqlite_driver import connect

DIM = 32
TENANTS = ("acme", "globex", "initech", "a-tenant-name-longer-than-12-bytes")


def spec(**extra: FieldSpec) -> CollectionSpec:
    fields: dict[str, FieldSpec] = {
        "tenant": FieldSpec(type="str", partition=True),
        "plan": FieldSpec(type="int", partition=True, optional=True),
        "lang": FieldSpec(type="str"),
        "note": FieldSpec(type="str", filterable=False),
        **extra,
    }
    return CollectionSpec(name="docs", dim=DIM, metric="cosine", model="m", fields=fields)


def records(n: int = 400) -> list[Record]:
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    return [
        Record(
            f"d{i}",
            vectors[i],
            {
                "tenant": TENANTS[i % 4],
                **({"plan": i % 3} if i % 5 else {}),
                "lang": ("en", "fr")[i % 2],
                "note": f"n{i}",
            },
        )
        for i in range(n)
    ]


def top(rows: list[Record], query: np.ndarray, k: int) -> list[str]:
    matrix = np.stack([r.vector for r in rows]).astype(np.float64)
    dist = 1 - matrix @ query / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))
    return [rows[i].id for i in np.argsort(dist)[:k]]


@pytest.fixture(params=["", "quantize=int8", "quantize=bit&oversample=16"])
def loaded(request, tmp_path):
    store = open_store(f"sqlite-vec://{tmp_path}/v.db?{request.param}", spec())
    data = records()
    store.upsert(data)
    yield store, data, tmp_path / "v.db"
    store.close()


def test_partition_fields_are_vec0_partition_keys(loaded):
    _, _, path = loaded
    conn = connect(path)
    try:
        ddl = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'docs'").fetchone()[0]
        # vec0 keeps each partition's vectors in chunks of their own.
        stored = {row[0] for row in conn.execute("SELECT DISTINCT partition00 FROM docs_chunks")}
    finally:
        conn.close()
    assert "tenant text partition key" in ddl
    assert "plan integer partition key" in ddl
    assert stored == set(TENANTS)


@pytest.mark.parametrize(
    "where",
    [
        {"tenant": "globex"},
        {"tenant": "a-tenant-name-longer-than-12-bytes", "lang": "fr"},
        {"tenant": {"$in": ["acme", "initech"]}},
        {"tenant": {"$nin": ["acme", "initech"]}},
        {"tenant": {"$ne": "acme"}, "plan": {"$in": [0, 2]}},
        {"plan": {"$gte": 1}},
    ],
    ids=str,
)
def test_filters_on_partition_keys(loaded, where):
    store, data, _ = loaded
    conditions = parse_filter(store.spec, where)
    eligible = [r for r in data if matches(conditions, r.metadata)]
    query = np.random.default_rng(9).standard_normal(DIM).astype(np.float32)
    hits = store.search(query, k=10, filter=where)
    # k hits, not k per partition value: vec0 answers `partition IN (...)` once per value.
    assert len(hits) == 10
    assert all(matches(conditions, h.metadata) for h in hits)
    assert [h.distance for h in hits] == sorted(h.distance for h in hits)
    want = top(eligible, query, 10)
    if store.exact:
        assert [h.id for h in hits] == want
    else:
        assert len({h.id for h in hits} & set(want)) >= 9


def test_records_keep_their_partition_values(loaded):
    store, data, _ = loaded
    by_id = {r.id: r for r in data}
    for record in store.get(["d0", "d5", "d7"]):
        assert record.metadata == by_id[record.id].metadata
    moved = Record("d1", data[1].vector, {**data[1].metadata, "tenant": "acme"})
    store.upsert([moved])  # a new partition value: vec0 cannot UPDATE one, dualvec re-inserts
    assert store.get(["d1"])[0].metadata["tenant"] == "acme"
    assert store.search(data[1].vector, k=1, filter={"tenant": "acme"})[0].id == "d1"
    assert store.search(data[1].vector, k=1, filter={"tenant": "globex"})[0].id != "d1"
    assert store.count() == len(data)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"score": FieldSpec(type="float", partition=True)}, "partition keys are text or integer"),
        ({f"p{i}": FieldSpec(type="int", partition=True) for i in range(3)}, "allows 4 partition keys"),
    ],
)
def test_impossible_partition_keys_are_refused(tmp_path, fields, message):
    with pytest.raises(ConfigError, match=message):
        open_store(f"sqlite-vec://{tmp_path}/v.db", spec(**fields))


def test_reopen_with_another_partition_setting_is_refused(tmp_path):
    url = f"sqlite-vec://{tmp_path}/v.db"
    open_store(url, spec()).close()
    changed = spec(tenant=FieldSpec(type="str"))
    with pytest.raises(ConfigError, match="different spec"):
        open_store(url, changed)
