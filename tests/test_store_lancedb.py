from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import textwrap
from urllib.parse import quote

import lancedb
import numpy as np
import pyarrow as pa
import pytest
from lancedb.index import IvfPq

from dualvec import (
    CollectionSpec,
    ConfigError,
    FieldSpec,
    ModelMismatchError,
    Record,
    StoreError,
    ValidationError,
    open_store,
)
from dualvec.distance import distances, top_k
from dualvec.testing.conformance import PersistentStoreConformance
from dualvec.testing.data import make_records, sample_spec

DIM = 16


class TestLanceDBStore(PersistentStoreConformance):
    @pytest.fixture
    def open_collection(self, tmp_path):
        return lambda spec: open_store(f"lancedb://{tmp_path}/lance", spec)


@pytest.fixture
def url(tmp_path):
    return f"lancedb://{tmp_path}/lance"


def run_in_lockstep(url: str, rounds: int, *scripts: str) -> None:
    """Run each script in its own Python process with the store open. A script calls `step()` before
    each of its `rounds` rounds; no process starts a round before all have reached it."""
    prelude = textwrap.dedent(
        f"""
        import sys
        from dualvec import Record, open_store
        from dualvec.testing.data import make_records, sample_spec
        store = open_store({url!r}, sample_spec(dim={DIM}))
        def step():
            print("ready", flush=True)
            sys.stdin.readline()
        """
    )
    with contextlib.ExitStack() as stack:
        procs = [
            stack.enter_context(
                subprocess.Popen(
                    [sys.executable, "-c", prelude + textwrap.dedent(script)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
            for script in scripts
        ]
        stack.callback(lambda: [proc.kill() for proc in procs])  # if one fails, stop the others
        for _ in range(rounds):
            for proc in procs:
                assert proc.stdout.readline() == "ready\n", proc.communicate()[1]
            for proc in procs:
                proc.stdin.write("go\n")
                proc.stdin.flush()
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err


# Both processes insert the same 20 new ids in each round (an id inserted twice at once is what
# duplicates without a primary key), then both replace all 200 at once.
UPSERT_ROUNDS = """
records = make_records(200, {dim}, seed={seed})
for start in range(0, 200, 20):
    step()
    store.upsert(records[start : start + 20])
step()
store.upsert(records)
"""


def test_concurrent_upserts_from_two_processes_leave_no_duplicates(url):
    # Both processes also create the collection at once: the folder starts empty.
    run_in_lockstep(url, 11, UPSERT_ROUNDS.format(dim=DIM, seed=1), UPSERT_ROUNDS.format(dim=DIM, seed=2))
    store = open_store(url, sample_spec(dim=DIM))
    scanned = [r for batch in store.scan(batch_size=50) for r in batch]
    assert len(scanned) == len({r.id for r in scanned}) == 200
    assert store.count() == 200
    # Each record is whole: one writer's vector with that writer's metadata.
    first, second = make_records(200, DIM, seed=1), make_records(200, DIM, seed=2)
    by_id = {r.id: r for r in scanned}
    assert all(by_id[a.id] in (a, b) for a, b in zip(first, second, strict=True))


def test_reader_sees_another_process_writes_without_reopening(url):
    store = open_store(url, sample_spec(dim=DIM))
    store.upsert(make_records(3, DIM, prefix="mine-"))
    assert store.count() == 3
    run_in_lockstep(
        url,
        1,
        """
        step()
        store.upsert(make_records(5, 16, seed=9, prefix="theirs-"))
        store.delete(["mine-0"])
        """,
    )
    assert store.count() == 7
    assert [r.id for r in store.get(["theirs-4", "mine-0"])] == ["theirs-4"]
    theirs = make_records(5, DIM, seed=9, prefix="theirs-")
    assert store.search(theirs[2].vector, k=1)[0].id == "theirs-2"
    assert sum(len(batch) for batch in store.scan(batch_size=4)) == 7


def test_ann_index_makes_search_approximate_with_high_recall(url, tmp_path):
    dim, n = 32, 3000
    spec = sample_spec(dim=dim)
    records = make_records(n, dim, seed=3)
    store = open_store(url, spec)
    store.upsert(records)
    assert store.exact is True
    table = lancedb.connect(tmp_path / "lance").open_table(spec.name)
    table.create_index("vector", config=IvfPq(distance_type="l2", num_partitions=8, num_sub_vectors=8))
    store.search(records[0].vector, k=1)
    assert store.exact is True, "LanceDB scans when the index's metric is not the query's"
    table.create_index(
        "vector", config=IvfPq(distance_type="cosine", num_partitions=8, num_sub_vectors=8), replace=True
    )
    matrix = np.stack([r.vector for r in records])
    row_of = {r.id: row for row, r in enumerate(records)}
    recalls = []
    for query in np.random.default_rng(4).standard_normal((20, dim)).astype(np.float32):
        truth = distances(matrix, query, "cosine")
        want = {records[i].id for i in top_k(truth, 10)}
        hits = store.search(query, k=10)
        recalls.append(len(want & {h.id for h in hits}) / 10)
        for hit in hits:  # refined on the full vectors, so exact whatever PQ estimated
            assert hit.distance == pytest.approx(truth[row_of[hit.id]], abs=1e-5)
    assert store.exact is False
    assert np.mean(recalls) >= 0.9


def existing_table(tmp_path, n: int = 60) -> tuple[list[dict], np.ndarray]:
    """A table laid out as an application made it with LanceDB's own client, nullable id and all."""
    vectors = np.random.default_rng(5).standard_normal((n, 8)).astype(np.float32)
    rows = [
        {
            "doc_id": f"d{i}",
            "embedding": vectors[i].tolist(),
            "category": "ab"[i % 2],
            "year": 2000 + i % 25,
            "body": f"text {i}",
        }
        for i in range(n)
    ]
    lancedb.connect(tmp_path / "lance").create_table("legacy", data=rows)
    return rows, vectors


WRAPPED = CollectionSpec(
    name="legacy",
    dim=8,
    metric="l2",
    model="their-embedder",
    id_source="doc_id",
    vector_source="embedding",
    fields={"kind": FieldSpec(type="str", source="category"), "year": FieldSpec(type="int")},
)


def test_wraps_a_table_made_without_dualvec(url, tmp_path):
    rows, vectors = existing_table(tmp_path)
    store = open_store(url, WRAPPED)
    assert store.count() == len(rows)
    (got,) = store.get(["d7"])
    assert np.array_equal(got.vector, vectors[7])
    assert got.metadata == {"kind": "b", "year": 2007}

    query = vectors[3] + 0.1
    hits = store.search(query, k=5, filter={"kind": "b", "year": {"$gte": 2010}})
    eligible = [i for i, row in enumerate(rows) if row["category"] == "b" and row["year"] >= 2010]
    truth = distances(vectors[eligible], query, "l2")
    assert [h.id for h in hits] == [rows[eligible[i]]["doc_id"] for i in top_k(truth, 5)]
    assert [h.distance for h in hits] == pytest.approx(sorted(truth)[:5], abs=1e-5)

    scanned = {r.id: r for batch in store.scan(batch_size=16) for r in batch}
    assert sorted(scanned) == sorted(row["doc_id"] for row in rows)
    assert scanned["d8"].metadata == {"kind": "a", "year": 2008}

    store.upsert(
        [
            Record("d1", np.ones(8, np.float32), {"kind": "c", "year": 1999}),
            Record("new", np.full(8, 2.0, np.float32), {"kind": "a", "year": 2030}),
        ]
    )
    assert store.count() == len(rows) + 1
    assert store.search(np.ones(8, np.float32), k=1, filter={"kind": "c"})[0].id == "d1"
    theirs = lancedb.connect(tmp_path / "lance").open_table("legacy").to_arrow().to_pylist()
    by_id = {row["doc_id"]: row for row in theirs}
    assert by_id["d1"] == {
        "doc_id": "d1",
        "embedding": [1.0] * 8,
        "category": "c",
        "year": 1999,
        "body": "text 1",
    }
    assert by_id["new"]["body"] is None  # columns the spec does not name are left alone
    id_field = lancedb.connect(tmp_path / "lance").open_table("legacy").schema.field("doc_id")
    assert id_field.nullable is False  # made so to carry the primary key
    assert CollectionSpec.model_validate_json(id_field.metadata[b"dualvec.spec"]) == WRAPPED

    store.close()
    with pytest.raises(ModelMismatchError, match="their-embedder"):
        open_store(url, WRAPPED.model_copy(update={"model": "another"}))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"id_source": "uid"}, "no column 'uid'"),
        ({"dim": 9}, "fixed_size_list<float>\\[9\\]"),
        ({"fields": {"year": FieldSpec(type="str")}}, "column 'year' is int64"),
        ({"id_type": "int"}, "id column 'doc_id' is string, .*set id_type = \"str\""),
    ],
)
def test_wrapping_refuses_columns_that_do_not_fit(url, tmp_path, change, message):
    existing_table(tmp_path, n=3)
    with pytest.raises(ConfigError, match=message):
        open_store(url, WRAPPED.model_copy(update=change))
    # Nothing was bound, so the right spec still opens it.
    assert open_store(url, WRAPPED).count() == 3


def test_wraps_a_table_that_already_has_its_primary_key(url, tmp_path):
    existing_table(tmp_path, n=3)
    table = lancedb.connect(tmp_path / "lance").open_table("legacy")
    table.alter_columns({"path": "doc_id", "nullable": False})
    table.set_unenforced_primary_key("doc_id")
    store = open_store(url, WRAPPED)
    store.upsert([Record("d0", np.ones(8, np.float32), {"kind": "z", "year": 1})])
    assert store.count() == 3


def test_spec_travels_in_the_table_schema(url, tmp_path):
    spec = sample_spec(dim=DIM)
    open_store(url, spec).close()
    schema = lancedb.connect(tmp_path / "lance").open_table(spec.name).schema
    assert schema.field("id").nullable is False
    assert schema.field("id").metadata[b"lance-schema:unenforced-primary-key"] == b"true"
    assert CollectionSpec.model_validate_json(schema.field("id").metadata[b"dualvec.spec"]) == spec
    assert schema.field("vector").type == pa.list_(pa.float32(), DIM)


def test_source_names_lancedb_reserves_are_refused(url):
    spec = sample_spec(dim=DIM).model_copy(update={"fields": {"_distance": FieldSpec(type="float")}})
    with pytest.raises(ConfigError, match="reserves"):
        open_store(url, spec)


def test_rows_without_a_vector_fail_loudly(url, tmp_path):
    rows, _ = existing_table(tmp_path, n=3)
    lancedb.connect(tmp_path / "lance").open_table("legacy").add(
        [{**rows[0], "doc_id": "hole", "embedding": None}]
    )
    store = open_store(url, WRAPPED)
    with pytest.raises(StoreError, match="no vector"):
        list(store.scan())


def test_steady_small_writes_are_compacted(tmp_path):
    spec = sample_spec(dim=DIM)
    compacted = open_store(f"lancedb://{tmp_path}/a?optimize_every=10", spec)
    never = open_store(f"lancedb://{tmp_path}/b?optimize_every=0", spec)
    for step in range(40):
        batch = make_records(3, DIM, seed=step, prefix=f"s{step}-")
        compacted.upsert(batch)
        never.upsert(batch)
    fragments = {
        name: lancedb.connect(tmp_path / name).open_table("docs").stats()["fragment_stats"]["num_fragments"]
        for name in ("a", "b")
    }
    assert fragments["b"] >= 40
    assert fragments["a"] <= 10
    assert compacted.count() == never.count() == 120
    with pytest.raises(ConfigError, match="optimize_every"):
        open_store(f"lancedb://{tmp_path}/c?optimize_every=often", spec)


def tables(folder) -> list[str]:
    return lancedb.connect(folder).list_tables().tables


def test_table_option_names_the_lance_table(url, tmp_path):
    spec = sample_spec(dim=DIM)
    records = make_records(30, DIM)
    store = open_store(f"{url}?table=Docs.v2-final", spec)
    store.upsert(records)
    store.close()
    assert tables(tmp_path / "lance") == ["Docs.v2-final"]
    reopened = open_store(f"{url}?table=Docs.v2-final", spec)
    assert sorted(r.id for batch in reopened.scan(batch_size=7) for r in batch) == sorted(
        r.id for r in records
    )
    assert reopened.get(["doc-3"]) == [records[3]]
    # Without the option the collection's own name is used: another, new table.
    assert open_store(url, spec).count() == 0
    assert sorted(tables(tmp_path / "lance")) == ["Docs.v2-final", "docs"]


@pytest.mark.parametrize("name", ["../docs", "..", ".hidden", "a/b", "a\\b", "", "dönér", "a b", "x" * 250])
def test_table_option_refuses_names_lancedb_cannot_hold(url, tmp_path, name):
    with pytest.raises(
        ConfigError, match=re.escape("letters, digits, '_', '-' or '.', not starting with '.'")
    ):
        open_store(f"{url}?table={quote(name, safe='')}", sample_spec(dim=DIM))
    assert not (tmp_path / "docs.lance").exists()
    assert not (tmp_path / "lance").exists() or tables(tmp_path / "lance") == []


def test_a_table_folder_lancedb_cannot_open_is_never_written_over(url, tmp_path):
    """A damaged table (here: no committed version) reads as missing to LanceDB, whose
    create_table would then start a new table in the same folder."""
    lancedb.connect(tmp_path / "lance").create_table("docs", data=[{"id": "a", "vector": [1.0] * DIM}])
    shutil.rmtree(tmp_path / "lance" / "docs.lance" / "_versions")
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "lance").rglob("*"))
    with pytest.raises(ConfigError, match="exists but holds no table LanceDB can open"):
        open_store(url, sample_spec(dim=DIM))
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "lance").rglob("*")) == before


def test_integer_id_collections_get_an_int64_id_column(url, tmp_path):
    spec = sample_spec(dim=DIM).model_copy(update={"id_type": "int"})
    store = open_store(url, spec)
    store.upsert([Record("-5", np.ones(DIM, np.float32), make_records(1, DIM)[0].metadata)])
    table = lancedb.connect(tmp_path / "lance").open_table("docs")
    assert table.schema.field("id").type == pa.int64()
    assert table.to_arrow().column("id").to_pylist() == [-5]
    assert [r.id for r in store.get(["-5"])] == ["-5"]


def narrow_table(tmp_path) -> None:
    """An app table with narrower types than dualvec's own: int32 ids, an int16 and a float32 field."""
    schema = pa.schema(
        [
            pa.field("key", pa.int32()),
            pa.field("vec", pa.list_(pa.float32(), 8)),
            pa.field("stars", pa.int16()),
            pa.field("weight", pa.float32()),
        ]
    )
    rows = [{"key": i, "vec": [float(i + 1)] * 8, "stars": i, "weight": 0.5} for i in range(3)]
    lancedb.connect(tmp_path / "lance").create_table("narrow", data=pa.Table.from_pylist(rows, schema))


NARROW = CollectionSpec(
    name="narrow",
    dim=8,
    metric="l2",
    model="m",
    id_type="int",
    id_source="key",
    vector_source="vec",
    fields={"stars": "int", "weight": "float"},
)


@pytest.mark.parametrize(
    ("record_id", "metadata", "message"),
    [
        ("3000000000", {"stars": 1, "weight": 1.0}, "column 'key' of type int32"),
        ("7", {"stars": 40_000, "weight": 1.0}, "field 'stars' is 40000.*int16"),
        ("7", {"stars": 1, "weight": 1e300}, "field 'weight' is 1e\\+300.*float"),
    ],
)
def test_narrow_columns_refuse_values_they_cannot_hold(url, tmp_path, record_id, metadata, message):
    narrow_table(tmp_path)
    store = open_store(url, NARROW)
    good = Record("5", np.ones(8, np.float32), {"stars": 2, "weight": 0.25})
    with pytest.raises(ValidationError, match=f"record 1 \\(id '{record_id}'\\): .*{message}"):
        store.upsert([good, Record(record_id, np.ones(8, np.float32), metadata)])
    assert store.count() == 3
    assert store.get(["5", "3000000000"]) == []
    store.delete(["3000000000"])  # no row can have it: nothing to do, and no error
    store.upsert([good])
    assert store.get(["5", "0"]) == [good, Record("0", np.ones(8, np.float32), {"stars": 0, "weight": 0.5})]


def test_non_nullable_columns(url, tmp_path):
    schema = pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), 8)),
            pa.field("title", pa.string(), nullable=False),
            pa.field("owner", pa.string(), nullable=False),
        ]
    )
    row = {"id": "a", "vector": [1.0] * 8, "title": "t", "owner": "me"}
    lancedb.connect(tmp_path / "lance").create_table("notes", data=pa.Table.from_pylist([row], schema))
    spec = CollectionSpec(
        name="notes", dim=8, model="m", fields={"title": {"type": "str", "filterable": False}}
    )
    # `owner` cannot be null and dualvec would not fill it: Lance would refuse every write.
    with pytest.raises(ConfigError, match=r"column\(s\) \['owner'\] cannot be null.*declare each as a field"):
        open_store(url, spec)
    spec = spec.model_copy(
        update={"fields": {**spec.fields, "owner": FieldSpec(type="str", filterable=False)}}
    )
    store = open_store(url, spec)
    vector = np.full(8, 2.0, np.float32)
    with pytest.raises(ValidationError, match="record 1 \\(id 'c'\\): metadata field 'owner' has no value"):
        store.upsert([Record("b", vector, {"title": "b", "owner": "x"}), Record("c", vector, {"title": "c"})])
    assert store.count() == 1
    store.upsert([Record("b", vector, {"title": "b", "owner": "x"})])
    assert store.get(["b"]) == [Record("b", vector, {"title": "b", "owner": "x"})]


def test_rows_without_an_id_are_refused_at_open(url, tmp_path):
    rows, _ = existing_table(tmp_path, n=3)
    lancedb.connect(tmp_path / "lance").open_table("legacy").add([{**rows[0], "doc_id": None}])
    with pytest.raises(ConfigError, match="1 row\\(s\\) have no id \\(column 'doc_id' is null\\)"):
        open_store(url, WRAPPED)
    assert lancedb.connect(tmp_path / "lance").open_table("legacy").schema.field("doc_id").nullable
