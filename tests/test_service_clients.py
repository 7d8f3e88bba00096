"""Applications that are not Python, driving a real `dualvec serve` process over HTTP.

- A Node program (built-in `fetch` only), as a TypeScript service with six LanceDB tables in one
  folder would: every collection is moved to one sqlite-vec file through a ramp the test drives
  from the CLI between the program's rounds of writes and reads.
- A Go program (standard library only), as a Go service with float32 BLOBs in an `INTEGER
  PRIMARY KEY` table of its own SQLite file would: upsert with `vector_b64`, search, delete,
  export with the cursor, count.

Each program checks what it can know alone and prints JSON; the test checks the rest against
the library: distances, both stores' contents, counts.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import require
from helpers import contents
from service_process import call, start_service

from dualvec import load_settings, open_store
from dualvec.cli.main import cli
from dualvec.distance import distances, top_k

pytestmark = pytest.mark.slow

CLIENTS = Path(__file__).parent / "clients"
TOKEN = "client-tests-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DIMS = {"files": 8, "code_nodes": 12, "commits": 16, "directories": 8, "test_nodes": 12, "pull_requests": 16}

NODE_CONFIG = """
phase = "legacy"
flag_file = "{data}/flags.json"
outbox_path = "{data}/outbox.db"
flag_poll_seconds = 0.1
replay_interval_seconds = 0.5
"""
NODE_COLLECTION = """
[collections.{name}]
dim = {dim}
model = "m"
metric = "l2"
fields = {{ lang = "str", round = "int" }}
legacy_url = "lancedb://{data}/lance"
target_url = "sqlite-vec://{data}/target.db"
"""

GO_TABLE = "chunks"
GO_CONFIG = """
phase = "dual"
flag_file = "{data}/flags.json"
outbox_path = "{data}/outbox.db"
replay_interval_seconds = 3600

[collections.chunks]
dim = 8
model = "m"
metric = "l2"
id_type = "int"
legacy_url = "sqlite-blob://{data}/app.db?table={table}"
target_url = "sqlite-vec://{data}/target.db"
legacy = {{ vector_source = "embedding" }}
fields = {{ lang = {{ type = "str", optional = true }} }}
"""


def env_for(config: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUALVEC_")}
    return {**env, "DUALVEC_CONFIG": str(config), **extra}


def run_cli(*args: str) -> str:
    """A `dualvec` command as the operator types it, reading the same config as the service."""
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, (args, result.output)
    return result.stdout


def run_client(command: list[str], env: dict[str, str] | None = None) -> dict:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done.returncode == 0, f"{command[:3]} exited {done.returncode}:\n{done.stderr}\n{done.stdout}"
    return json.loads(done.stdout)


def expected_hits(held: dict[str, tuple[np.ndarray, dict]], search: dict) -> list[tuple[str, float]]:
    """What the library computes for a search: exact L2 over the records held, filter applied."""
    ids = [i for i, (_, meta) in held.items() if all(meta.get(k) == v for k, v in search["filter"].items())]
    matrix = np.stack([held[i][0] for i in ids]).astype(np.float32)
    dist = distances(matrix, np.asarray(search["vector"], np.float32), "l2")
    return [(ids[j], float(dist[j])) for j in top_k(dist, search["k"])]


def assert_hits(hits: list[dict], held: dict[str, tuple[np.ndarray, dict]], search: dict) -> None:
    expected = expected_hits(held, search)
    assert [h["id"] for h in hits] == [i for i, _ in expected]
    assert [h["distance"] for h in hits] == pytest.approx([d for _, d in expected], rel=1e-5, abs=1e-6)
    assert all(h["metadata"] == held[h["id"]][1] for h in hits)


def wait_for_flags(url: str, **flags: object) -> None:
    """Until the service's routers all follow the flag file (it promises within a second)."""
    deadline = time.monotonic() + 5
    while True:
        status = call("GET", f"{url}/admin/status", headers=AUTH).json()["collections"]
        if all(all(s[k] == v for k, v in flags.items()) for s in status.values()):
            return
        assert time.monotonic() < deadline, status
        time.sleep(0.05)


def test_a_node_app_with_six_lancedb_tables_moves_to_one_sqlite_vec_file(tmp_path, monkeypatch):
    require(shutil.which("node") is not None, "nodejs")
    config = tmp_path / "dualvec.toml"
    config.write_text(
        NODE_CONFIG.format(data=tmp_path)
        + "".join(NODE_COLLECTION.format(name=n, dim=d, data=tmp_path) for n, d in DIMS.items())
    )
    monkeypatch.setenv("DUALVEC_CONFIG", str(config))
    held: dict[str, dict[str, tuple[np.ndarray, dict]]] = {name: {} for name in DIMS}
    service = start_service(tmp_path, env_for(config, DUALVEC_ADMIN_TOKEN=TOKEN))

    def app_round(number: int) -> None:
        out = run_client(["node", str(CLIENTS / "node" / "app.mjs"), service.url, str(number)])
        for name, result in out["collections"].items():
            for record in result["written"]:
                held[name][record["id"]] = (np.asarray(record["vector"], np.float32), record["metadata"])
            for gone in result["deleted"]:
                del held[name][gone]
            assert result["count"] == len(held[name]), (number, name)
            assert_hits(result["search"]["hits"], held[name], result["search"])

    def flags(*pairs: str) -> None:
        for name in DIMS:
            run_cli("flags", "set", "--collection", name, *pairs)

    try:
        app_round(0)  # before the migration: the LanceDB tables alone
        flags("phase=dual", "shadow_percent=100")
        wait_for_flags(service.url, phase="dual", shadow_percent=100)
        app_round(1)
        for name in DIMS:
            run_cli("backfill", "--collection", name, "--silent")
            run_cli("verify", "--collection", name, "--silent")
        app_round(2)
        for percent in (10, 100):
            flags(f"read_percent={percent}")
            wait_for_flags(service.url, read_percent=percent)
            app_round(2 + percent // 10)
        flags("phase=target-primary")
        wait_for_flags(service.url, phase="target-primary")
        app_round(20)
        status = call("GET", f"{service.url}/admin/status", headers=AUTH).json()["collections"]
        for name, s in status.items():
            assert (s["legacy"]["count"], s["target"]["count"], s["outbox"]["depth"]) == (
                len(held[name]),
                len(held[name]),
                0,
            ), name
    finally:
        assert service.stop() == 0
    assert "Traceback" not in service.log.read_text()
    assert sorted(p.name for p in (tmp_path / "lance").iterdir()) == sorted(f"{n}.lance" for n in DIMS)
    settings = load_settings()
    for name in DIMS:  # both stores hold exactly what the app wrote and did not delete
        for url, spec in zip(settings.urls(name), settings.specs(name), strict=True):
            with open_store(url, spec) as store:
                stored = contents(store)
                assert stored.keys() == held[name].keys(), (name, url)
                for record_id, (vector, metadata) in held[name].items():
                    assert stored[record_id][1] == metadata
                    assert np.array_equal(stored[record_id][0], vector), (url, record_id)


def build_app_db(path: Path, dim: int = 8, n: int = 30) -> dict[str, tuple[np.ndarray, dict]]:
    """The Go app's own table, made with sqlite3 as the app made it: INTEGER PRIMARY KEY ids,
    a nullable lang, float32 BLOBs."""
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE {GO_TABLE} (id INTEGER PRIMARY KEY, lang TEXT, embedding BLOB NOT NULL)")
    vectors = np.random.default_rng(3).standard_normal((n, dim)).astype("<f4")
    held = {}
    for i in range(n):
        lang = ("go", "sql", None)[i % 3]
        conn.execute(f"INSERT INTO {GO_TABLE} VALUES (?, ?, ?)", (10 * i + 3, lang, vectors[i].tobytes()))
        held[str(10 * i + 3)] = (vectors[i], {"lang": lang} if lang else {})
    conn.commit()
    conn.close()
    return held


def test_a_go_app_with_float32_blobs_upserts_searches_deletes_and_exports(tmp_path, monkeypatch):
    require(shutil.which("go") is not None, "golang-go")
    held = build_app_db(tmp_path / "app.db")
    config = tmp_path / "dualvec.toml"
    config.write_text(GO_CONFIG.format(data=tmp_path, table=GO_TABLE))
    monkeypatch.setenv("DUALVEC_CONFIG", str(config))
    service = start_service(tmp_path, env_for(config))
    gocache = tmp_path / "go"
    go_env = {
        **os.environ,
        "GOCACHE": str(gocache / "cache"),
        "GOPATH": str(gocache / "path"),
        "GOFLAGS": "-mod=mod",
        "GOPROXY": "off",
        "GO111MODULE": "on",
        "GOTOOLCHAIN": "local",
    }
    try:
        run_cli("backfill", "--collection", "chunks", "--silent")
        out = run_client(["go", "run", str(CLIENTS / "go" / "main.go"), service.url, "chunks"], go_env)
    finally:
        assert service.stop() == 0
    assert "Traceback" not in service.log.read_text()
    for record in out["written"]:
        held[record["id"]] = (np.asarray(record["vector"], np.float32), record["metadata"])
    assert_hits(out["search"]["hits"], held, out["search"])
    for gone in out["deleted"]:
        del held[gone]
    # The export gave every record exactly once, in id order, over several pages.
    assert out["exported"] == sorted(held) and out["pages"] >= len(held) // 7
    assert out["count"] == len(held)
    settings = load_settings()
    for url, spec in zip(settings.urls("chunks"), settings.specs("chunks"), strict=True):
        with open_store(url, spec) as store:
            assert store.get(out["deleted"]) == [], url
            stored = contents(store)
            assert stored.keys() == held.keys(), url
            assert all(stored[i][1] == m and np.array_equal(stored[i][0], v) for i, (v, m) in held.items())
    # The app's own table: integer ids, and the BLOB the Go program encoded, byte for byte.
    conn = sqlite3.connect(tmp_path / "app.db")
    try:
        rows = dict(conn.execute(f"SELECT id, embedding FROM {GO_TABLE} WHERE typeof(id) = 'integer'"))
    finally:
        conn.close()
    assert sorted(rows) == sorted(int(i) for i in held)
    assert all(rows[int(i)] == held[i][0].astype("<f4").tobytes() for i in held)
