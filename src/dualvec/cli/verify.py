"""`dualvec verify [--repair]`: do both stores hold the same records? Exit 0 yes, 3 no."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from dualvec.cli.common import (
    EXIT_DIFFERENCES,
    chosen_collections,
    collections_option,
    echo_json,
    errors_exit,
    opened_stores,
    settings,
)
from dualvec.cli.progress import progress_reporter
from dualvec.cli.remote import remote_client, run_job, unsupported
from dualvec.outbox import Outbox
from dualvec.phases import verify_collection
from dualvec.progress import DEFAULT_BATCH_SIZE

__all__ = ["verify_command"]

_LABELS = {"missing": "missing in {secondary}", "extra": "extra in {secondary}"}


def _print(name: str, result: dict[str, Any]) -> None:
    """Print one collection's `VerifyResult.as_dict()` (worked out here, or by a service)."""
    click.echo(
        f"{name}: verify {result['primary']} (primary) against {result['secondary']}: "
        f"{result['checked']['primary']} + {result['checked']['secondary']} records in "
        f"{result['seconds']:.1f} s"
    )
    before, repaired = result["before"], result["repaired"]
    if before is not None and repaired is not None:
        click.echo(
            f"repair: {sum(before.values())} differences found; replayed {repaired['upserted']} upserts, "
            f"{repaired['deleted']} deletes, {repaired['failed']} failed"
        )
    for kind, count in result["counts"].items():
        label = _LABELS.get(kind, f"{kind} differs").format(secondary=result["secondary"])
        sample = result["samples"][kind]
        click.echo(f"  {label:<20} {count}" + (f"   e.g. {', '.join(sample)}" if sample else ""))
    click.echo("clean" if result["clean"] else f"{result['differences']} differences")


def _finish(results: dict[str, dict[str, Any]], as_json: bool) -> None:
    """The JSON summary when asked for, and exit 3 unless every collection is clean."""
    clean = all(result["clean"] for result in results.values())
    if as_json:
        echo_json({"collections": results, "clean": clean})
    if not clean:
        raise SystemExit(EXIT_DIFFERENCES)


@click.command("verify")
@collections_option
@click.option("--repair", is_flag=True, help="Make the secondary equal to the primary, then verify again.")
@click.option(
    "--sample", default=5, show_default=True, type=click.IntRange(0, 1000), help="Ids shown per kind."
)
@click.option(
    "--tolerance",
    default=1e-6,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Vectors closer than this (relative and absolute, per component) are the same.",
)
@click.option("--batch-size", default=DEFAULT_BATCH_SIZE, show_default=True, type=click.IntRange(1, 100_000))
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Progress file, for one collection (default: verify-progress-<collection>.db next to the outbox).",
)
@click.option("--restart", is_flag=True, help="Ignore the checkpoint and start from the beginning.")
@click.option("--silent", is_flag=True, help="No progress on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def verify_command(
    collections: tuple[str, ...],
    repair: bool,
    sample: int,
    tolerance: float,
    batch_size: int,
    checkpoint: Path | None,
    restart: bool,
    silent: bool,
    as_json: bool,
) -> None:
    """Compare both stores id by id: ids missing from or extra in the secondary, vectors and
    metadata that differ. The primary is the phase's source of truth (legacy until
    target-primary).

    The result is kept next to the outbox (verify-<collection>.json): `flags set` sends reads to
    the target only after a clean one. Exits 0 when equal, 3 when not, 1 on error, 130 when
    interrupted (run it again to resume). With --server the service runs it as a job, on the
    stores it holds open, and keeps the result where its `flags set` looks.
    """
    remote = remote_client()
    if remote is not None:
        unsupported("--checkpoint", checkpoint)
        body = {
            "kind": "verify",
            "collections": list(collections) or None,
            "repair": repair,
            "sample": sample,
            "tolerance": tolerance,
            "batch_size": batch_size,
            "restart": restart,
        }
        with errors_exit():
            remote_results: dict[str, dict[str, Any]] = run_job(remote, body, silent=silent)["collections"]
        if not as_json:
            for name, entry in remote_results.items():
                _print(name, entry)
        _finish(remote_results, as_json)
        return
    config = settings()
    names = chosen_collections(config, collections)
    if checkpoint is not None and len(names) > 1:
        raise click.UsageError("--checkpoint names one collection's progress file: add --collection NAME")
    results: dict[str, dict[str, Any]] = {}
    with errors_exit():
        for name in names:
            with (
                opened_stores(config, name) as stores,
                Outbox(config.outbox_path, name) as outbox,
                progress_reporter(f"verify {name}", silent=silent) as on_progress,
            ):
                result = verify_collection(
                    config,
                    name,
                    stores,
                    outbox,
                    repair=repair,
                    tolerance=tolerance,
                    sample=sample,
                    batch_size=batch_size,
                    checkpoint=checkpoint,
                    restart=restart,
                    on_progress=on_progress,
                )
            results[name] = result.as_dict()
            if not as_json:
                _print(name, results[name])
    _finish(results, as_json)
