"""The migration's state machine: which flag change is allowed from which state, and what must
be run first. The CLI, the demo, the service and the automatic guard all change flags through
`change_flags` and `rollback_flags` here; nothing writes the flag file around them.

The rules, per collection (`--force` skips them):

========================================  ==============================================
change                                    needs
========================================  ==============================================
raise ``read_percent``                    a clean verify of this collection's two stores
enter ``target-primary``                  phase ``dual``, a clean verify, no outbox backlog
enter ``target``                          phase ``target-primary``
leave dual writes (``dual`` or            no outbox backlog (and then the last verify and
``target-primary`` to one store)          backfill are forgotten: they no longer hold)
rollback                                  not from ``target`` (legacy is behind there)
========================================  ==============================================

A backlog is an intent older than `IN_FLIGHT_SECONDS`: under live traffic the outbox always
holds the ids being written at that instant, which their writers clear within milliseconds;
one that waits longer is a write the secondary missed, for `dualvec replay` to repair.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError as PydanticValidationError

from dualvec.errors import ConfigError
from dualvec.files import exclusive_lock
from dualvec.flags import FLAG_KEYS, FlagFile, FlagOverrides, FlagSnapshot, read_flag_file, write_flag_file
from dualvec.logs import get_logger
from dualvec.outbox import Outbox, OutboxStats, Role
from dualvec.protocol import VectorStore
from dualvec.settings import Flags, Phase, Settings
from dualvec.verify import VerifyResult, read_verify_state, verify, write_verify_state

__all__ = [
    "IN_FLIGHT_SECONDS",
    "StoredSyncState",
    "SyncState",
    "change_flags",
    "check_change",
    "collection_flags",
    "copy_problem",
    "record_verify",
    "rollback_flags",
    "rolled_back",
    "settle_seconds",
    "verify_collection",
    "write_roles",
]

log = get_logger("dualvec.phases")

_DUAL_WRITES = (Phase.DUAL, Phase.TARGET_PRIMARY)
# An intent younger than this is a write in flight, which its writer clears itself.
IN_FLIGHT_SECONDS = 2.0
_ROLES: dict[Phase, tuple[Role, Role | None]] = {
    Phase.LEGACY: ("legacy", None),
    Phase.DUAL: ("legacy", "target"),
    Phase.TARGET_PRIMARY: ("target", "legacy"),
    Phase.TARGET: ("target", None),
}


def write_roles(phase: Phase) -> tuple[Role, Role | None]:
    """(primary, secondary) for a phase; secondary None when only one store is written."""
    return _ROLES[phase]


class SyncState(Protocol):
    """What the rules need to know about a collection's two stores."""

    def verify_problem(self) -> str | None:
        """Why the target is not known to hold what the primary holds; None after a clean verify."""

    def outbox(self) -> OutboxStats:
        """Writes still waiting to reach the secondary, and the oldest one's age."""


def check_change(old: Flags, new: Flags, state: SyncState) -> None:
    """Refuse a change that would lose data or serve unverified reads, saying what to run."""
    if new.read_percent > old.read_percent:
        problem = state.verify_problem()
        if problem:
            raise ConfigError(
                f"refusing read_percent={new.read_percent:g}: {problem}; run `dualvec verify --repair` "
                "then `dualvec verify` until it exits 0 (or pass --force)"
            )
    entering_target_primary = new.phase is Phase.TARGET_PRIMARY and old.phase is not Phase.TARGET_PRIMARY
    leaving_dual_writes = old.phase in _DUAL_WRITES and new.phase not in _DUAL_WRITES
    if entering_target_primary or leaving_dual_writes:
        backlog = state.outbox()
        if backlog.depth and backlog.oldest_age_seconds >= IN_FLIGHT_SECONDS:
            raise ConfigError(
                f"refusing phase {new.phase.value}: {backlog.depth} writes wait in the outbox, the "
                f"oldest for {backlog.oldest_age_seconds:.0f} s; run `dualvec replay` until it is "
                "empty (or pass --force)"
            )
    if entering_target_primary:
        if old.phase is not Phase.DUAL:
            raise ConfigError(
                f"refusing phase target-primary from {old.phase.value}: go through dual, backfill "
                "and a clean verify first (or pass --force)"
            )
        problem = state.verify_problem()
        if problem:
            raise ConfigError(
                f"refusing phase target-primary: {problem}; run `dualvec verify --repair` then "
                "`dualvec verify` until it exits 0 (or pass --force)"
            )
    if new.phase is Phase.TARGET and old.phase not in (Phase.TARGET, Phase.TARGET_PRIMARY):
        raise ConfigError(
            f"refusing phase target from {old.phase.value}: go through target-primary first (or pass --force)"
        )


def rolled_back(old: Flags) -> Flags:
    """The flags a rollback sets: every read from legacy, and legacy primary again."""
    if old.phase is Phase.TARGET:
        raise ConfigError(
            "phase target stopped writing to legacy, so it is behind; rolling back now would "
            "serve stale data. Set phase target-primary only after re-syncing legacy."
        )
    phase = Phase.DUAL if old.phase is Phase.TARGET_PRIMARY else old.phase
    return old.model_copy(update={"read_percent": 0.0, "phase": phase})


@dataclass(frozen=True)
class StoredSyncState:
    """A collection's sync state as the deployment records it: the last verify's result file
    and the shared outbox."""

    settings: Settings
    collection: str

    def verify_problem(self) -> str | None:
        state = read_verify_state(self.settings.state_file("verify", self.collection))
        if state is None:
            return f"no verify of collection {self.collection!r} has run"
        compared = (state.get("collection"), state.get("legacy_url"), state.get("target_url"))
        if compared != (self.collection, *self.settings.urls(self.collection)):
            return f"the last verify compared other stores ({', '.join(map(str, compared))})"
        if not state["clean"]:
            return f"the last verify found {state.get('differences')} differences"
        return None

    def outbox(self) -> OutboxStats:
        return Outbox.peek(self.settings.outbox_path, self.collection)

    def forget(self) -> None:
        """Once one store stops receiving writes, a past clean verify and a finished backfill say
        nothing about the stores any more: drop both, so the rules ask for them again."""
        for kind in ("verify", "backfill"):
            self.settings.state_file(kind, self.collection).unlink(missing_ok=True)


def _flag_file(settings: Settings) -> FlagFile:
    return read_flag_file(settings.flag_file) or FlagFile()


def collection_flags(settings: Settings, collection: str) -> FlagSnapshot:
    """The flags `collection` follows now, as every process reads them."""
    settings.collection_config(collection)
    content = read_flag_file(settings.flag_file)
    if content is None:
        return FlagSnapshot.from_settings(settings.flags)
    return content.resolve(collection, settings.flags, str(settings.flag_file))


def _check_declared(settings: Settings, names: Sequence[str]) -> None:
    for name in names:
        settings.collection_config(name)


def change_flags(
    settings: Settings,
    changes: Mapping[str, Any],
    *,
    collection: str | None = None,
    force: bool = False,
) -> dict[str, FlagSnapshot]:
    """Set `changes` (flag key -> value) for one collection, or as the default for all, after
    checking the rules for every collection whose flags it changes; return each one's new flags.
    """
    unknown = sorted(set(changes) - set(FLAG_KEYS))
    if unknown:
        raise ConfigError(f"unknown flag(s) {unknown}; flags are {list(FLAG_KEYS)}")
    with _flag_file_locked(settings):
        content = _flag_file(settings)
        try:
            if collection is None:
                level = FlagOverrides.model_validate({**_set_keys(content), **changes})
                updated = content.model_copy(update=level.model_dump())
            else:
                _check_declared(settings, [collection])
                own = content.collections.get(collection, FlagOverrides())
                level = FlagOverrides.model_validate({**_set_keys(own), **changes})
                updated = content.model_copy(
                    update={"collections": {**content.collections, collection: level}}
                )
        except PydanticValidationError as exc:
            error = exc.errors()[0]
            raise ConfigError(f"{error['loc'][0]}: {error['msg']} (got {error.get('input')!r})") from exc
        return _write(settings, content, updated, force=force)


@contextmanager
def _flag_file_locked(settings: Settings) -> Iterator[None]:
    """Serialise read-modify-writes of the flag file across threads and processes: a ramp, the
    guard inside `serve` and an operator may change two collections at once, and without the
    lock one's change would overwrite the other's."""
    settings.flag_file.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(settings.flag_file.with_name(settings.flag_file.name + ".lock")):
        yield


def rollback_flags(settings: Settings, collection: str | None = None) -> dict[str, FlagSnapshot]:
    """Serve every read of `collection` from legacy again, making legacy primary again from
    target-primary. Without a name: the defaults and every collection in the file, declared
    here or not, except those in phase target, which are left as they are (legacy is behind
    there). No data moves: legacy never stopped receiving writes. Rollback needs no verify and
    no empty outbox."""
    with _flag_file_locked(settings):
        content = _flag_file(settings)
        path = str(settings.flag_file)
        if collection is not None:
            _check_declared(settings, [collection])
            names = [collection]
        else:
            names = sorted(set(settings.collections) | set(content.collections))
        updated = content
        if collection is None and content.over(settings.flags).phase is not Phase.TARGET:
            updated = updated.model_copy(update=_rolled_back_level(content, content.over(settings.flags)))
        overrides = dict(updated.collections)
        for name in names:
            old = content.resolve(name, settings.flags, path).flags
            if old.phase is Phase.TARGET and collection is None:
                # Left as it is, its own values pinned against the defaults' rollback.
                log.warning("rollback_skipped", collection=name, reason="phase target: legacy is behind")
                kept = _set_keys(overrides.get(name, FlagOverrides()))
                overrides[name] = FlagOverrides.model_validate(
                    {**kept, "phase": old.phase, "read_percent": old.read_percent}
                )
                continue
            if updated.resolve(name, settings.flags, path).flags == rolled_back(old):
                continue
            overrides[name] = FlagOverrides.model_validate(
                _rolled_back_level(overrides.get(name, FlagOverrides()), old)
            )
        return _write(settings, content, updated.model_copy(update={"collections": overrides}), force=True)


def _rolled_back_level(level: FlagOverrides, old: Flags) -> dict[str, Any]:
    """`level`'s values with phase and read_percent set to what a rollback of `old` gives."""
    new = rolled_back(old)
    return {**_set_keys(level), "phase": new.phase, "read_percent": new.read_percent}


def _set_keys(level: FlagOverrides) -> dict[str, Any]:
    return {key: getattr(level, key) for key in FLAG_KEYS if getattr(level, key) is not None}


def _write(settings: Settings, before: FlagFile, after: FlagFile, *, force: bool) -> dict[str, FlagSnapshot]:
    path = str(settings.flag_file)
    changed: dict[str, tuple[Flags, Flags]] = {}
    for name in settings.collections:
        old = before.resolve(name, settings.flags, path).flags
        new = after.resolve(name, settings.flags, path).flags
        if old != new:
            changed[name] = (old, new)
    if not force:
        for name, (old, new) in changed.items():
            try:
                check_change(old, new, StoredSyncState(settings, name))
            except ConfigError as exc:
                raise ConfigError(f"collection {name!r}: {exc}") from exc
    write_flag_file(settings.flag_file, after)
    for name, (old, new) in changed.items():
        if old.phase in _DUAL_WRITES and new.phase not in _DUAL_WRITES:
            StoredSyncState(settings, name).forget()
        log.info("flags_set", collection=name, **new.model_dump(mode="json"))
    written = read_flag_file(settings.flag_file) or after
    return {name: written.resolve(name, settings.flags, path) for name in settings.collections}


def record_verify(settings: Settings, collection: str, result: VerifyResult) -> None:
    """Keep a verify's result where the rules look for it (`StoredSyncState.verify_problem`)."""
    legacy_url, target_url = settings.urls(collection)
    write_verify_state(
        settings.state_file("verify", collection),
        result,
        collection=collection,
        legacy_url=legacy_url,
        target_url=target_url,
    )


def verify_collection(
    settings: Settings,
    collection: str,
    stores: Mapping[Role, VectorStore],
    outbox: Outbox,
    **options: Any,
) -> VerifyResult:
    """Verify `collection`'s two stores against the primary its phase names and record the
    result where the rules look for it: what the CLI, the service's jobs and the demo run.
    `options` go to `dualvec.verify.verify`; the checkpoint defaults to the collection's own."""
    primary, _ = write_roles(collection_flags(settings, collection).flags.phase)
    if options.get("checkpoint") is None:
        options["checkpoint"] = settings.state_file("verify-progress", collection).with_suffix(".db")
    result = verify(stores["legacy"], stores["target"], outbox, primary=primary, **options)
    record_verify(settings, collection, result)
    return result


def copy_problem(settings: Settings, collection: str, command: str) -> str | None:
    """Why `command` must not copy into `collection`'s target in the phase in force, None when
    it may: live writes must reach the target too (phase dual or target-primary), or a write
    landing after the copy would leave the target behind."""
    phase = collection_flags(settings, collection).flags.phase
    if phase in _DUAL_WRITES:
        return None
    if phase is Phase.LEGACY:
        first = "run `dualvec flags set phase=dual` first, so every write reaches both stores"
    else:
        first = "legacy no longer receives writes in phase target, so it is behind the target"
    return (
        f"refusing to {command} collection {collection!r} in phase {phase.value}: {first} (or pass --force)"
    )


def settle_seconds(settings: Settings) -> float:
    """How long to wait before copying, so that every process has picked up the last flag
    change: a process still in phase legacy writes to legacy alone, and a copy made before its
    write would miss it."""
    content = read_flag_file(settings.flag_file)
    if content is None or content.updated_at is None:
        return 0.0
    return max(0.0, settings.flag_poll_seconds + 0.5 - (time.time() - content.updated_at))
