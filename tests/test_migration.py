"""Many collections, one migration, for real: three collections in two files at three phases,
in one process and in four; a rollback of one reaches every process and leaves the others
alone; a writer touching two collections killed with SIGKILL loses no acknowledged write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import assert_same_contents

from dualvec import Record, open_store
from dualvec.cli.main import cli
from dualvec.errors import ConfigError
from dualvec.flags import FlagFile, FlagOverrides, write_flag_file
from dualvec.migration import Migration
from dualvec.settings import Phase, load_settings
from dualvec.testing import make_records

DIM = 8
NAMES = ("alpha", "beta", "gamma")
# A vector far from every generated one: whichever store holds it answers with it first.
MARKER = np.full(DIM, 40.0, np.float32)

CONFIG = """
legacy_url = "sqlite-blob://{tmp}/legacy-1.db"
target_url = "sqlite-vec://{tmp}/target-1.db"
flag_file = "{tmp}/flags.json"
outbox_path = "{tmp}/outbox.db"
flag_poll_seconds = 0.1
replay_interval_seconds = 3600

[collections.alpha]
dim = {dim}
model = "m"
metric = "l2"
fields = {{ lang = "str" }}

[collections.beta]
dim = {dim}
model = "m"
metric = "l2"
fields = {{ lang = "str" }}
legacy_url = "sqlite-blob://{tmp}/legacy-2.db"

[collections.gamma]
dim = {dim}
model = "m"
metric = "l2"
legacy_url = "sqlite-blob://{tmp}/legacy-2.db"
target_url = "sqlite-vec://{tmp}/target-2.db"
"""


@pytest.fixture
def configured(tmp_path, monkeypatch):
    path = tmp_path / "dualvec.toml"
    path.write_text(CONFIG.format(tmp=tmp_path, dim=DIM))
    monkeypatch.setenv("DUALVEC_CONFIG", str(path))
    return tmp_path


def records(name: str, n: int, seed: int = 0) -> list[Record]:
    lang = {"lang": "en"} if name != "gamma" else {}
    return [Record(r.id, r.vector, lang) for r in make_records(n, DIM, seed=seed, prefix=f"{name}-")]


def plant_in_targets(settings) -> None:
    """A record only each target holds: a read that finds it was served by the target."""
    for name in NAMES:
        _, target_url = settings.urls(name)
        _, spec = settings.specs(name)
        with open_store(target_url, spec) as target:
            target.upsert([Record("marker", MARKER, {"lang": "en"} if name != "gamma" else {})])


def served(router) -> str:
    hits = router.search(MARKER, k=1)
    return "target" if hits and hits[0].id == "marker" else "legacy"


def three_phases(tmp_path) -> None:
    write_flag_file(
        tmp_path / "flags.json",
        FlagFile(
            phase=Phase.LEGACY,
            collections={
                "beta": FlagOverrides(phase=Phase.DUAL, read_percent=100, shadow_percent=100),
                "gamma": FlagOverrides(phase=Phase.TARGET_PRIMARY, read_percent=100),
            },
        ),
    )


def test_each_collection_follows_its_own_flags_in_one_process(configured):
    settings = load_settings()
    plant_in_targets(settings)
    three_phases(configured)
    with Migration.from_settings(settings, start_replayer=False) as migration:
        assert sorted(migration) == sorted(NAMES)
        for name in NAMES:
            migration[name].upsert(records(name, 20))
        assert [served(migration[name]) for name in NAMES] == ["legacy", "target", "target"]
        counts = {
            name: (migration[name].stores["legacy"].count(), migration[name].stores["target"].count())
            for name in NAMES
        }
        # alpha writes legacy only; beta and gamma write both (targets also hold the marker).
        assert counts == {"alpha": (20, 1), "beta": (20, 21), "gamma": (20, 21)}
        deadline = time.monotonic() + 5
        registry = migration.metrics.registry

        def compared(name: str) -> float:
            return sum(
                registry.get_sample_value(
                    "dualvec_shadow_comparisons_total", {"collection": name, "outcome": outcome}
                )
                or 0.0
                for outcome in ("match", "mismatch", "in_flight")
            )

        while compared("beta") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert compared("beta") >= 1
        assert compared("alpha") == compared("gamma") == 0
        for name, phase in zip(NAMES, ("legacy", "dual", "target-primary"), strict=True):
            assert registry.get_sample_value("dualvec_phase", {"collection": name, "phase": phase}) == 1.0
        assert migration["beta"].outbox.stats().depth == 0


def test_collections_share_one_set_of_threads(configured):
    settings = load_settings()
    before = threading.active_count()
    with Migration.from_settings(settings, collections=["alpha"]):
        one = threading.active_count() - before
    with Migration.from_settings(settings):
        three = threading.active_count() - before
    assert three == one == 2  # the flag watcher and the replayer; pools start on first use


def test_unknown_collections_are_usage_errors_naming_the_declared_ones(configured):
    runner = CliRunner()
    for command in (
        ["status", "--collection", "nope"],
        ["backfill", "--collection", "nope"],
        ["flags", "set", "--collection", "nope", "read_percent=1"],
        ["rollback", "--collection", "nope"],
    ):
        result = runner.invoke(cli, command)
        assert result.exit_code == 2, (command, result.output)
        assert "'nope'" in result.output and "alpha" in result.output
    assert not (configured / "flags.json").exists()


def test_two_collections_on_one_table_is_refused_at_start(configured, monkeypatch):
    path = configured / "dualvec.toml"
    path.write_text(CONFIG.format(tmp=configured, dim=DIM) + '\n[collections.delta]\ndim = 8\nmodel = "m"\n')
    assert sorted(load_settings().collections) == ["alpha", "beta", "delta", "gamma"]  # own tables
    monkeypatch.setenv("DUALVEC_LEGACY_URL", f"sqlite-blob://{configured}/legacy-1.db?table=shared")
    with pytest.raises(ConfigError, match="'alpha' and 'delta' both use table 'shared'"):
        load_settings()


def test_flag_commands_work_per_collection(configured):
    runner = CliRunner()
    assert runner.invoke(cli, ["flags", "set", "phase=dual"]).exit_code == 0
    result = runner.invoke(cli, ["flags", "set", "--collection", "gamma", "shadow_percent=25", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["collections"] == {
        "gamma": {
            "phase": "dual",
            "read_percent": 0.0,
            "shadow_percent": 25.0,
            "sources": {
                "phase": f"{configured}/flags.json",
                "read_percent": "settings",
                "shadow_percent": f"{configured}/flags.json (collection gamma)",
            },
        }
    }
    shown = json.loads(runner.invoke(cli, ["flags", "show", "--json"]).stdout)["collections"]
    assert {name: entry["shadow_percent"] for name, entry in shown.items()} == {
        "alpha": 0.0,
        "beta": 0.0,
        "gamma": 25.0,
    }
    # The rules apply per collection: beta has no verify, so it may not serve reads.
    result = runner.invoke(cli, ["flags", "set", "--collection", "beta", "read_percent=10"])
    assert result.exit_code == 1 and "no verify of collection 'beta'" in result.output
    status = json.loads(runner.invoke(cli, ["status", "--json", "--collection", "gamma"]).stdout)
    assert list(status["collections"]) == ["gamma"]
    assert status["collections"]["gamma"]["legacy"]["url"].endswith("legacy-2.db")
    assert status["collections"]["gamma"]["target"]["url"].endswith("target-2.db")


READER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from dualvec.migration import Migration
    from dualvec.settings import load_settings

    marker = np.full({dim}, 40.0, np.float32)
    migration = Migration.from_settings(load_settings(), start_replayer=False)
    last = {{}}
    print("ready", flush=True)
    deadline = time.monotonic() + float(sys.argv[1])
    while time.monotonic() < deadline:
        for name in ("beta", "gamma"):
            hits = migration[name].search(marker, k=1)
            served = "target" if hits and hits[0].id == "marker" else "legacy"
            if last.get(name) != served:
                last[name] = served
                print(f"{{time.time():.6f}} {{name}} {{served}}", flush=True)
                if name == "beta" and served == "legacy":
                    deadline = min(deadline, time.monotonic() + 1.0)
    migration.close()
    """
).format(dim=DIM)


@pytest.mark.slow
def test_a_rollback_of_one_collection_reaches_four_processes_within_a_second(configured):
    settings = load_settings()
    plant_in_targets(settings)
    three_phases(configured)
    readers = [
        subprocess.Popen([sys.executable, "-c", READER, "60"], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    try:
        # Each reader's first answers, read before the rollback: every process is serving.
        firsts = [[proc.stdout.readline() for _ in range(3)][1:] for proc in readers]
        result = CliRunner().invoke(cli, ["rollback", "--collection", "beta"])
        rolled_back_at = time.time()
        assert result.exit_code == 0, result.output
        outputs = [
            first + proc.communicate(timeout=60)[0].split("\n")
            for first, proc in zip(firsts, readers, strict=True)
        ]
    finally:
        for proc in readers:
            proc.kill()
            proc.wait()
    for lines in outputs:
        events = [line.split() for line in lines if line]
        beta = [(float(t), s) for t, name, s in events if name == "beta"]
        gamma = [s for _, name, s in events if name == "gamma"]
        assert beta[0][1] == "target" and beta[-1][1] == "legacy", events
        assert beta[-1][0] - rolled_back_at < 1.0
        assert gamma == ["target"], events  # gamma never left the target
    assert load_settings().flags.phase is Phase.LEGACY  # configured defaults untouched


WRITER = textwrap.dedent(
    """
    import os, sys
    from dualvec import Record
    from dualvec.migration import Migration
    from dualvec.settings import load_settings
    from dualvec.testing import make_records

    migration = Migration.from_settings(load_settings(), collections=["alpha", "beta"], start_replayer=False)
    acks = open(sys.argv[1], "a", buffering=1)
    print("ready", flush=True)
    step = 0
    while True:
        step += 1
        name = ("alpha", "beta")[step % 2]
        batch = [
            Record(f"{{name}}-{{step}}-{{r.id}}", r.vector, {{"lang": "en"}})
            for r in make_records(5, {dim}, seed=step)
        ]
        migration[name].upsert(batch)
        acks.write(" ".join([name] + [r.id for r in batch]) + "\\n")
        os.fsync(acks.fileno())
    """
).format(dim=DIM)


@pytest.mark.slow
def test_a_writer_killed_mid_write_loses_no_acknowledged_write_in_either_collection(configured):
    write_flag_file(configured / "flags.json", FlagFile(phase=Phase.DUAL))
    acks_path = configured / "acks.log"
    for kill_after in (0.7, 1.3, 2.1):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(acks_path)], stdout=subprocess.PIPE, text=True
        )
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(kill_after)
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
    acked: dict[str, list[str]] = {"alpha": [], "beta": []}
    for line in acks_path.read_text().splitlines():
        name, *ids = line.split()
        acked[name] += ids
    assert all(len(ids) >= 10 for ids in acked.values()), {k: len(v) for k, v in acked.items()}
    settings = load_settings()
    with Migration.from_settings(settings, collections=["alpha", "beta"], start_replayer=False) as migration:
        for name in ("alpha", "beta"):
            router = migration[name]
            found = {r.id for r in router.stores["legacy"].get(acked[name])}
            assert found == set(acked[name]), f"{name}: acknowledged writes lost from the primary"
            while router.outbox.stats().depth:
                assert router.replay().failed == 0
            assert_same_contents(router.stores["legacy"], router.stores["target"])
