"""The migration's state machine as a table: each flag change, from each state, allowed or
refused with what to run first. `change_flags` and `rollback_flags` are then checked against a
real flag file and real verify state for several collections at once."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest

from dualvec.errors import ConfigError
from dualvec.flags import FlagFile, FlagOverrides, read_flag_file, write_flag_file
from dualvec.outbox import OutboxStats
from dualvec.phases import IN_FLIGHT_SECONDS, change_flags, check_change, rollback_flags, rolled_back
from dualvec.settings import CollectionConfig, Flags, Phase, Settings

L, D, TP, T = Phase.LEGACY, Phase.DUAL, Phase.TARGET_PRIMARY, Phase.TARGET
CLEAN, UNVERIFIED = None, "no verify of collection 'docs' has run"
EMPTY = OutboxStats(0, 0.0)
IN_FLIGHT = OutboxStats(3, IN_FLIGHT_SECONDS / 4)
BACKLOG = OutboxStats(3, IN_FLIGHT_SECONDS * 5)


@dataclass
class State:
    """A collection's sync state, as the rules see it."""

    verify: str | None = CLEAN
    backlog: OutboxStats = EMPTY

    def verify_problem(self) -> str | None:
        return self.verify

    def outbox(self) -> OutboxStats:
        return self.backlog


# (old phase, old read %, new phase, new read %, verify, outbox, refusal or None)
TRANSITIONS = [
    (L, 0, D, 0, UNVERIFIED, EMPTY, None),
    (D, 0, D, 10, UNVERIFIED, EMPTY, "no verify"),
    (D, 0, D, 10, CLEAN, BACKLOG, None),  # reads need a clean verify, not an empty outbox
    (D, 50, D, 10, UNVERIFIED, EMPTY, None),  # lowering needs nothing
    (D, 100, TP, 100, CLEAN, EMPTY, None),
    (D, 100, TP, 100, CLEAN, IN_FLIGHT, None),  # writes in flight are not a backlog
    (D, 100, TP, 100, CLEAN, BACKLOG, "3 writes wait in the outbox"),
    (D, 100, TP, 100, UNVERIFIED, EMPTY, "refusing phase target-primary: no verify"),
    (L, 0, TP, 0, CLEAN, EMPTY, "go through dual"),
    (TP, 100, T, 100, UNVERIFIED, EMPTY, None),
    (TP, 100, T, 100, CLEAN, BACKLOG, "writes wait in the outbox"),
    (D, 100, T, 100, CLEAN, EMPTY, "go through target-primary first"),
    (L, 0, T, 0, CLEAN, EMPTY, "go through target-primary first"),
    (D, 0, L, 0, CLEAN, BACKLOG, "writes wait in the outbox"),
    (D, 0, L, 0, UNVERIFIED, IN_FLIGHT, None),
    (TP, 0, D, 0, UNVERIFIED, BACKLOG, None),  # both stay written: nothing to wait for
    (T, 100, TP, 100, CLEAN, EMPTY, "go through dual"),  # legacy is behind: re-sync first
]


@pytest.mark.parametrize(("old", "old_read", "new", "new_read", "verify", "outbox", "refusal"), TRANSITIONS)
def test_transition_table(old, old_read, new, new_read, verify, outbox, refusal):
    change = (Flags(phase=old, read_percent=old_read), Flags(phase=new, read_percent=new_read))
    state = State(verify, outbox)
    if refusal is None:
        check_change(*change, state)
        return
    with pytest.raises(ConfigError, match=refusal) as caught:
        check_change(*change, state)
    assert "--force" in str(caught.value)


@pytest.mark.parametrize(
    ("old", "new"),
    [(D, D), (TP, D), (L, L)],
)
def test_rollback_sends_reads_to_legacy_and_makes_it_primary(old, new):
    assert rolled_back(Flags(phase=old, read_percent=50, shadow_percent=10)) == Flags(
        phase=new, read_percent=0, shadow_percent=10
    )


def test_rollback_refuses_phase_target():
    with pytest.raises(ConfigError, match="so it is behind"):
        rolled_back(Flags(phase=T, read_percent=100))


@pytest.fixture
def settings(tmp_path):
    config = CollectionConfig(dim=4, model="m")
    return Settings(
        legacy_url=f"sqlite-blob://{tmp_path}/legacy.db",
        target_url=f"sqlite-vec://{tmp_path}/target.db",
        flag_file=tmp_path / "flags.json",
        outbox_path=tmp_path / "outbox.db",
        collections={"a": config, "b": config, "c": config},
    )


def test_a_change_for_one_collection_touches_only_its_override(settings):
    write_flag_file(settings.flag_file, Flags(phase=D))
    change_flags(settings, {"shadow_percent": 100}, collection="b")
    content = read_flag_file(settings.flag_file)
    assert content.phase is D and content.collections == {"b": FlagOverrides(shadow_percent=100)}
    with pytest.raises(ConfigError, match="collection 'b': refusing read_percent=5: no verify"):
        change_flags(settings, {"read_percent": 5}, collection="b")
    with pytest.raises(ConfigError, match="'zz' is not declared"):
        change_flags(settings, {"read_percent": 0}, collection="zz")
    assert read_flag_file(settings.flag_file).collections == {"b": FlagOverrides(shadow_percent=100)}


def test_a_default_change_is_checked_for_every_collection_it_moves(settings):
    write_flag_file(
        settings.flag_file, FlagFile(phase=D, collections={"c": FlagOverrides(phase=L, read_percent=0)})
    )
    # a and b would move to target-primary without a verify; c keeps its own phase.
    with pytest.raises(ConfigError, match="collection 'a'"):
        change_flags(settings, {"phase": "target-primary"})
    snapshots = change_flags(settings, {"shadow_percent": 50})
    assert {name: s.flags.shadow_percent for name, s in snapshots.items()} == {"a": 50, "b": 50, "c": 50}
    assert snapshots["c"].flags.phase is L


def test_rollback_of_one_collection_leaves_the_others_and_all_skips_phase_target(settings):
    write_flag_file(
        settings.flag_file,
        FlagFile(
            phase=D,
            read_percent=50,
            collections={"b": FlagOverrides(phase=TP, read_percent=100), "c": FlagOverrides(phase=T)},
        ),
    )
    after = rollback_flags(settings, "b")
    assert (after["a"].flags, after["b"].flags) == (
        Flags(phase=D, read_percent=50),
        Flags(phase=D, read_percent=0),
    )
    with pytest.raises(ConfigError, match="so it is behind"):
        rollback_flags(settings, "c")
    after = rollback_flags(settings)
    assert [after[n].flags.read_percent for n in "abc"] == [0, 0, 50]
    assert after["c"].flags.phase is T


def test_changes_to_different_collections_at_once_are_all_kept(settings):
    # A ramp, the guard inside `serve` and an operator may each change a collection at the same
    # moment; the flag file is read, changed and replaced, so without a lock one change would
    # overwrite another's.
    write_flag_file(settings.flag_file, Flags(phase=D))
    steps = 40

    def walk(name: str) -> None:
        for percent in range(1, steps + 1):
            change_flags(settings, {"shadow_percent": percent}, collection=name)

    threads = [threading.Thread(target=walk, args=(name,)) for name in ("a", "b", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    content = read_flag_file(settings.flag_file)
    assert {name: o.shadow_percent for name, o in content.collections.items()} == dict.fromkeys("abc", steps)
