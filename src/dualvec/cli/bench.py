"""`dualvec bench`: the configured stores' search latency and agreement on your own data."""

from __future__ import annotations

import click

from dualvec.bench import bench_stores
from dualvec.cli.common import (
    chosen_collections,
    collections_option,
    echo_json,
    errors_exit,
    opened_stores,
    settings,
)

__all__ = ["bench"]


@click.command()
@collections_option
@click.option("--queries", default=200, show_default=True, type=click.IntRange(1, 100_000))
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(1, 4096))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def bench(collections: tuple[str, ...], queries: int, k: int, as_json: bool) -> None:
    """Search both stores of each collection with vectors from it: p50/p95/p99 and recall@k.

    Read-only. Run it before ramping reads to see what the ramp will do to latency.
    """
    config = settings()
    names = chosen_collections(config, collections)
    results = {}
    with errors_exit():
        for name in names:
            with opened_stores(config, name) as stores:
                try:
                    results[name] = bench_stores(stores["legacy"], stores["target"], queries=queries, k=k)
                except ValueError as exc:
                    raise click.ClickException(f"{name}: {exc}") from exc
    if as_json:
        echo_json({"collections": {name: result.as_dict() for name, result in results.items()}})
        return
    for name, result in results.items():
        click.echo(f"{name}: {result.queries} queries, k={result.k}")
        for store, ms in (("legacy", result.legacy_ms), ("target", result.target_ms)):
            click.echo(f"  {store:<7} " + "  ".join(f"{q} {v:.2f} ms" for q, v in ms.items()))
        click.echo(f"  target p50 / legacy p50: {result.target_over_legacy_p50:.2f}")
        click.echo(f"  target recall@{result.k} against legacy: {result.mean_recall:.4f}")
