"""A LanceDB table as an application makes it with LanceDB's own client, wrapped and migrated.

The app (as in LanceDB's quickstart) calls `db.create_table("Files-v2", data=[{...}, ...])`
with its own column names, an int64 id column, some null metadata and columns of its own that
dualvec is not told about. Every expected value below comes from that app data, never from
dualvec.
"""

from __future__ import annotations

import lancedb
import numpy as np
import pytest
from helpers import migrate_through_cli

from dualvec import CollectionSpec, ConfigError, FieldSpec, Record, ValidationError, open_store
from dualvec.distance import same_vector
from dualvec.testing.conformance import assert_reads_match

DIM = 12
TABLE = "Files-v2"  # not a valid collection name: reached only through ?table=
LANGS = ["go", "py", "rs", None, "go", "py"]
BIG_ID = 2**53 + 1  # beyond float64's exact integers: must survive as an integer end to end


def app_rows(n: int = 40) -> list[dict]:
    """What the application inserts: its own names, nulls where it has no value, and two
    columns (`owner`, `sha`) that are the app's business only."""
    vectors = np.random.default_rng(21).standard_normal((n, DIM)).astype(np.float32)
    return [
        {
            "file_id": BIG_ID if i == n - 1 else 1000 + 7 * i,
            "embedding": vectors[i].tolist(),
            "path": f"src/pkg{i % 4}/file_{i}.x",
            "lang": LANGS[i % len(LANGS)],
            "lines": None if i % 5 == 2 else 10 * (i % 9) + 3,
            "kb": None if i % 7 == 3 else round(0.25 * (i % 13), 2),
            "generated": None if i % 4 == 1 else i % 3 == 0,
            "owner": f"team-{i % 3}",
            "sha": f"{i:08x}",
        }
        for i in range(n)
    ]


def make_app_table(folder, index: str | None = None) -> list[dict]:
    rows = app_rows()
    table = lancedb.connect(folder).create_table(TABLE, data=rows)
    if index == "btree":
        from lancedb.index import BTree

        for column in ("lang", "lines", "generated"):
            table.create_index(column, config=BTree())
    elif index == "bitmap":
        from lancedb.index import Bitmap

        for column in ("lang", "lines", "generated"):
            table.create_index(column, config=Bitmap())
    return rows


# The collection as dualvec sees it: its own field names, mapped to the app's columns.
FIELDS = {
    "language": FieldSpec(type="str", source="lang", optional=True),
    "lines": FieldSpec(type="int", optional=True),
    "kb": FieldSpec(type="float", optional=True),
    "generated": FieldSpec(type="bool", optional=True),
    "path": FieldSpec(type="str", filterable=False),
}
TARGET = CollectionSpec(
    name="files", dim=DIM, metric="cosine", model="app-embedder", id_type="int", fields=FIELDS
)
LEGACY = TARGET.model_copy(update={"id_source": "file_id", "vector_source": "embedding"})
# The same names in the collection's TOML table: the legacy store's own names under `legacy`,
# so the target gets dualvec's plain ones.
COLLECTION_TOML = f"""
dim = {DIM}
metric = "cosine"
model = "app-embedder"
id_type = "int"
fields = {{ language = {{ type = "str", optional = true }}, lines = {{ type = "int", optional = true }}, \
kb = {{ type = "float", optional = true }}, generated = {{ type = "bool", optional = true }}, \
path = {{ type = "str", filterable = false }} }}
legacy = {{ id_source = "file_id", vector_source = "embedding", fields = {{ language = "lang" }} }}
"""
TARGET_PLAIN = TARGET.model_copy(
    update={"fields": {name: field.model_copy(update={"source": None}) for name, field in FIELDS.items()}}
)


def expected_records(rows: list[dict]) -> list[Record]:
    """The records the app's rows hold, by dualvec's field names; a null is a missing value."""
    columns = {"language": "lang", "lines": "lines", "kb": "kb", "generated": "generated", "path": "path"}
    return [
        Record(
            str(row["file_id"]),
            np.asarray(row["embedding"], dtype=np.float32),
            {name: row[column] for name, column in columns.items() if row[column] is not None},
        )
        for row in rows
    ]


def has(m: dict, field: str) -> bool:
    return field in m


# Filters on optional fields, with what each must select: a missing value matches nothing,
# negations ($ne, $nin) included.
FILTERS = [
    ({"language": "go"}, lambda m: m.get("language") == "go"),
    ({"language": {"$ne": "go"}}, lambda m: has(m, "language") and m["language"] != "go"),
    (
        {"language": {"$nin": ["go", "py"]}},
        lambda m: has(m, "language") and m["language"] not in ("go", "py"),
    ),
    ({"language": {"$in": ["rs", "py"]}}, lambda m: m.get("language") in ("rs", "py")),
    ({"lines": {"$gte": 50}}, lambda m: has(m, "lines") and m["lines"] >= 50),
    ({"lines": {"$lt": 50}}, lambda m: has(m, "lines") and m["lines"] < 50),
    ({"lines": {"$ne": 13}}, lambda m: has(m, "lines") and m["lines"] != 13),
    ({"lines": {"$nin": [3, 13, 23]}}, lambda m: has(m, "lines") and m["lines"] not in (3, 13, 23)),
    ({"kb": {"$gt": 0.5, "$lte": 2.0}}, lambda m: has(m, "kb") and 0.5 < m["kb"] <= 2.0),
    ({"generated": {"$ne": True}}, lambda m: m.get("generated") is False),
    ({"generated": {"$nin": [False]}}, lambda m: m.get("generated") is True),
    (
        {"language": {"$ne": "rs"}, "lines": {"$gte": 20}},
        lambda m: has(m, "language") and m["language"] != "rs" and has(m, "lines") and m["lines"] >= 20,
    ),
]


def test_the_app_data_exercises_every_filter():
    records = expected_records(app_rows())
    for where, predicate in FILTERS:
        selected = [r for r in records if predicate(r.metadata)]
        assert 0 < len(selected) < len(records), where
    for field in ("language", "lines", "kb", "generated"):
        assert any(field not in r.metadata for r in records), field


@pytest.mark.parametrize("index", [None, "btree", "bitmap"])
def test_reads_of_the_app_table_match_its_data(tmp_path, index):
    """With or without the scalar indexes an app may build, nulls match no filter."""
    rows = make_app_table(tmp_path / "lance", index)
    store = open_store(f"lancedb://{tmp_path}/lance?table={TABLE}", LEGACY)
    assert_reads_match(store, expected_records(rows), FILTERS)
    (big,) = store.get([str(BIG_ID)])
    assert big.id == "9007199254740993"
    assert big.metadata == expected_records(rows)[-1].metadata


def tables(folder) -> list[str]:
    return lancedb.connect(folder).list_tables().tables


def app_view(folder) -> tuple[list[dict], dict[int, list[int]], dict[int, dict]]:
    """What the application itself reads: every row, its own vector search (LanceDB's default
    l2) for a few queries, and its own id lookups."""
    table = lancedb.connect(folder).open_table(TABLE)
    every = sorted(table.to_arrow().to_pylist(), key=lambda row: row["file_id"])
    queries = np.random.default_rng(8).standard_normal((3, DIM)).astype(np.float32)
    searches = {
        q: [row["file_id"] for row in table.search(query).limit(5).to_list()]
        for q, query in enumerate(queries)
    }
    lookups = {
        file_id: table.search().where(f"file_id = {file_id}").to_list()[0] for file_id in (1000, 1007, BIG_ID)
    }
    return every, searches, lookups


def test_migration_through_the_cli_keeps_every_record_and_the_app_working(tmp_path, monkeypatch):
    folder = tmp_path / "lance"
    rows = make_app_table(folder)
    before = app_view(folder)

    report = migrate_through_cli(
        tmp_path, monkeypatch, f"lancedb://{folder}?table={TABLE}", "files", COLLECTION_TOML
    )
    assert report["clean"]

    target = open_store(f"sqlite-vec://{tmp_path}/.dualvec/target.db", TARGET_PLAIN)
    want = {r.id: r for r in expected_records(rows)}
    got = {r.id: r for batch in target.scan(100) for r in batch}
    assert got.keys() == want.keys()
    for record_id, record in want.items():
        assert got[record_id].metadata == record.metadata, record_id
        assert same_vector(got[record_id].vector, record.vector, "cosine"), record_id
    assert_reads_match(target, list(want.values()), FILTERS)
    target.close()

    # The app's own read path gives what it gave before: same rows (its own columns too), same
    # search results, same lookups by its integer ids; and it can still write as it did.
    after = app_view(folder)
    assert after == before
    assert len(after[0]) == len(rows)
    assert {"owner", "sha"} <= set(after[0][0])
    table = lancedb.connect(folder).open_table(TABLE)
    table.add([{**rows[0], "file_id": 5, "owner": "app"}])
    assert table.count_rows() == len(rows) + 1
    assert table.search().where("file_id = 5").to_list()[0]["owner"] == "app"
    assert tables(folder) == [TABLE]


def test_writes_through_dualvec_land_as_the_app_reads_them(tmp_path):
    folder = tmp_path / "lance"
    rows = make_app_table(folder)
    store = open_store(f"lancedb://{folder}?table={TABLE}", LEGACY)
    vector = np.linspace(-1, 1, DIM, dtype=np.float32)
    store.upsert(
        [
            Record("1007", vector, {"language": "zig", "path": "a.zig"}),  # replaces, leaves gaps
            Record("77", vector * 2, {"lines": 1, "generated": False, "path": "b"}),
        ]
    )
    store.delete(["1014"])
    theirs = {row["file_id"]: row for row in lancedb.connect(folder).open_table(TABLE).to_arrow().to_pylist()}
    assert len(theirs) == len(rows)  # one added, one deleted
    assert 1014 not in theirs
    assert theirs[1007]["lang"] == "zig"
    assert theirs[1007]["lines"] is None and theirs[1007]["kb"] is None
    assert theirs[1007]["owner"] == rows[1]["owner"]  # the app's own column, untouched
    assert theirs[77]["lang"] is None
    assert theirs[77]["owner"] is None
    assert theirs[77]["embedding"] == pytest.approx((vector * 2).tolist())
    hits = store.search(vector, k=2, filter={"language": {"$ne": "go"}})
    assert hits[0].id == "1007"
    assert "77" not in {h.id for h in store.search(vector, k=40, filter={"language": {"$nin": ["go"]}})}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (LEGACY.model_copy(update={"id_type": "str"}), "'file_id' is int64.*set id_type = \"int\""),
        (
            CollectionSpec.model_validate({**LEGACY.model_dump(), "dim": 16}),
            r"'embedding' is fixed_size_list<item: float>\[12\], the spec needs fixed_size_list<float>\[16\]",
        ),
        (
            LEGACY.model_copy(update={"fields": {**FIELDS, "stars": FieldSpec(type="int", optional=True)}}),
            "no column 'stars'",
        ),
        (
            LEGACY.model_copy(update={"fields": {**FIELDS, "lines": FieldSpec(type="str", optional=True)}}),
            "column 'lines' is int64, the spec needs str",
        ),
        (
            LEGACY.model_copy(
                update={"fields": {**FIELDS, "language": FieldSpec(type="str", source="lang")}}
            ),
            "column 'lang' is null in 7 row.*declare it optional = true",
        ),
    ],
    ids=["int ids as str", "dimension", "missing column", "field type", "nulls in a required field"],
)
def test_layouts_that_do_not_fit_are_refused_and_left_alone(tmp_path, spec, message):
    folder = tmp_path / "lance"
    make_app_table(folder)
    before = lancedb.connect(folder).open_table(TABLE)
    schema, version = before.schema, before.version
    with pytest.raises(ConfigError, match=message):
        open_store(f"lancedb://{folder}?table={TABLE}", spec)
    after = lancedb.connect(folder).open_table(TABLE)
    assert after.schema == schema
    assert after.schema.field("file_id").metadata is None
    assert after.version == version
    assert tables(folder) == [TABLE]
    assert open_store(f"lancedb://{folder}?table={TABLE}", LEGACY).count() == len(app_rows())


def test_an_id_that_is_not_an_integer_writes_nothing(tmp_path):
    folder = tmp_path / "lance"
    rows = make_app_table(folder)
    store = open_store(f"lancedb://{folder}?table={TABLE}", LEGACY)
    vector = np.ones(DIM, np.float32)
    with pytest.raises(ValidationError, match=r"id 'readme\.md'"):
        store.upsert([Record("12", vector, {"path": "a"}), Record("readme.md", vector, {"path": "b"})])
    assert store.count() == len(rows)
    assert store.get(["12"]) == []
    with pytest.raises(ValidationError, match="id 'x'"):
        store.get(["x"])
    with pytest.raises(ValidationError, match="id '1e3'"):
        store.delete(["1e3"])
    assert lancedb.connect(folder).open_table(TABLE).count_rows() == len(rows)
