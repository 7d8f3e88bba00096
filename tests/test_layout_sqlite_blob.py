"""A Go service's own SQLite file: float32 BLOBs in a table it made itself, wrapped in place.

The table is built with the stdlib sqlite3 module, as the app would build it (INTEGER PRIMARY
KEY ids, a nullable `lang`, JSON-in-TEXT tags, a NOT NULL column and a defaulted column dualvec
does not manage), never through dualvec.
"""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from helpers import migrate_through_cli

from dualvec import Record, open_store
from dualvec.errors import ConfigError, ValidationError
from dualvec.router import Router
from dualvec.settings import Settings
from dualvec.spec import CollectionSpec
from dualvec.testing.conformance import assert_reads_match

DIM = 8
TABLE = "chunks-v2"  # not a valid collection name: reached through ?table=
LANGS = ("go", "sql", None)

# The collection as sqlite-vec holds it, and as the app's table names it.
TARGET_SPEC = CollectionSpec(
    name="chunks",
    dim=DIM,
    metric="l2",
    model="test-embedder",
    id_type="int",
    fields={
        "path": {"type": "str", "filterable": False},
        "lang": {"type": "str", "optional": True},
        "tokens": "int",
        "tags": {"type": "str", "filterable": False},
    },
)
SPEC = TARGET_SPEC.model_copy(
    update={
        "vector_source": "embedding",
        "fields": {
            **TARGET_SPEC.fields,
            "path": TARGET_SPEC.fields["path"].model_copy(update={"source": "doc_path"}),
        },
    }
)
TOML = f"""dim = {DIM}
metric = "l2"
model = "test-embedder"
id_type = "int"
legacy = {{ vector_source = "embedding", fields = {{ path = "doc_path" }} }}

[collections.chunks.fields]
path = {{ type = "str", filterable = false }}
lang = {{ type = "str", optional = true }}
tokens = "int"
tags = {{ type = "str", filterable = false }}
"""
FILTERS = [
    ({"lang": "go"}, lambda m: m.get("lang") == "go"),
    ({"lang": {"$ne": "go"}}, lambda m: "lang" in m and m["lang"] != "go"),
    ({"lang": {"$nin": ["sql"]}}, lambda m: "lang" in m and m["lang"] != "sql"),
    ({"tokens": {"$gte": 50}}, lambda m: m["tokens"] >= 50),
    ({"lang": {"$in": ["go", "sql"]}, "tokens": {"$lt": 70}}, lambda m: "lang" in m and m["tokens"] < 70),
]


def build_app_db(path, n: int = 120) -> list[Record]:
    """The app's database as the app writes it; returns the records dualvec should see."""
    conn = sqlite3.connect(path)
    conn.execute(
        f'CREATE TABLE "{TABLE}" (id INTEGER PRIMARY KEY, doc_path TEXT NOT NULL, lang TEXT, '
        "tags TEXT, tokens INTEGER NOT NULL, embedding BLOB NOT NULL, "
        "created_at TEXT NOT NULL DEFAULT '2024-01-01')"
    )
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    expected = []
    for i in range(n):
        row_id = 10 * i + 3
        lang = LANGS[i % 3]
        tags = json.dumps(["a", f"t{i % 4}"])
        conn.execute(
            f'INSERT INTO "{TABLE}" (id, doc_path, lang, tags, tokens, embedding) VALUES (?, ?, ?, ?, ?, ?)',
            (row_id, f"src/f{i}.go", lang, tags, i, vectors[i].tobytes()),
        )
        metadata = {"path": f"src/f{i}.go", "tokens": i, "tags": tags} | ({"lang": lang} if lang else {})
        expected.append(Record(str(row_id), vectors[i], metadata))
    conn.commit()
    conn.close()
    return expected


def table_names(path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
    finally:
        conn.close()


def dump(path) -> tuple[list[tuple], list[str]]:
    """Every row of the app's table, and the database's table names."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(f'SELECT * FROM "{TABLE}" ORDER BY id').fetchall()
    finally:
        conn.close()
    return rows, table_names(path)


def app_nearest(path, query: np.ndarray, k: int) -> list[int]:
    """The app's own search: read every BLOB and rank by L2, as a Go service does."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(f'SELECT id, embedding FROM "{TABLE}"').fetchall()
    finally:
        conn.close()
    dist = [(float(np.linalg.norm(np.frombuffer(blob, np.float32) - query)), i) for i, blob in rows]
    return [i for _, i in sorted(dist)[:k]]


@pytest.fixture
def app_db(tmp_path):
    path = tmp_path / "app.db"
    return path, build_app_db(path)


def url(path) -> str:
    return f"sqlite-blob://{path}?table={TABLE}"


def test_reads_match_the_apps_rows(app_db):
    path, expected = app_db
    store = open_store(url(path), SPEC)
    try:
        assert_reads_match(store, expected, FILTERS)
    finally:
        store.close()


def test_whole_migration_through_the_cli_leaves_the_app_untouched(tmp_path, monkeypatch, app_db):
    path, expected = app_db
    rows_before, tables_before = dump(path)
    migrate_through_cli(tmp_path, monkeypatch, url(path), "chunks", TOML)
    rows_after, tables_after = dump(path)
    assert rows_after == rows_before
    assert tables_after == sorted([*tables_before, "dualvec_collections"])
    target = open_store(f"sqlite-vec://{tmp_path}/.dualvec/target.db", TARGET_SPEC)
    try:
        assert_reads_match(target, expected, FILTERS)
    finally:
        target.close()
    query = expected[7].vector
    assert app_nearest(path, query, 5)[0] == 73


def test_writes_through_the_router_keep_the_apps_columns(tmp_path, app_db):
    path, _expected = app_db
    conn = sqlite3.connect(path)
    conn.execute(f"UPDATE \"{TABLE}\" SET created_at = '2020-02-02' WHERE id = 13")
    conn.commit()
    conn.close()
    settings = Settings(phase="dual", flag_file=tmp_path / "flags.json", outbox_path=tmp_path / "outbox.db")
    router = Router.over(
        open_store(url(path), SPEC),
        open_store(f"sqlite-vec://{tmp_path}/target.db", TARGET_SPEC),
        settings,
        start_replayer=False,
    )
    vector = np.ones(DIM, np.float32)
    try:
        router.upsert([Record("13", vector, {"path": "moved.go", "tokens": 1})])
        router.upsert([Record("5000", vector, {"path": "new.go", "tokens": 2, "lang": "go"})])
        with pytest.raises(ValidationError, match="id 'abc'"):
            router.upsert([Record("abc", vector, {"path": "x", "tokens": 3})])
        assert router.stores["target"].count() == 2
    finally:
        router.close()
    conn = sqlite3.connect(path)
    try:
        row = conn.execute(
            f'SELECT doc_path, lang, tokens, created_at FROM "{TABLE}" WHERE id = 13'
        ).fetchone()
        assert row == ("moved.go", None, 1, "2020-02-02")
        new = conn.execute(
            f'SELECT typeof(id), doc_path, created_at FROM "{TABLE}" WHERE id = 5000'
        ).fetchone()
        assert new == ("integer", "new.go", "2024-01-01")
        assert conn.execute(f"SELECT count(*) FROM \"{TABLE}\" WHERE doc_path = 'x'").fetchone()[0] == 0
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("ddl", "spec_update", "message"),
    [
        ("id TEXT PRIMARY KEY, emb BLOB, tokens INTEGER", {}, "id_type is 'int'"),
        ("id INTEGER PRIMARY KEY, emb BLOB, tokens INTEGER", {"id_type": "str"}, "set id_type = 'int'"),
        ("id INTEGER, emb BLOB, tokens INTEGER", {}, "neither the primary key nor unique"),
        ("id INTEGER PRIMARY KEY, emb BLOB", {}, "no column 'tokens'"),
        ("id INTEGER PRIMARY KEY, emb TEXT, tokens INTEGER", {}, "float32 BLOBs"),
        ("id INTEGER PRIMARY KEY, emb BLOB, tokens TEXT", {}, "TEXT affinity"),
    ],
)
def test_layouts_that_do_not_fit_are_refused_at_open(tmp_path, ddl, spec_update, message):
    path = tmp_path / "odd.db"
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE items ({ddl})")
    conn.commit()
    conn.close()
    spec = CollectionSpec(
        name="items", dim=DIM, model="m", id_type="int", vector_source="emb", fields={"tokens": "int"}
    ).model_copy(update=spec_update)
    with pytest.raises(ConfigError, match=message):
        open_store(f"sqlite-blob://{path}", spec)
    assert table_names(path) == ["items"]


def test_a_vector_of_the_wrong_size_is_refused_naming_the_row(tmp_path):
    path = tmp_path / "odd.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, emb BLOB)")
    conn.execute("INSERT INTO items VALUES (1, ?), (2, ?)", (bytes(4 * DIM), bytes(4 * DIM + 4)))
    conn.commit()
    conn.close()
    spec = CollectionSpec(name="items", dim=DIM, model="m", id_type="int", vector_source="emb")
    with pytest.raises(ConfigError, match=r"row 2 holds a blob of 36 bytes"):
        open_store(f"sqlite-blob://{path}", spec)
