"""`dualvec status`: where each collection's migration stands, in one screen or one JSON object."""

from __future__ import annotations

from typing import Any

import click

from dualvec.cli.common import chosen_collections, collections_option, echo_json, errors_exit, settings
from dualvec.cli.remote import remote_client
from dualvec.errors import DualvecError
from dualvec.outbox import Outbox
from dualvec.phases import collection_flags
from dualvec.registry import open_store
from dualvec.settings import Settings

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


def collection_status(config: Settings, name: str) -> dict[str, Any]:
    """Phase, flags and their sources, record counts per store, outbox depth and oldest age."""
    snapshot = collection_flags(config, name)
    legacy_spec, target_spec = config.specs(name)
    legacy_url, target_url = config.urls(name)
    stats = Outbox.peek(config.outbox_path, name)
    return {
        **snapshot.flags.model_dump(mode="json"),
        "sources": dict(snapshot.sources),
        "legacy": {"url": legacy_url, "count": _count(legacy_url, legacy_spec)},
        "target": {"url": target_url, "count": _count(target_url, target_spec)},
        "outbox": {"depth": stats.depth, "oldest_age_seconds": round(stats.oldest_age_seconds, 3)},
    }


@click.command()
@collections_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def status(collections: tuple[str, ...], as_json: bool) -> None:
    """Each collection's phase, flags and their source, record counts per store, outbox depth
    and oldest age (with --server: as the service sees them)."""
    remote = remote_client()
    if remote is not None:
        with errors_exit():
            data = remote.call("GET", "/admin/status", query=[("collection", name) for name in collections])
    else:
        config = settings()
        names = chosen_collections(config, collections)
        with errors_exit():
            data = {"collections": {name: collection_status(config, name) for name in names}}
    if as_json:
        echo_json(data)
        return
    for name, entry in data["collections"].items():
        origins = ", ".join(sorted(set(entry["sources"].values())))
        click.echo(f"{name}")
        click.echo(f"  phase           {entry['phase']}   (from {origins})")
        click.echo(f"  read_percent    {entry['read_percent']}")
        click.echo(f"  shadow_percent  {entry['shadow_percent']}")
        for role in ("legacy", "target"):
            click.echo(f"  {role:<15} {entry[role]['count']} records   {entry[role]['url']}")
        depth, age = entry["outbox"]["depth"], entry["outbox"]["oldest_age_seconds"]
        click.echo(f"  outbox          {depth} pending, oldest {age:.1f} s")
