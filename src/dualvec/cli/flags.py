"""`dualvec flags show|set` and `dualvec rollback`: the operator's switches."""

from __future__ import annotations

import os
from typing import Any

import click
from pydantic import ValidationError

from dualvec.cli.common import echo_json, errors_exit, settings
from dualvec.errors import ConfigError
from dualvec.flags import FlagSnapshot, read_flag_file, write_flag_file
from dualvec.outbox import Outbox
from dualvec.settings import Flags, Phase, Settings, config_path
from dualvec.verify import read_verify_state

__all__ = ["flags", "rollback"]

_DUAL_WRITES = (Phase.DUAL, Phase.TARGET_PRIMARY)


def current_flags(config: Settings) -> FlagSnapshot:
    return read_flag_file(config.flag_file) or FlagSnapshot(config.flags, "settings")


def unverified(config: Settings) -> str | None:
    """Why the target is not known to hold what the primary holds, None when the last
    `dualvec verify` of these two stores was clean."""
    state = read_verify_state(config.state_file("verify"))
    if state is None:
        return f"no verify of collection {config.collection!r} has run"
    compared = (state.get("collection"), state.get("legacy_url"), state.get("target_url"))
    if compared != (config.collection, config.legacy_url, config.target_url):
        return f"the last verify compared other stores ({', '.join(map(str, compared))})"
    if not state["clean"]:
        return f"the last verify found {state.get('differences')} differences"
    return None


def check_guards(config: Settings, old: Flags, new: Flags) -> None:
    """Refuse steps that would lose data or serve unverified reads."""
    if new.read_percent > old.read_percent:
        problem = unverified(config)
        if problem:
            raise ConfigError(
                f"refusing read_percent={new.read_percent:g}: {problem}; run `dualvec verify --repair` "
                "then `dualvec verify` until it exits 0 (or pass --force)"
            )
    leaving_dual_writes = old.phase in _DUAL_WRITES and new.phase not in _DUAL_WRITES
    if (new.phase is Phase.TARGET_PRIMARY and old.phase is not Phase.TARGET_PRIMARY) or leaving_dual_writes:
        depth = Outbox.peek(config.outbox_path, config.collection).depth
        if depth:
            raise ConfigError(
                f"refusing phase {new.phase.value}: {depth} writes still wait in the outbox; "
                "run `dualvec replay` until it is empty (or pass --force)"
            )
    if new.phase is Phase.TARGET_PRIMARY and old.phase is not Phase.TARGET_PRIMARY:
        if old.phase is not Phase.DUAL:
            raise ConfigError(
                f"refusing phase target-primary from {old.phase.value}: go through dual, backfill "
                "and a clean verify first (or pass --force)"
            )
        problem = unverified(config)
        if problem:
            raise ConfigError(
                f"refusing phase target-primary: {problem}; run `dualvec verify --repair` then "
                "`dualvec verify` until it exits 0 (or pass --force)"
            )
    if new.phase is Phase.TARGET and old.phase is not Phase.TARGET_PRIMARY:
        raise ConfigError(
            f"refusing phase target from {old.phase.value}: go through target-primary first (or pass --force)"
        )


def forget_sync(config: Settings) -> None:
    """Once one store stops receiving writes, a past clean verify and a finished backfill say
    nothing about the stores any more: drop both, so the guards ask for them again."""
    for kind in ("verify", "backfill"):
        config.state_file(kind).unlink(missing_ok=True)


def write_flags(config: Settings, old: Flags, new: Flags) -> FlagSnapshot:
    """Write the flag file every process follows, refusing a path no service can be reading."""
    if config_path() is None and "DUALVEC_FLAG_FILE" not in os.environ:
        raise ConfigError(
            "no config file (config/dualvec.toml or DUALVEC_CONFIG) and no DUALVEC_FLAG_FILE: "
            f"refusing to write {config.flag_file.resolve()}, which no running service may read"
        )
    write_flag_file(config.flag_file, new)
    if {old.phase, new.phase} & {Phase.DUAL, Phase.TARGET_PRIMARY} and new.phase in (
        Phase.LEGACY,
        Phase.TARGET,
    ):
        forget_sync(config)
    return FlagSnapshot(new, str(config.flag_file.resolve()))


def _show(snapshot: FlagSnapshot, as_json: bool) -> None:
    data = {**snapshot.flags.model_dump(mode="json"), "source": snapshot.source}
    if as_json:
        echo_json(data)
    else:
        for key, value in data.items():
            click.echo(f"{key:<15} {value}")


@click.group()
def flags() -> None:
    """Show or change the live flags every dualvec process follows."""


@flags.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def show(as_json: bool) -> None:
    """Print the flags in force and where they come from."""
    config = settings()
    with errors_exit():
        _show(current_flags(config), as_json)


@flags.command("set")
@click.argument("assignments", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Skip the safety checks.")
@click.option("--json", "as_json", is_flag=True, help="Print the new flags as JSON.")
def set_flags(assignments: tuple[str, ...], force: bool, as_json: bool) -> None:
    """Set flags, e.g. `dualvec flags set read_percent=50 shadow_percent=100`.

    Keys: phase (legacy, dual, target-primary, target), read_percent, shadow_percent.
    """
    config = settings()
    changes: dict[str, Any] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or key not in Flags.model_fields:
            raise click.UsageError(
                f"{item!r}: expected KEY=VALUE with KEY one of {sorted(Flags.model_fields)}"
            )
        changes[key] = value
    with errors_exit():
        old = current_flags(config).flags
        try:
            new = Flags.model_validate({**old.model_dump(), **changes})
        except ValidationError as exc:
            error = exc.errors()[0]
            raise click.BadParameter(f"{error['loc'][0]}: {error['msg']}", param_hint="ASSIGNMENTS") from exc
        if not force:
            check_guards(config, old, new)
        _show(write_flags(config, old, new), as_json)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the new flags as JSON.")
def rollback(as_json: bool) -> None:
    """Serve every read from legacy again (and make legacy primary again from target-primary).

    No data moves: the store rolled back to never stopped receiving writes.
    """
    config = settings()
    with errors_exit():
        old = current_flags(config).flags
        if old.phase is Phase.TARGET:
            raise ConfigError(
                "phase target stopped writing to legacy, so it is behind; rolling back now would "
                "serve stale data. Set phase target-primary only after re-syncing legacy."
            )
        phase = Phase.DUAL if old.phase is Phase.TARGET_PRIMARY else old.phase
        new = old.model_copy(update={"read_percent": 0.0, "phase": phase})
        _show(write_flags(config, old, new), as_json)
