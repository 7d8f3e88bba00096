"""`dualvec replay`: repair every id waiting in the outbox, from the store that was primary."""

from __future__ import annotations

import click

from dualvec.cli.common import EXIT_ERROR, echo_json, errors_exit, opened_stores, settings
from dualvec.outbox import Outbox
from dualvec.replay import ReplayResult, replay_once

__all__ = ["replay"]


@click.command()
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def replay(batch_size: int, as_json: bool) -> None:
    """Make the secondary store equal to the primary for every pending intent.

    Safe beside running writers and other replayers. Exits 1 if some ids could not be repaired.
    """
    config = settings()
    with (
        errors_exit(),
        opened_stores(config) as stores,
        Outbox(config.outbox_path, config.collection) as outbox,
    ):
        total = ReplayResult()
        while outbox.stats().depth:
            result = replay_once(outbox, stores, batch_size)
            total += result
            if result.failed:
                break
        remaining = outbox.stats().depth
    summary = {
        "upserted": total.upserted,
        "deleted": total.deleted,
        "failed": total.failed,
        "remaining": remaining,
    }
    if as_json:
        echo_json(summary)
    else:
        click.echo(" ".join(f"{k}={v}" for k, v in summary.items()))
    if remaining:
        raise SystemExit(EXIT_ERROR)
