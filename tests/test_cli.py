"""The command line as a script sees it: exit codes, JSON on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import docs, sqlite_locked, write_config

from dualvec.cli.main import cli
from dualvec.router import Router
from dualvec.settings import load_settings
from dualvec.testing import make_records


@pytest.fixture
def configured(tmp_path, monkeypatch) -> Path:
    legacy, target = (
        f"sqlite-blob://{tmp_path}/legacy.db",
        f"sqlite-vec://{tmp_path}/target.db?busy_timeout=0.05",
    )
    write_config(tmp_path, monkeypatch, legacy, target, phase="dual")
    return tmp_path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout


def test_doctor_names_the_driver_and_sqlite_vec():
    code, out = run("doctor", "--json")
    report = json.loads(out)
    assert code == 0
    assert report["ok"] is True
    assert report["driver"]
    assert report["sqlite_vec_version"].startswith("v0.1.")
    assert {b["scheme"] for b in report["backends"]} >= {
        "sqlite-vec",
        "lancedb",
        "qdrant-local",
        "sqlite-vss",
    }


def test_doctor_fails_with_advice_when_no_driver_can_load_extensions(tmp_path):
    # A real interpreter where the stdlib cannot load extensions and no other driver is allowed.
    env = {**os.environ, "DUALVEC_SQLITE_DRIVER": "sqlite3"}
    stdlib_can = subprocess.run(
        [sys.executable, "-c", "import sqlite3; print(hasattr(sqlite3.Connection, 'enable_load_extension'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    proc = subprocess.run(
        [sys.executable, "-c", "from dualvec.cli.main import main; main()", "doctor"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    if stdlib_can == "True":
        assert proc.returncode == 0
    else:
        assert proc.returncode == 1
        assert "pip install pysqlite3-binary" in proc.stderr


def test_status_replay_and_their_exit_codes(configured):
    router = Router.from_settings(load_settings(), start_replayer=False)
    try:
        with sqlite_locked(configured / "target.db"):
            router.upsert(make_records(12, 8))
    finally:
        router.close()
    code, out = run("status", "--json")
    status = docs(out)
    assert code == 0
    assert status["phase"] == "dual"
    assert status["legacy"]["count"] == 12
    assert status["target"]["count"] == 0
    assert status["outbox"]["depth"] == 12
    with sqlite_locked(configured / "target.db"):
        code, out = run("replay", "--json")
        assert code == 1  # the target is still down: some ids could not be repaired
        assert docs(out)["remaining"] == 12
    code, out = run("replay", "--json")
    assert code == 0
    assert docs(out) == {"upserted": 12, "deleted": 0, "failed": 0, "remaining": 0}
    assert docs(run("status", "--json")[1])["target"]["count"] == 12


def test_rollback_from_target_primary_goes_back_to_dual(configured):
    assert run("flags", "set", "phase=target-primary", "read_percent=100", "--force")[0] == 0
    code, out = run("rollback", "--json")
    assert code == 0
    assert docs(out) | {"sources": None} == {
        "phase": "dual",
        "read_percent": 0.0,
        "shadow_percent": 0.0,
        "sources": None,
    }


def test_bad_settings_exit_1_naming_the_setting(configured, monkeypatch):
    monkeypatch.setenv("DUALVEC_READ_PERCENT", "250")
    code, _ = run("status")
    assert code == 1


def test_usage_errors_exit_2(configured):
    assert run("flags", "set", "read_percnt=5")[0] == 2
    assert run("no-such-command")[0] == 2


def test_bench_reports_latency_and_agreement_of_the_configured_stores(configured):
    code, _ = run("bench", "--queries", "5")
    assert code == 1  # nothing to take queries from yet
    router = Router.from_settings(load_settings(), start_replayer=False)
    try:
        router.upsert(make_records(300, 8))
    finally:
        router.close()
    code, out = run("bench", "--queries", "40", "-k", "5", "--json")
    assert code == 0
    result = docs(out)
    assert result["queries"] == 40
    assert result["mean_recall"] == 1.0  # both stores hold the same records
    assert set(result["legacy_ms"]) == set(result["target_ms"]) == {"p50", "p95", "p99"}
