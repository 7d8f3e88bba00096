"""`dualvec backfill`: copy what legacy held before dual writes into sqlite-vec, resumably."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from dualvec.backfill import BackfillPlan, backfill, plan_backfill
from dualvec.cli.common import (
    chosen_collections,
    collections_option,
    echo_json,
    errors_exit,
    opened_stores,
    settings,
)
from dualvec.cli.progress import progress_reporter
from dualvec.cli.remote import remote_client, run_job, unsupported
from dualvec.errors import ConfigError
from dualvec.outbox import Outbox
from dualvec.phases import copy_problem, settle_seconds
from dualvec.progress import DEFAULT_BATCH_SIZE

__all__ = ["backfill_command"]


@click.command("backfill")
@collections_option
@click.option(
    "--batch-size",
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Records per batch; live writers wait at most one batch's copy.",
)
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Progress file, for one collection (default: backfill-<collection>.json next to the outbox).",
)
@click.option("--restart", is_flag=True, help="Ignore the checkpoint and copy every record again.")
@click.option("--dry-run", is_flag=True, help="Print the plan (counts, batches, checkpoint); write nothing.")
@click.option("--force", is_flag=True, help="Run whatever the phase.")
@click.option("--silent", is_flag=True, help="No progress on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def backfill_command(
    collections: tuple[str, ...],
    batch_size: int,
    checkpoint: Path | None,
    restart: bool,
    dry_run: bool,
    force: bool,
    silent: bool,
    as_json: bool,
) -> None:
    """Copy every legacy record into the target while live dual writes go on, collection by
    collection (every declared one unless --collection names some).

    Never overwrites a newer write nor brings back a deleted id. Interrupted or killed, run it
    again: it resumes from its checkpoint. Exits 0 when done, 1 on error, 130 when interrupted.
    With --server the service runs it as a job, on the stores it holds open.
    """
    remote = remote_client()
    if remote is not None:
        unsupported("--checkpoint", checkpoint)
        unsupported("--dry-run", dry_run)
        body = {
            "kind": "backfill",
            "collections": list(collections) or None,
            "batch_size": batch_size,
            "restart": restart,
            "force": force,
        }
        with errors_exit():
            remote_summary: dict[str, Any] = run_job(remote, body, silent=silent)["collections"]
        if not as_json:
            for name, entry in remote_summary.items():
                _print_done(name, entry)
        else:
            echo_json({"collections": remote_summary})
        return
    config = settings()
    names = chosen_collections(config, collections)
    if checkpoint is not None and len(names) > 1:
        raise click.UsageError("--checkpoint names one collection's progress file: add --collection NAME")
    summary: dict[str, Any] = {}
    with errors_exit():
        problems = {name: None if force else copy_problem(config, name, "backfill") for name in names}
        refused = [problem for problem in problems.values() if problem]
        if refused and not dry_run:
            raise ConfigError("; ".join(refused))
        settle = 0.0 if dry_run else settle_seconds(config)
        if settle:
            click.echo(f"waiting {settle:.1f} s for every process to see the last flag change", err=True)
            time.sleep(settle)
        for name in names:
            path = checkpoint or config.state_file("backfill", name)
            with opened_stores(config, name) as stores:
                if dry_run:
                    plan = plan_backfill(
                        stores["legacy"],
                        stores["target"],
                        batch_size=batch_size,
                        checkpoint=path,
                        restart=restart,
                    )
                    summary[name] = {**plan.as_dict(), "dry_run": True, "refused": problems[name]}
                    if not as_json:
                        _print_plan(name, plan, problems[name])
                    continue
                with (
                    Outbox(config.outbox_path, name) as outbox,
                    progress_reporter(f"backfill {name}", silent=silent) as on_progress,
                ):
                    result = backfill(
                        stores["legacy"],
                        stores["target"],
                        outbox,
                        batch_size=batch_size,
                        checkpoint=path,
                        restart=restart,
                        on_progress=on_progress,
                    )
            summary[name] = {**result.as_dict(), "checkpoint": str(path)}
            if not as_json:
                _print_done(name, summary[name])
    if as_json:
        echo_json({"collections": summary})


def _print_done(name: str, entry: dict[str, Any]) -> None:
    click.echo(f"{name}: " + " ".join(f"{key}={value}" for key, value in entry.items()))


def _print_plan(name: str, plan: BackfillPlan, problem: str | None) -> None:
    click.echo(
        f"{name}: would scan {plan.legacy_count} legacy records in {plan.batches} batches of "
        f"{plan.batch_size} (the target holds {plan.target_count})"
    )
    if plan.resume_from:
        state = "complete" if plan.checkpoint_complete else "interrupted"
        click.echo(
            f"checkpoint {plan.checkpoint}: {state} at {plan.resume_from} records; those are copied "
            "again only where the target lacks them"
        )
    else:
        click.echo(f"checkpoint {plan.checkpoint}: none, starting from the beginning")
    if problem:
        click.echo(f"warning: {problem}", err=True)
