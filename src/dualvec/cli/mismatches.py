"""`dualvec mismatches`: the latest shadow mismatch samples, newest first."""

from __future__ import annotations

from pathlib import Path

import click

from dualvec.cli.common import echo_json, settings
from dualvec.mismatch_log import MismatchLog, MismatchSample
from dualvec.records import Hit

__all__ = ["mismatches"]


def _cell(hits: tuple[Hit, ...], rank: int, width: int) -> str:
    if rank >= len(hits):
        return " " * (width + 11)
    return f"{hits[rank].id:<{width}} {hits[rank].distance:>10.6f}"


def _render(sample: MismatchSample) -> list[str]:
    delta = "-" if sample.max_distance_delta is None else f"{sample.max_distance_delta:.3g}"
    lines = [
        f"{sample.timestamp}  {sample.collection or '-'}  query {sample.query_id}  "
        f"key {sample.routing_key_hash or '-'}  served {sample.served_store}  k {sample.k}  "
        f"recall {sample.recall:.3f}  rank {sample.rank_agreement:.3f}  max delta {delta}",
        *(f"  {reason}" for reason in sample.reasons),
    ]
    width = max((len(h.id) for h in (*sample.legacy, *sample.target)), default=2)
    lines.append(f"  {'#':>4}  {'legacy':<{width + 11}}  target")
    for rank in range(max(len(sample.legacy), len(sample.target))):
        legacy, target = _cell(sample.legacy, rank, width), _cell(sample.target, rank, width)
        lines.append(f"  {rank + 1:>4}  {legacy}  {target}".rstrip())
    return lines


@click.command()
@click.option(
    "--path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The mismatch log; default: shadow.mismatch_log from the settings.",
)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="How many samples.")
@click.option("--collection", default=None, metavar="NAME", help="Only this collection's samples.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array on stdout.")
def mismatches(path: Path | None, limit: int, collection: str | None, as_json: bool) -> None:
    """Show the latest shadow mismatches: both top-k answers (ids, distances) and why they differ.

    Exits 0 even when there are none; a log that does not exist yet is reported on stderr.
    """
    log_path = path if path is not None else settings().shadow.mismatch_log
    if not log_path.exists():
        click.echo(f"no mismatch recorded at {log_path}", err=True)
    log = MismatchLog(log_path)
    samples = [s for s in log.latest(log.max_samples) if collection in (None, s.collection)][:limit]
    if as_json:
        echo_json([s.to_dict() for s in samples])
        return
    for i, sample in enumerate(samples):
        if i:
            click.echo()
        click.echo("\n".join(_render(sample)))
