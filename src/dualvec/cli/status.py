"""`dualvec status`: where the migration stands, in one screen or one JSON object."""

from __future__ import annotations

from typing import Any

import click

from dualvec.cli.common import echo_json, errors_exit, settings
from dualvec.cli.flags import current_flags
from dualvec.errors import DualvecError
from dualvec.outbox import Outbox
from dualvec.registry import open_store

__all__ = ["status"]


def _count(url: str, spec: Any) -> int | str:
    """A store's record count, or why it could not be read (e.g. Qdrant's lock is held)."""
    try:
        store = open_store(url, spec)
    except DualvecError as exc:
        return f"unavailable: {exc}"
    try:
        return store.count()
    finally:
        store.close()


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def status(as_json: bool) -> None:
    """Phase, flags and their source, record counts per store, outbox depth and oldest age."""
    config = settings()
    with errors_exit():
        snapshot = current_flags(config)
        legacy_spec, target_spec = config.specs()
        stats = Outbox.peek(config.outbox_path, config.collection)
        data = {
            "collection": config.collection,
            **snapshot.flags.model_dump(mode="json"),
            "flags_source": snapshot.source,
            "legacy": {"url": config.legacy_url, "count": _count(config.legacy_url, legacy_spec)},
            "target": {"url": config.target_url, "count": _count(config.target_url, target_spec)},
            "outbox": {"depth": stats.depth, "oldest_age_seconds": round(stats.oldest_age_seconds, 3)},
        }
    if as_json:
        echo_json(data)
        return
    click.echo(f"collection      {data['collection']}")
    click.echo(f"phase           {snapshot.flags.phase.value}   (from {snapshot.source})")
    click.echo(f"read_percent    {snapshot.flags.read_percent}")
    click.echo(f"shadow_percent  {snapshot.flags.shadow_percent}")
    for role in ("legacy", "target"):
        click.echo(f"{role:<15} {data[role]['count']} records   {data[role]['url']}")
    click.echo(f"outbox          {stats.depth} pending, oldest {stats.oldest_age_seconds:.1f} s")
