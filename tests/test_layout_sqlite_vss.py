"""A RAG app's sqlite-vss database, laid out as sqlite-vss documents it, wrapped in place.

The app keeps a content table whose INTEGER PRIMARY KEY is the scene id, and a vss0 index whose
rowid is that id. The database is built with the app's own SQL (sqlite-vss loaded into a DB-API
connection that can load extensions), never through dualvec.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require
from helpers import migrate_through_cli

from dualvec import Record, open_store
from dualvec.errors import ConfigError, ValidationError
from dualvec.spec import CollectionSpec, Metric
from dualvec.sqlite_driver import connect
from dualvec.stores.sqlite_vss_loader import vss_load_problem
from dualvec.testing.conformance import assert_reads_match

DIM = 8
N = 90
SPEAKERS = ("ann", "bo", None)
FILTERS = [
    ({"script_id": 2}, lambda m: m["script_id"] == 2),
    ({"speaker": {"$ne": "ann"}}, lambda m: "speaker" in m and m["speaker"] != "ann"),
    (
        {"speaker": {"$nin": ["bo"]}, "script_id": {"$gte": 1}},
        lambda m: m.get("speaker") == "ann" and m["script_id"] >= 1,
    ),
    ({"speaker": {"$in": ["ann", "bo"]}}, lambda m: "speaker" in m),
]


def spec(metric: Metric) -> CollectionSpec:
    return CollectionSpec(
        name="scenes",
        dim=DIM,
        metric=metric,
        model="test-embedder",
        id_type="int",
        fields={
            "script_id": "int",
            "speaker": {"type": "str", "optional": True},
            "content": {"type": "str", "filterable": False},
        },
    )


def toml(metric: Metric) -> str:
    return f"""dim = {DIM}
metric = "{metric}"
model = "test-embedder"
id_type = "int"

[collections.scenes.fields]
script_id = "int"
speaker = {{ type = "str", optional = true }}
content = {{ type = "str", filterable = false }}
"""


def app_connection(path):
    """What the app opens: a DB-API connection with sqlite-vss loaded, as its docs show."""
    require(vss_load_problem() is None, "libblas3")
    import sqlite_vss

    conn = connect(path, vec=False)
    conn.enable_load_extension(True)
    sqlite_vss.load(conn)
    conn.enable_load_extension(False)
    return conn


def build_app_db(path, metric: Metric, table: str = "scenes") -> list[Record]:
    conn = app_connection(path)
    conn.execute(
        f'CREATE TABLE "{table}" '
        "(id INTEGER PRIMARY KEY, script_id INTEGER NOT NULL, content TEXT, speaker TEXT)"
    )
    conn.execute(f"CREATE VIRTUAL TABLE vss_scenes USING vss0(content_embedding({DIM}))")
    vectors = np.random.default_rng(8).standard_normal((N, DIM)).astype(np.float32)
    if metric == "cosine":
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    expected = []
    conn.execute("BEGIN")
    for i in range(N):
        scene_id, speaker = 100 + 7 * i, SPEAKERS[i % 3]
        conn.execute(
            f'INSERT INTO "{table}" (id, script_id, content, speaker) VALUES (?, ?, ?, ?)',
            (scene_id, i % 4, f"scene {i}", speaker),
        )
        conn.execute(
            "INSERT INTO vss_scenes (rowid, content_embedding) VALUES (?, ?)",
            (scene_id, vectors[i].tobytes()),
        )
        metadata = {"script_id": i % 4, "content": f"scene {i}"} | ({"speaker": speaker} if speaker else {})
        expected.append(Record(str(scene_id), vectors[i], metadata))
    conn.execute("COMMIT")
    conn.close()
    return expected


def app_search(path, vector: np.ndarray, k: int) -> list[int]:
    """The app's own query: vss_search on its index."""
    conn = app_connection(path)
    try:
        rows = conn.execute(
            "SELECT rowid FROM vss_scenes WHERE vss_search(content_embedding, ?) LIMIT ?",
            (vector.tobytes(), k),
        ).fetchall()
    finally:
        conn.close()
    return [r[0] for r in rows]


def app_state(path, table: str = "scenes") -> tuple[list[tuple], list[str]]:
    conn = app_connection(path)
    try:
        rows = conn.execute(f'SELECT * FROM "{table}" ORDER BY id').fetchall()
        names = sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
    finally:
        conn.close()
    return rows, names


@pytest.mark.parametrize(
    ("metric", "table"), [("l2", "scenes"), ("cosine", "script scenes")], ids=["l2", "cosine-named-table"]
)
def test_app_layout_migrates_end_to_end(tmp_path, monkeypatch, metric, table):
    path = tmp_path / "rag.db"
    expected = build_app_db(path, metric, table)
    url = f"sqlite-vss://{path}?vss_table=vss_scenes" + (
        "" if table == "scenes" else "&table=script%20scenes"
    )
    rows_before, tables_before = app_state(path, table)

    store = open_store(url, spec(metric))
    try:
        assert_reads_match(store, expected, FILTERS)
    finally:
        store.close()

    migrate_through_cli(tmp_path, monkeypatch, url, "scenes", toml(metric))
    assert app_state(path, table) == (rows_before, sorted([*tables_before, "dualvec_collections"]))
    target = open_store(f"sqlite-vec://{tmp_path}/.dualvec/target.db", spec(metric))
    try:
        assert_reads_match(target, expected, FILTERS)
    finally:
        target.close()

    # What dualvec writes, the app's own vss_search finds, with its content row beside it.
    new = np.full(DIM, 0.5, np.float32)
    with open_store(url, spec(metric)) as store:
        store.upsert([Record("5000", new, {"script_id": 9, "content": "added"})])
        store.upsert([Record(expected[0].id, new * -1, {"script_id": 8, "content": "moved"})])
        with pytest.raises(ValidationError, match="id 'scene-1'"):
            store.upsert([Record("scene-1", new, {"script_id": 9})])
    assert app_search(path, new, 1) == [5000]
    assert app_search(path, new * -1, 1) == [int(expected[0].id)]
    rows, _ = app_state(path, table)
    assert (5000, 9, "added", None) in rows
    assert (int(expected[0].id), 8, "moved", None) in rows
    assert len(rows) == N + 1


def test_unwrapped_app_database_is_refused_not_crashed(tmp_path):
    """The reported failure: opening the app's database without naming its index created an
    empty index beside the content table, and the first search aborted the process."""
    path = tmp_path / "rag.db"
    build_app_db(path, "l2")
    _, tables_before = app_state(path)
    with pytest.raises(ConfigError, match=r"vss_table=NAME \(vss0 tables here: \['vss_scenes'\]\)"):
        open_store(f"sqlite-vss://{path}", spec("l2"))
    assert app_state(path)[1] == tables_before


def test_content_without_indexed_vectors_answers_empty(tmp_path):
    path = tmp_path / "rag.db"
    conn = app_connection(path)
    conn.execute(
        "CREATE TABLE scenes (id INTEGER PRIMARY KEY, script_id INTEGER, content TEXT, speaker TEXT)"
    )
    conn.execute(f"CREATE VIRTUAL TABLE vss_scenes USING vss0(content_embedding({DIM}))")
    conn.execute("INSERT INTO scenes VALUES (1, 1, 'not indexed yet', NULL)")
    conn.commit()
    conn.close()
    with open_store(f"sqlite-vss://{path}?vss_table=vss_scenes", spec("l2")) as store:
        assert store.search(np.ones(DIM, np.float32), k=3) == []
        assert store.count() == 0
        assert list(store.scan()) == []


@pytest.mark.parametrize(
    ("index", "content", "metric", "id_type", "message"),
    [
        (f"vss0(content_embedding({DIM + 1}))", "id INTEGER PRIMARY KEY", "l2", "int", "9-dimensional"),
        (
            f'vss0(content_embedding({DIM}) factory="IVF4,Flat,IDMap2")',
            "id INTEGER PRIMARY KEY",
            "l2",
            "int",
            "IVF4",
        ),
        (f"vss0(content_embedding({DIM}))", "id INTEGER PRIMARY KEY", "cosine", "int", "norm"),
        (f"vss0(content_embedding({DIM}))", "id INTEGER PRIMARY KEY", "l2", "str", "set id_type = 'int'"),
        (
            f"vss0(content_embedding({DIM}))",
            "id INTEGER NOT NULL UNIQUE",
            "l2",
            "int",
            "must be its INTEGER PRIMARY KEY",
        ),
        (f"vss0(a({DIM}), b({DIM}))", "id INTEGER PRIMARY KEY", "l2", "int", r"columns \['a', 'b'\]"),
    ],
)
def test_layouts_that_do_not_fit_are_refused_at_open(tmp_path, index, content, metric, id_type, message):
    path = tmp_path / "rag.db"
    conn = app_connection(path)
    conn.execute(f"CREATE TABLE scenes ({content}, script_id INTEGER, content TEXT, speaker TEXT)")
    conn.execute(f"CREATE VIRTUAL TABLE vss_scenes USING {index}")
    if metric == "cosine":
        conn.execute("INSERT INTO scenes VALUES (1, 1, 'x', NULL)")
        conn.execute(
            "INSERT INTO vss_scenes (rowid, content_embedding) VALUES (1, ?)",
            (np.full(DIM, 3, np.float32).tobytes(),),
        )
    conn.commit()
    conn.close()
    with pytest.raises(ConfigError, match=message):
        open_store(
            f"sqlite-vss://{path}?vss_table=vss_scenes", spec(metric).model_copy(update={"id_type": id_type})
        )
    assert "dualvec_collections" not in app_state(path)[1]


def test_a_missing_index_is_named(tmp_path):
    path = tmp_path / "rag.db"
    build_app_db(path, "l2")
    with pytest.raises(ConfigError, match=r"no vss0 table of that name .* \['vss_scenes'\]"):
        open_store(f"sqlite-vss://{path}?vss_table=vss_nope", spec("l2"))
