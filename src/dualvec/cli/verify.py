"""`dualvec verify [--repair]`: do both stores hold the same records? Exit 0 yes, 3 no."""

from __future__ import annotations

from pathlib import Path

import click

from dualvec.backfill import DEFAULT_BATCH_SIZE
from dualvec.cli.backfill import progress_reporter
from dualvec.cli.common import EXIT_DIFFERENCES, echo_json, errors_exit, opened_stores, settings
from dualvec.cli.flags import current_flags
from dualvec.outbox import Outbox
from dualvec.router import write_roles
from dualvec.verify import VerifyResult, verify, write_verify_state

__all__ = ["verify_command"]

_LABELS = {"missing": "missing in {secondary}", "extra": "extra in {secondary}"}


def _print(result: VerifyResult) -> None:
    click.echo(
        f"verify {result.primary} (primary) against {result.secondary}: "
        f"{result.checked['primary']} + {result.checked['secondary']} records in {result.seconds:.1f} s"
    )
    if result.before is not None and result.repaired is not None:
        found = sum(result.before.values())
        click.echo(
            f"repair: {found} differences found; replayed {result.repaired.upserted} upserts, "
            f"{result.repaired.deleted} deletes, {result.repaired.failed} failed"
        )
    for kind, count in result.counts.items():
        label = _LABELS.get(kind, f"{kind} differs").format(secondary=result.secondary)
        sample = result.samples[kind]
        click.echo(f"  {label:<20} {count}" + (f"   e.g. {', '.join(sample)}" if sample else ""))
    click.echo("clean" if result.clean else f"{result.differences} differences")


@click.command("verify")
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
    help="Progress file (default: verify-progress-<collection>.db next to the outbox).",
)
@click.option("--restart", is_flag=True, help="Ignore the checkpoint and start from the beginning.")
@click.option("--silent", is_flag=True, help="No progress on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def verify_command(
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
    interrupted (run it again to resume).
    """
    config = settings()
    with errors_exit():
        primary, _ = write_roles(current_flags(config).flags.phase)
        with (
            opened_stores(config) as stores,
            Outbox(config.outbox_path, config.collection) as outbox,
            progress_reporter("verify", silent=silent) as on_progress,
        ):
            result = verify(
                stores["legacy"],
                stores["target"],
                outbox,
                primary=primary,
                repair=repair,
                tolerance=tolerance,
                sample=sample,
                batch_size=batch_size,
                checkpoint=checkpoint or config.state_file("verify-progress").with_suffix(".db"),
                restart=restart,
                on_progress=on_progress,
            )
        write_verify_state(
            config.state_file("verify"),
            result,
            collection=config.collection,
            legacy_url=config.legacy_url,
            target_url=config.target_url,
        )
    if as_json:
        echo_json(result.as_dict())
    else:
        _print(result)
    if not result.clean:
        raise SystemExit(EXIT_DIFFERENCES)
