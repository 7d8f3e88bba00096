from __future__ import annotations

import json
import os
import threading
import time

import pytest
from structlog.testing import capture_logs

from dualvec.errors import ConfigError
from dualvec.flags import FlagFile, FlagOverrides, FlagWatcher, read_flag_file, write_flag_file
from dualvec.settings import Flags, Phase, load_settings

TOML = """
phase = "dual"
read_percent = 10
legacy_url = "sqlite-blob://legacy.db"
target_url = "sqlite-vec://target.db"
collection = "docs"

[collections.docs]
dim = 8
model = "m"
[collections.docs.fields]
lang = { type = "str" }
[collections.docs.legacy]
id_source = "doc_id"
fields = { lang = "language" }
"""


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    path = tmp_path / "dualvec.toml"
    path.write_text(TOML)
    monkeypatch.setenv("DUALVEC_CONFIG", str(path))
    for key in list(os.environ):
        if key.startswith("DUALVEC_") and key != "DUALVEC_CONFIG":
            monkeypatch.delenv(key)
    return path


def test_precedence_defaults_file_env_kwargs(config_file, monkeypatch):
    settings = load_settings()
    assert settings.phase is Phase.DUAL  # file over default
    assert settings.read_percent == 10
    assert settings.shadow_percent == 0  # default
    monkeypatch.setenv("DUALVEC_READ_PERCENT", "50")
    monkeypatch.setenv("DUALVEC_SHADOW__TIMEOUT_SECONDS", "0.5")
    settings = load_settings()
    assert settings.read_percent == 50  # env over file
    assert settings.shadow.timeout_seconds == 0.5  # nested env
    assert load_settings(read_percent=70).read_percent == 70  # code over env


def test_specs_map_the_legacy_names(config_file):
    legacy, target = load_settings().specs()
    assert legacy.id_source == "doc_id"
    assert legacy.source_of("lang") == "language"
    assert target.source_of("lang") == "lang"
    assert target.id_source == "id"
    assert legacy.dim == target.dim == 8


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("DUALVEC_READ_PERCENT", "150", "read_percent"),
        ("DUALVEC_PHASE", "dual-ish", "phase"),
        ("DUALVEC_SHADOW__WORKERS", "0", "shadow.workers"),
        ("DUALVEC_SHADOW__TYPO", "1", "shadow.typo"),
        ("DUALVEC_GUARD__INTERVAL", "soon", "guard.interval"),
        ("DUALVEC_GUARD__INTERVAL", "0s", "guard.interval"),
        ("DUALVEC_GUARD__ON_NO_DATA", "wait", "guard.on_no_data"),
        ("DUALVEC_GUARD__MIN_COMPARISONS", "0", "guard.min_comparisons"),
        ("DUALVEC_GUARD__MAX_MISMATCH_RATIO", "2", "guard.max_mismatch_ratio"),
        ("DUALVEC_GUARD__FAILURE_LIMT", "3", "guard.failure_limt"),
    ],
)
def test_bad_values_name_the_setting(config_file, monkeypatch, env, value, named):
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_settings()


@pytest.mark.parametrize(
    ("written", "seconds"),
    [('"30s"', 30.0), ('"5m"', 300.0), ('"250ms"', 0.25), ('"1h"', 3600.0), ("45", 45.0)],
)
def test_the_guard_interval_reads_as_a_duration(config_file, written, seconds):
    config_file.write_text(TOML + f'\n[guard]\nenabled = true\ninterval = {written}\non_no_data = "fail"\n')
    guard = load_settings().guard
    assert (guard.enabled, guard.interval, guard.on_no_data) == (True, seconds, "fail")
    assert guard.failure_limit == 2 and guard.min_comparisons == 100  # the defaults stay


def test_typo_in_file_names_the_key(config_file):
    config_file.write_text("read_percnt = 5\n" + TOML)
    with pytest.raises(ConfigError, match="read_percnt"):
        load_settings()


def test_undeclared_collection(config_file, monkeypatch):
    monkeypatch.setenv("DUALVEC_COLLECTION", "nope")
    with pytest.raises(ConfigError, match="nope"):
        load_settings()


def test_flag_file_round_trip_and_refusal(tmp_path):
    path = tmp_path / "flags.json"
    assert read_flag_file(path) is None
    write_flag_file(path, Flags(phase=Phase.DUAL, read_percent=25))
    assert read_flag_file(path).over(Flags()) == Flags(phase=Phase.DUAL, read_percent=25)
    path.write_text('{"phase": "dual", "read_percent": 2')
    with pytest.raises(ConfigError, match="invalid"):
        read_flag_file(path)
    path.write_text(json.dumps({"phase": "dual", "read_percnt": 2}))
    with pytest.raises(ConfigError, match="read_percnt"):
        read_flag_file(path)


def test_watcher_follows_the_file_within_a_second_and_keeps_last_good(tmp_path):
    path = tmp_path / "flags.json"
    changes = []
    watcher = FlagWatcher(
        path, {"docs": Flags()}, poll_seconds=0.1, on_change=lambda name, snapshot: changes.append(snapshot)
    )
    try:
        assert watcher.current("docs").source == "settings"
        write_flag_file(path, Flags(phase=Phase.DUAL, read_percent=50))
        deadline = time.monotonic() + 1.0
        while watcher.current("docs").flags.read_percent != 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert watcher.current("docs").flags.read_percent == 50
        path.write_text("{ half written")
        time.sleep(0.4)
        assert watcher.current("docs").flags.read_percent == 50  # last good flags stay
        write_flag_file(path, Flags(phase=Phase.DUAL, read_percent=0))
        time.sleep(0.4)
        assert watcher.current("docs").flags.read_percent == 0
        path.unlink()
        time.sleep(0.4)
        assert watcher.current("docs").source == "settings"
        assert [c.flags.read_percent for c in changes] == [50, 0, 0]
    finally:
        watcher.close()


def test_concurrent_writers_never_leave_a_torn_file(tmp_path):
    path = tmp_path / "flags.json"
    stop = threading.Event()
    errors = []

    def writer(percent):
        while not stop.is_set():
            write_flag_file(path, Flags(phase=Phase.DUAL, read_percent=percent))

    threads = [threading.Thread(target=writer, args=(p,)) for p in (10, 90)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        try:
            content = read_flag_file(path)
        except ConfigError as exc:
            errors.append(exc)
        else:
            assert content is None or content.read_percent in (10, 90)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []


def test_flag_file_is_readable_by_services_running_as_another_user(tmp_path):
    path = tmp_path / "flags.json"
    write_flag_file(path, Flags(phase=Phase.DUAL))
    assert path.stat().st_mode & 0o777 == 0o644


def test_watcher_retries_a_file_it_could_not_open(tmp_path, monkeypatch):
    path = tmp_path / "flags.json"
    watcher = FlagWatcher(path, {"docs": Flags()}, poll_seconds=0.05)
    real_read = read_flag_file
    failures = []

    def unreadable_once(p):
        # Stands in for a permission error, which root (these tests' user) cannot get for real.
        if not failures:
            failures.append(p)
            raise PermissionError(13, "Permission denied", str(p))
        return real_read(p)

    try:
        monkeypatch.setattr("dualvec.flags.read_flag_file", unreadable_once)
        write_flag_file(path, Flags(phase=Phase.DUAL, read_percent=50))
        deadline = time.monotonic() + 2.0
        while watcher.current("docs").flags.read_percent != 50 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert failures, "the first read should have failed"
        assert watcher.current("docs").flags.read_percent == 50
    finally:
        watcher.close()


def test_each_collection_follows_its_override_then_the_defaults_then_settings(tmp_path):
    path = tmp_path / "flags.json"
    base = {"claims": Flags(shadow_percent=5), "docs": Flags(shadow_percent=5), "notes": Flags()}
    write_flag_file(
        path,
        FlagFile(
            phase=Phase.DUAL,
            collections={
                "claims": FlagOverrides(read_percent=50),
                "notes": FlagOverrides(phase=Phase.LEGACY),
                "gone": FlagOverrides(read_percent=100),
            },
        ),
    )
    with capture_logs() as logs:
        watcher = FlagWatcher(path, base, poll_seconds=0.05)
    try:
        claims, docs, notes = (watcher.current(n) for n in ("claims", "docs", "notes"))
        assert claims.flags == Flags(phase=Phase.DUAL, read_percent=50, shadow_percent=5)
        assert docs.flags == Flags(phase=Phase.DUAL, read_percent=0, shadow_percent=5)
        assert notes.flags == Flags(phase=Phase.LEGACY)
        assert claims.sources == {
            "phase": str(path),
            "read_percent": f"{path} (collection claims)",
            "shadow_percent": "settings",
        }
        assert {"event": "flag_overrides_ignored", "collections": ["gone"]}.items() <= logs[0].items()
    finally:
        watcher.close()


def test_a_single_collection_flag_file_of_before_keeps_working(tmp_path):
    path = tmp_path / "flags.json"
    path.write_text(
        json.dumps({"phase": "dual", "read_percent": 10, "shadow_percent": 100, "updated_at": 1.0})
    )
    watcher = FlagWatcher(path, {"docs": Flags()}, poll_seconds=0.05)
    try:
        assert watcher.current("docs").flags == Flags(phase=Phase.DUAL, read_percent=10, shadow_percent=100)
    finally:
        watcher.close()
