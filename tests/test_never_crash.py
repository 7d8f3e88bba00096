"""Nothing a user points dualvec at may take the process down: each backend, opened on things
that are not its store, refuses with a DualvecError, in a real child process whose exit status
would show an abort (a native assertion, as sqlite-vss's Faiss raises) as a signal."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest
from conftest import require

from dualvec.stores.sqlite_vss_loader import vss_load_problem

CHILD = """
import json, sys
import numpy as np
from dualvec import open_store
from dualvec.errors import DualvecError
from dualvec.spec import CollectionSpec

spec = CollectionSpec(name="docs", dim=8, metric="l2", model="m", fields={"lang": "str"})
outcomes = {}
for url in json.loads(sys.argv[1]):
    try:
        with open_store(url, spec) as store:
            store.search(np.ones(8, np.float32), k=3)
            store.upsert([])
            outcomes[url] = "opened"
    except DualvecError as exc:
        outcomes[url] = type(exc).__name__
print(json.dumps(outcomes))
"""


def hostile_places(tmp_path) -> dict[str, str]:
    """Paths that are not a store of the backend that will be pointed at them."""
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 100)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "docs").write_text("a file where a table's folder would be")
    app = tmp_path / "app.db"
    conn = sqlite3.connect(app)
    conn.execute("CREATE TABLE docs (id TEXT PRIMARY KEY, body TEXT)")
    conn.execute("CREATE TABLE vss_docs (rowid INTEGER PRIMARY KEY, embedding BLOB)")
    conn.commit()
    conn.close()
    return {"text": str(text), "folder": str(folder), "app": str(app)}


@pytest.mark.parametrize("scheme", ["sqlite-vec", "sqlite-blob", "sqlite-vss", "lancedb", "qdrant-local"])
def test_hostile_paths_are_refused_not_crashed(tmp_path, scheme):
    if scheme == "sqlite-vss":
        require(vss_load_problem() is None, "libblas3")
    places = hostile_places(tmp_path)
    urls = [f"{scheme}://{path}" for path in places.values()]
    if scheme == "sqlite-vss":
        urls += [
            f"{scheme}://{places['app']}?vss_table=vss_docs",
            f"{scheme}://{places['app']}?vss_table=docs",
        ]
    child = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(urls)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    outcomes = json.loads(child.stdout)
    # A folder holding unrelated files is a valid (empty) LanceDB or Qdrant location: those may
    # open. Every other outcome is a refusal by name, never a crash or a foreign exception.
    may_open = {f"{scheme}://{places['folder']}"} if scheme in ("lancedb", "qdrant-local") else set()
    for url, outcome in outcomes.items():
        assert outcome in (
            {"opened", "ConfigError", "StoreError"} if url in may_open else {"ConfigError", "StoreError"}
        ), (
            url,
            outcome,
        )
