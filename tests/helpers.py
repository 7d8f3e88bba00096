"""Test helpers: a comparison of what two stores hold (and the real lock fault, re-exported)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from dualvec.distance import same_vector
from dualvec.testing.faults import sqlite_locked

__all__ = ["assert_same_contents", "contents", "docs", "migrate_through_cli", "sqlite_locked", "write_config"]


def docs(output: str) -> dict:
    """The `docs` collection's entry in a command's `--json` report."""
    return json.loads(output)["collections"]["docs"]


def contents(store) -> dict[str, tuple[np.ndarray, dict]]:
    """Every record of a store: its vector and its metadata."""
    return {
        r.id: (np.asarray(r.vector, dtype=np.float32), r.metadata) for batch in store.scan(500) for r in batch
    }


def assert_same_contents(a, b) -> None:
    """Both stores hold the same ids, metadata and vectors (in cosine collections, directions)."""
    left, right = contents(a), contents(b)
    assert left.keys() == right.keys(), (
        f"only in first: {sorted(left.keys() - right.keys())[:5]}, "
        f"only in second: {sorted(right.keys() - left.keys())[:5]}"
    )
    differing = [
        i
        for i in left
        if left[i][1] != right[i][1] or not same_vector(left[i][0], right[i][0], a.spec.metric, 1e-5)
    ]
    assert not differing, f"{len(differing)} records differ, e.g. {differing[:5]}"


CONFIG = """
legacy_url = "{legacy_url}"
target_url = "{target_url}"
collection = "docs"
phase = "{phase}"
flag_file = "{data}/flags.json"
outbox_path = "{data}/outbox.db"
replay_interval_seconds = 3600

[collections.docs]
dim = {dim}
metric = "cosine"
model = "test-embedder"

[collections.docs.fields]
lang = {{ type = "str" }}
year = {{ type = "int" }}
score = {{ type = "float" }}
public = {{ type = "bool" }}
title = {{ type = "str", filterable = false }}
"""


def write_config(
    tmp_path: Path, monkeypatch, legacy_url: str, target_url: str | None = None, phase: str = "legacy"
) -> Path:
    """A TOML config for the CLI (and `load_settings`) naming these stores; state in tmp_path/.dualvec."""
    path = tmp_path / "dualvec.toml"
    path.write_text(
        CONFIG.format(
            legacy_url=legacy_url,
            target_url=target_url or f"sqlite-vec://{tmp_path}/target.db",
            data=tmp_path / ".dualvec",
            dim=8,
            phase=phase,
        )
    )
    monkeypatch.setenv("DUALVEC_CONFIG", str(path))
    return tmp_path / ".dualvec"


LAYOUT_CONFIG = """
legacy_url = "{legacy_url}"
target_url = "sqlite-vec://{data}/target.db"
collection = "{name}"
flag_file = "{data}/flags.json"
outbox_path = "{data}/outbox.db"
replay_interval_seconds = 3600

[collections.{name}]
{collection}
"""


def migrate_through_cli(tmp_path: Path, monkeypatch, legacy_url: str, name: str, collection: str) -> dict:
    """Run a whole migration of an application's own store from the command line, as a user
    would: config naming the layout (`collection` is the body of its TOML table), `flags set
    phase=dual`, `backfill`, then `verify`. Returns verify's JSON report (clean asserted)."""
    from dualvec.cli.main import cli

    data = tmp_path / ".dualvec"
    path = tmp_path / "dualvec.toml"
    path.write_text(LAYOUT_CONFIG.format(legacy_url=legacy_url, data=data, name=name, collection=collection))
    monkeypatch.setenv("DUALVEC_CONFIG", str(path))
    runner = CliRunner()
    for command in (
        ["flags", "set", "--force", "phase=dual"],
        ["backfill", "--silent", "--json"],
        ["verify", "--silent", "--json"],
    ):
        result = runner.invoke(cli, command)
        assert result.exit_code == 0, (command, result.output)
    report = json.loads(result.stdout)
    assert report["clean"], report
    return report
