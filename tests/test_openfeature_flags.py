"""Flags from OpenFeature, for real: a migration over sqlite-blob and sqlite-vec files follows a
flagd provider reading its flag file (file mode, the provider's own watcher and change events),
or the SDK's in-memory provider (no change events: the poll); bad values keep the last good
flags, are logged and counted; the dualvec flag file is not read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
from structlog.testing import capture_logs

from dualvec import open_store
from dualvec.errors import ConfigError
from dualvec.flags import write_flag_file
from dualvec.migration import Migration
from dualvec.openfeature_flags import openfeature_flags
from dualvec.settings import Flags, Phase, Settings
from dualvec.testing import make_records, sample_spec

DIM = 8
# A record only each target holds: a read that finds it was served by the target.
MARKER = make_records(1, DIM, seed=42, prefix="only-target-")[0]


def flagd_flag(value: object) -> dict:
    return {"state": "ENABLED", "variants": {"set": value}, "defaultVariant": "set"}


def write_flagd(path: Path, flags: dict[str, object]) -> None:
    """A flagd flag file, replaced atomically as an operator's tooling would; a dict value is a
    flag definition as it is, anything else a one-variant flag."""
    content = {"flags": {k: v if isinstance(v, dict) else flagd_flag(v) for k, v in flags.items()}}
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(content))
    os.replace(temporary, path)


@pytest.fixture
def provide():
    """Set a provider in a domain of its own; every provider is shut down afterwards."""

    def set_up(provider) -> object:
        domain = f"dualvec-test-{uuid.uuid4().hex}"
        api.set_provider_and_wait(provider, domain=domain)
        return api.get_client(domain)

    yield set_up
    api.clear_providers()


@pytest.fixture
def flagd(tmp_path, provide):
    """A flagd provider in file mode (its default 0.5 s file watch) over `tmp_path/flagd.json`."""
    path = tmp_path / "flagd.json"

    def start(flags: dict[str, object]):
        write_flagd(path, flags)
        return provide(FlagdProvider(resolver_type=ResolverType.FILE, offline_flag_source_path=str(path)))

    start.path = path
    return start


@pytest.fixture
def migrate(tmp_path):
    """A migration of real stores (`docs`, or the names given) taking its flags from `source`."""
    migrations: list[Migration] = []

    def build(source, names=("docs",), **flags) -> Migration:
        stores = {}
        for name in names:
            spec = sample_spec(name=name, dim=DIM)
            legacy = open_store(f"sqlite-blob://{tmp_path}/legacy.db", spec)
            target = open_store(f"sqlite-vec://{tmp_path}/target.db", spec)
            target.upsert([MARKER])
            stores[name] = (legacy, target)
        settings = Settings(
            flag_file=tmp_path / "flags.json",
            outbox_path=tmp_path / "outbox.db",
            replay_interval_seconds=3600,
            **flags,
        )
        migration = Migration(stores, settings, start_replayer=False, flag_source=source)
        migrations.append(migration)
        return migration

    yield build
    for migration in migrations:
        migration.close()


def served(migration: Migration, name: str = "docs") -> str:
    hits = migration[name].search(MARKER.vector, k=1)
    return "target" if hits and hits[0].id == MARKER.id else "legacy"


def seconds_until(condition: Callable[[], bool], limit: float = 5.0) -> float:
    """How long `condition` took to hold (checked every 10 ms); fails after `limit` seconds."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < limit, f"not within {limit} s"
        time.sleep(0.01)
    return time.monotonic() - start


def sample(migration: Migration, metric: str, **labels: str) -> float:
    value = migration.metrics.registry.get_sample_value(metric, {"collection": "docs", **labels})
    return value or 0.0


def test_a_ramp_and_a_rollback_in_flagd_reach_reads_within_a_second(flagd, migrate):
    client = flagd({"dualvec.phase": "dual", "dualvec.docs.read_percent": 0.0})
    # A poll slower than the test: only flagd's change events can bring the changes in time.
    migration = migrate(openfeature_flags(client, poll_seconds=60))
    assert served(migration) == "legacy"

    write_flagd(flagd.path, {"dualvec.phase": "dual", "dualvec.docs.read_percent": 100.0})
    assert seconds_until(lambda: served(migration) == "target") < 1.0
    assert sample(migration, "dualvec_reads_total", store="target") >= 1
    assert sample(migration, "dualvec_flag_read_percent") == 100.0
    assert migration.flags.current("docs").sources["read_percent"] == (
        "openfeature:FlagdProvider (dualvec.docs.read_percent)"
    )

    write_flagd(flagd.path, {"dualvec.phase": "legacy", "dualvec.docs.read_percent": 100.0})
    assert seconds_until(lambda: served(migration) == "legacy") < 1.0
    assert sample(migration, "dualvec_phase", phase="legacy") == 1.0


def test_without_change_events_the_poll_brings_a_change_within_a_second(provide, migrate):
    # The in-memory provider reports no change when a value it computes changes: only a poll sees it.
    percent = {"value": 0.0}

    def read_percent(flag, context) -> FlagResolutionDetails:
        return FlagResolutionDetails(percent["value"], variant="now", reason=Reason.TARGETING_MATCH)

    flags = {
        "dualvec.phase": InMemoryFlag("dual", {"dual": "dual"}),
        "dualvec.read_percent": InMemoryFlag("now", {}, context_evaluator=read_percent),
    }
    client = provide(InMemoryProvider(flags))
    migration = migrate(openfeature_flags(client, poll_seconds=0.5))
    assert served(migration) == "legacy"
    percent["value"] = 100.0
    assert seconds_until(lambda: served(migration) == "target") < 1.0
    percent["value"] = 0.0
    assert seconds_until(lambda: served(migration) == "legacy") < 1.0


@pytest.mark.parametrize(
    ("bad", "said"),
    [
        (
            {"dualvec.docs.read_percent": 150.0},
            "dualvec.docs.read_percent: Input should be less than or equal to 100",
        ),
        (
            {"dualvec.phase": "banana"},
            "dualvec.phase: Input should be 'legacy', 'dual', 'target-primary' or 'target'",
        ),
        ({"dualvec.docs.read_percent": "fifty"}, "dualvec.docs.read_percent: TYPE_MISMATCH"),
        ({"dualvec.docs.phase": 2.0}, "dualvec.docs.phase: TYPE_MISMATCH"),
    ],
)
def test_a_bad_value_keeps_the_last_good_flags_and_is_logged_and_counted_once(flagd, migrate, bad, said):
    good = {"dualvec.phase": "dual", "dualvec.docs.read_percent": 100.0, "dualvec.shadow_percent": 0.0}
    migration = migrate(openfeature_flags(flagd(good), poll_seconds=0.1))
    assert served(migration) == "target"
    kept = migration.flags.current("docs")

    with capture_logs() as events:
        write_flagd(flagd.path, {**good, **bad})
        seconds_until(lambda: migration.flags.refusals("docs") == 1)
        time.sleep(0.3)  # polls over the same bad value
    refused = [e for e in events if e["event"] == "openfeature_flags_refused"]
    assert len(refused) == 1 and migration.flags.refusals("docs") == 1
    assert sample(migration, "dualvec_flags_refused_total") == 1
    assert refused[0]["collection"] == "docs" and refused[0]["error"].startswith(said)
    assert refused[0]["log_level"] == "error"
    assert migration.flags.current("docs") == kept
    assert served(migration) == "target"
    assert sample(migration, "dualvec_flag_read_percent") == 100.0

    write_flagd(flagd.path, {**good, "dualvec.docs.read_percent": 0.0})
    seconds_until(lambda: served(migration) == "legacy")


def test_a_wrong_type_names_the_type_to_set(provide):
    # The in-memory provider keeps an int an int, which OpenFeature refuses for a float flag.
    client = provide(InMemoryProvider({"dualvec.read_percent": InMemoryFlag("on", {"on": 50})}))
    counted: list[str] = []
    source = openfeature_flags(client)({"docs": Flags(read_percent=10.0)}, lambda *_: None, counted.append)
    try:
        assert counted == ["docs"]
        assert source.current("docs").flags.read_percent == 10.0
    finally:
        source.close()
    with capture_logs() as events:
        source = openfeature_flags(client)({"docs": Flags()}, lambda *_: None)
        source.close()
    assert "read_percent is a float flag from 0 to 100 (50.0 rather than 50" in events[0]["error"]


def test_missing_flags_fall_back_to_the_default_flag_then_the_settings(flagd, migrate):
    client = flagd(
        {
            "dualvec.phase": "dual",
            "dualvec.read_percent": 0.0,
            "dualvec.docs.read_percent": 100.0,
            # Disabled: as if it were not there.
            "dualvec.notes.read_percent": {**flagd_flag(100.0), "state": "DISABLED"},
            # One default flag telling collections apart by the evaluation context.
            "dualvec.shadow_percent": {
                "state": "ENABLED",
                "variants": {"all": 100.0, "none": 0.0},
                "defaultVariant": "none",
                "targeting": {"if": [{"==": [{"var": "collection"}, "notes"]}, "all", "none"]},
            },
            "dualvec.archive.phase": "target-primary",
        }
    )
    migration = migrate(
        openfeature_flags(client), names=("docs", "notes", "archive"), phase="legacy", read_percent=30.0
    )
    flags = {name: migration.flags.current(name).flags for name in migration}
    assert flags == {
        "docs": Flags(phase=Phase.DUAL, read_percent=100.0, shadow_percent=0.0),
        "notes": Flags(phase=Phase.DUAL, read_percent=0.0, shadow_percent=100.0),
        "archive": Flags(phase=Phase.TARGET_PRIMARY, read_percent=0.0, shadow_percent=0.0),
    }
    assert [served(migration, name) for name in migration] == ["target", "legacy", "legacy"]

    write_flagd(flagd.path, {"dualvec.archive.phase": "target-primary"})
    seconds_until(lambda: migration.flags.current("docs").source == "settings")
    assert migration.flags.current("docs").flags == Flags(phase=Phase.LEGACY, read_percent=30.0)
    assert dict(migration.flags.current("archive").sources) == {
        "phase": "openfeature:FlagdProvider (dualvec.archive.phase)",
        "read_percent": "settings",
        "shadow_percent": "settings",
    }


def test_the_flag_file_is_not_read(flagd, migrate, tmp_path):
    write_flag_file(tmp_path / "flags.json", Flags(phase=Phase.TARGET, read_percent=100.0))
    migration = migrate(openfeature_flags(flagd({"dualvec.phase": "dual"})))
    assert migration.flags.current("docs").flags == Flags(phase=Phase.DUAL)
    assert served(migration) == "legacy"
    migration["docs"].upsert(make_records(5, DIM))
    assert migration["docs"].stores["legacy"].count() == 5


def test_a_change_breaking_the_order_of_phases_is_followed_and_warned(flagd, migrate):
    migration = migrate(openfeature_flags(flagd({"dualvec.phase": "legacy"}), poll_seconds=0.1))
    with capture_logs() as events:
        write_flagd(flagd.path, {"dualvec.phase": "target"})
        seconds_until(lambda: migration.flags.current("docs").flags.phase is Phase.TARGET)
        write_flagd(flagd.path, {"dualvec.phase": "legacy"})
        seconds_until(lambda: migration.flags.current("docs").flags.phase is Phase.LEGACY)
    warned = [e["rule"] for e in events if e["event"] == "openfeature_flags_unchecked"]
    assert len(warned) == 2
    assert "go through target-primary first" in warned[0]
    assert "phase target stopped writing to legacy, so it is behind" in warned[1]


@pytest.mark.parametrize(
    ("arguments", "said"),
    [({"poll_seconds": 0}, "poll_seconds=0"), ({"prefix": "dualvec."}, "prefix='dualvec.'")],
)
def test_bad_arguments_are_config_errors_naming_them(arguments, said):
    with pytest.raises(ConfigError, match=said):
        openfeature_flags(**arguments)


def test_only_the_openfeature_module_imports_openfeature_and_says_which_extra_is_missing():
    code = (
        "import sys, dualvec, dualvec.migration\n"
        "print('openfeature' in sys.modules)\n"
        "sys.modules['openfeature'] = None  # what an install without the extra looks like\n"
        "try:\n"
        "    import dualvec.openfeature_flags\n"
        "except dualvec.BackendMissingError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    imported, message = out.splitlines()
    assert imported == "False"
    assert "pip install 'dualvec[openfeature]'" in message
