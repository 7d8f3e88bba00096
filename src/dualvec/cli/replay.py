"""`dualvec replay`: repair every id waiting in the outbox, from the store that was primary."""

from __future__ import annotations

import click

from dualvec.cli.common import (
    EXIT_ERROR,
    chosen_collections,
    collections_option,
    echo_json,
    errors_exit,
    opened_stores,
    settings,
)
from dualvec.cli.remote import remote_client
from dualvec.outbox import Outbox
from dualvec.replay import replay_until_drained

__all__ = ["replay"]


@click.command()
@collections_option
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def replay(collections: tuple[str, ...], batch_size: int, as_json: bool) -> None:
    """Make the secondary store equal to the primary for every pending intent, collection by
    collection.

    Safe beside running writers and other replayers. Exits 1 if some ids could not be repaired.
    """
    summary: dict[str, dict[str, int]]
    remote = remote_client()
    if remote is not None:
        with errors_exit():
            body = {"collections": list(collections) or None, "batch_size": batch_size}
            summary = remote.call("POST", "/admin/replay", body)["collections"]
        _print(summary, as_json)
        return
    config = settings()
    names = chosen_collections(config, collections)
    summary = {}
    with errors_exit():
        for name in names:
            with opened_stores(config, name) as stores, Outbox(config.outbox_path, name) as outbox:
                total = replay_until_drained(outbox, stores, batch_size)
                remaining = outbox.stats().depth
            summary[name] = {
                "upserted": total.upserted,
                "deleted": total.deleted,
                "failed": total.failed,
                "remaining": remaining,
            }
    _print(summary, as_json)


def _print(summary: dict[str, dict[str, int]], as_json: bool) -> None:
    """Print per-collection counts (worked out here, or answered by a service); exit 1 when some
    ids remain."""
    if as_json:
        echo_json({"collections": summary})
    else:
        for name, counts in summary.items():
            click.echo(f"{name}: " + " ".join(f"{k}={v}" for k, v in counts.items()))
    if any(counts["remaining"] for counts in summary.values()):
        raise SystemExit(EXIT_ERROR)
