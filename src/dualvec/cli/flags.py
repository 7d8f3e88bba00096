"""`dualvec flags show|set` and `dualvec rollback`: the operator's switches, per collection.

Every change goes through `dualvec.phases`, which holds the rules; this module only parses
and prints.
"""

from __future__ import annotations

from typing import Any

import click
from pydantic import ValidationError

from dualvec.cli.common import (
    chosen_collections,
    collection_option,
    echo_json,
    errors_exit,
    require_flag_file_read_by_services,
    settings,
)
from dualvec.cli.remote import remote_client
from dualvec.flags import FLAG_KEYS, FlagOverrides, FlagSnapshot, flags_report
from dualvec.phases import change_flags, collection_flags, rollback_flags

__all__ = ["flags", "rollback"]


def _show(report: dict[str, Any], as_json: bool) -> None:
    """Print a `flags_report` (built here, or answered by a service)."""
    if as_json:
        echo_json(report)
        return
    click.echo(f"{'collection':<16} {'phase':<15} {'read_percent':>12} {'shadow_percent':>14}  from")
    for name, entry in report["collections"].items():
        origins = sorted(set(entry["sources"].values()))
        click.echo(
            f"{name:<16} {entry['phase']:<15} {entry['read_percent']:>12g} {entry['shadow_percent']:>14g}  "
            + ", ".join(origins)
        )


def _selected(collection: str | None, snapshots: dict[str, FlagSnapshot]) -> dict[str, Any]:
    return flags_report(snapshots if collection is None else {collection: snapshots[collection]})


@click.group()
def flags() -> None:
    """Show or change the live flags every dualvec process follows."""


@flags.command("show")
@collection_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def show(collection: str | None, as_json: bool) -> None:
    """Print each collection's flags and where each value comes from."""
    remote = remote_client()
    if remote is not None:
        with errors_exit():
            _show(
                remote.call("GET", "/admin/flags", query=[("collection", collection)] if collection else []),
                as_json,
            )
        return
    config = settings()
    names = chosen_collections(config, [collection] if collection else [])
    with errors_exit():
        _show(flags_report({name: collection_flags(config, name) for name in names}), as_json)


@flags.command("set")
@click.argument("assignments", nargs=-1, required=True)
@collection_option
@click.option("--force", is_flag=True, help="Skip the safety checks.")
@click.option("--json", "as_json", is_flag=True, help="Print the new flags as JSON.")
def set_flags(assignments: tuple[str, ...], collection: str | None, force: bool, as_json: bool) -> None:
    """Set flags, e.g. `dualvec flags set --collection claims read_percent=50`.

    Keys: phase (legacy, dual, target-primary, target), read_percent, shadow_percent. Without
    --collection the values become the defaults of every collection that has no value of its
    own. The rules (a clean verify before reads, an empty outbox before target-primary, ...)
    are checked for each collection the change touches.
    """
    changes: dict[str, Any] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or key not in FLAG_KEYS:
            raise click.UsageError(f"{item!r}: expected KEY=VALUE with KEY one of {sorted(FLAG_KEYS)}")
        changes[key] = value
    try:
        FlagOverrides.model_validate(changes)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise click.BadParameter(f"{error['loc'][0]}: {error['msg']}", param_hint="ASSIGNMENTS") from exc
    remote = remote_client()
    if remote is not None:
        with errors_exit():
            body = {"collection": collection, "changes": changes, "force": force}
            _show(remote.call("POST", "/admin/flags", body), as_json)
        return
    config = settings()
    if collection is not None:
        chosen_collections(config, [collection])
    with errors_exit():
        require_flag_file_read_by_services(config)
        snapshots = change_flags(config, changes, collection=collection, force=force)
        _show(_selected(collection, snapshots), as_json)


@click.command()
@collection_option
@click.option("--json", "as_json", is_flag=True, help="Print the new flags as JSON.")
def rollback(collection: str | None, as_json: bool) -> None:
    """Serve every read from legacy again (and make legacy primary again from target-primary),
    for one collection or, without --collection, for every collection.

    No data moves: the store rolled back to never stopped receiving writes.
    """
    remote = remote_client()
    if remote is not None:
        with errors_exit():
            _show(remote.call("POST", "/admin/rollback", {"collection": collection}), as_json)
        return
    config = settings()
    if collection is not None:
        chosen_collections(config, [collection])
    with errors_exit():
        require_flag_file_read_by_services(config)
        snapshots = rollback_flags(config, collection)
        _show(_selected(collection, snapshots), as_json)
