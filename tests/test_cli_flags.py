"""`dualvec flags set` guards, against real stores and a real outbox: reads reach the target only
after a clean verify of these two stores, target-primary only with an empty outbox, and
`--force` overrides each refusal."""

from __future__ import annotations

import time

import pytest
from helpers import sqlite_locked, write_config
from test_backfill_verify import load, open_router, run_cli, set_phase

from dualvec import open_store
from dualvec.phases import IN_FLIGHT_SECONDS
from dualvec.settings import load_settings
from dualvec.testing import make_records, sample_spec


@pytest.fixture
def legacy_url(tmp_path, monkeypatch):
    url = f"sqlite-blob://{tmp_path}/legacy.db"
    data = write_config(tmp_path, monkeypatch, url)
    load(url, 100)
    set_phase(data, "dual")
    assert run_cli("backfill", "--silent")[0] == 0
    return url


def flag(*assignments: str) -> tuple[int, str]:
    return run_cli("flags", "set", *assignments)


def test_reads_reach_the_target_only_after_a_clean_verify(tmp_path, legacy_url):
    code, output = flag("read_percent=10")
    assert code == 1
    assert "no verify of collection 'docs' has run" in output and "dualvec verify --repair" in output

    target = open_store(f"sqlite-vec://{tmp_path}/target.db", sample_spec(dim=8))
    target.delete(["doc-3"])
    target.close()
    assert run_cli("verify", "--silent")[0] == 3
    code, output = flag("read_percent=10")
    assert code == 1 and "the last verify found 1 differences" in output

    assert run_cli("verify", "--repair", "--silent")[0] == 0
    assert flag("read_percent=10")[0] == 0
    assert flag("read_percent=50")[0] == 0
    assert flag("read_percent=0")[0] == 0  # lowering needs nothing


def test_force_overrides_the_verify_guard(legacy_url):
    code, output = flag("read_percent=100", "--force", "--json")
    assert code == 0, output
    assert '"read_percent": 100.0' in output


def test_a_verify_of_other_stores_does_not_count(tmp_path, monkeypatch, legacy_url):
    assert run_cli("verify", "--silent")[0] == 0
    write_config(tmp_path, monkeypatch, legacy_url, f"sqlite-vec://{tmp_path}/other.db")
    code, output = flag("read_percent=10")
    assert code == 1 and "the last verify compared other stores" in output


def test_target_primary_waits_for_an_empty_outbox(tmp_path, monkeypatch):
    """A secondary that really failed (another process holds its lock) leaves intents behind."""
    url = f"sqlite-blob://{tmp_path}/legacy.db"
    data = write_config(tmp_path, monkeypatch, url, f"sqlite-vec://{tmp_path}/target.db?busy_timeout=0.05")
    load(url, 10)
    set_phase(data, "dual")
    router = open_router()
    try:
        with sqlite_locked(tmp_path / "target.db"):
            router.upsert(make_records(3, 8, seed=5, prefix="late-"))
        assert router.outbox.stats().depth == 3
    finally:
        router.close()
    time.sleep(IN_FLIGHT_SECONDS)  # younger intents are writes in flight, which clear themselves
    code, output = flag("phase=target-primary")
    assert code == 1 and "3 writes wait in the outbox" in output and "dualvec replay" in output
    assert flag("phase=target-primary", "--force")[0] == 0
    assert run_cli("rollback")[0] == 0  # back to dual
    assert run_cli("replay")[0] == 0
    code, output = flag("phase=target-primary")
    assert code == 1 and "no verify" in output  # an empty outbox is not enough
    assert run_cli("backfill", "--silent")[0] == 0
    assert run_cli("verify", "--silent")[0] == 0
    assert flag("phase=target-primary")[0] == 0


def test_target_primary_only_from_dual(tmp_path, monkeypatch):
    write_config(tmp_path, monkeypatch, f"sqlite-blob://{tmp_path}/legacy.db")
    code, output = flag("phase=target-primary")
    assert code == 1 and "go through dual" in output


def test_leaving_dual_writes_forgets_the_last_verify(tmp_path, monkeypatch):
    """Writes that reach one store only make a past clean verify meaningless."""
    url = f"sqlite-blob://{tmp_path}/legacy.db"
    data = write_config(tmp_path, monkeypatch, url)
    load(url, 10)
    set_phase(data, "dual")
    assert run_cli("backfill", "--silent")[0] == 0
    assert run_cli("verify", "--silent")[0] == 0
    assert flag("phase=legacy")[0] == 0
    assert flag("phase=dual")[0] == 0
    code, output = flag("read_percent=10")
    assert code == 1 and "no verify" in output


def test_flags_are_not_written_where_no_service_reads_them(tmp_path, monkeypatch):
    monkeypatch.delenv("DUALVEC_CONFIG", raising=False)
    code, output = run_cli("rollback")
    assert code == 1 and "no config file" in output
    assert not (tmp_path / ".dualvec" / "flags.json").exists()


def test_invalid_flag_values_are_usage_errors(tmp_path, monkeypatch):
    write_config(tmp_path, monkeypatch, f"sqlite-blob://{tmp_path}/legacy.db")
    assert flag("read_percent=150")[0] == 2
    assert flag("phase=sideways")[0] == 2


def test_target_comes_after_target_primary_unless_forced(tmp_path, monkeypatch):
    data = write_config(tmp_path, monkeypatch, f"sqlite-blob://{tmp_path}/legacy.db")
    set_phase(data, "dual")
    code, output = flag("phase=target")
    assert code == 1 and "go through target-primary first" in output
    assert flag("phase=target", "--force")[0] == 0


def test_backfill_waits_for_a_fresh_flag_change_to_reach_every_process(tmp_path, monkeypatch):
    """A process that has not yet seen phase=dual writes to legacy alone; copying before it
    has would miss that write. Every process re-reads flags within flag_poll_seconds."""
    url = f"sqlite-blob://{tmp_path}/legacy.db"
    write_config(tmp_path, monkeypatch, url)
    load(url, 10)
    poll = load_settings().flag_poll_seconds
    assert flag("phase=dual")[0] == 0
    start = time.monotonic()
    code, output = run_cli("backfill", "--silent")
    assert code == 0
    assert "waiting" in output
    assert time.monotonic() - start >= poll
    code, output = run_cli("backfill", "--silent")  # the change is old news now: no wait
    assert code == 0
    assert "waiting" not in output
