"""`dualvec backfill`: copy what legacy held before dual writes into sqlite-vec, resumably."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
from rich.progress import Progress as ProgressBar

from dualvec.backfill import (
    DEFAULT_BATCH_SIZE,
    BackfillPlan,
    Progress,
    ProgressCallback,
    backfill,
    plan_backfill,
)
from dualvec.cli.common import echo_json, errors_exit, opened_stores, settings
from dualvec.cli.flags import current_flags
from dualvec.errors import ConfigError
from dualvec.outbox import Outbox
from dualvec.settings import Phase, Settings

__all__ = ["backfill_command", "phase_problem", "progress_reporter"]

# Plain progress lines (stderr not a terminal) at most this often, so logs stay readable.
_LINE_SECONDS = 2.0


def _describe(progress: Progress) -> str:
    eta = progress.eta_seconds
    return f"{progress.rate:,.0f} records/s, ETA " + ("-" if eta is None else f"{eta:,.0f} s")


@contextmanager
def progress_reporter(label: str, *, silent: bool) -> Iterator[ProgressCallback]:
    """A progress callback drawing on stderr: a rich bar on a terminal, else a line every few
    seconds; nothing with `silent`."""
    if silent:
        yield lambda progress: None
        return
    console = Console(stderr=True)
    if console.is_terminal:
        columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"))
        with ProgressBar(*columns, console=console) as bar:
            task = bar.add_task("", total=None)
            yield lambda p: bar.update(task, completed=p.done, total=p.total, description=_describe(p))
        return
    last = -_LINE_SECONDS

    def line(progress: Progress) -> None:
        nonlocal last
        if progress.elapsed - last >= _LINE_SECONDS or progress.done >= progress.total:
            last = progress.elapsed
            click.echo(
                f"{label}: {progress.done:,}/{progress.total:,} records, {_describe(progress)}", err=True
            )

    yield line


def phase_problem(config: Settings, command: str) -> str | None:
    """Why `command` must not copy into the target in the phase in force, None when it may: live
    writes must reach the target too (phase dual or target-primary), or a write landing after
    the copy would leave the target behind."""
    phase = current_flags(config).flags.phase
    if phase in (Phase.DUAL, Phase.TARGET_PRIMARY):
        return None
    if phase is Phase.LEGACY:
        first = "run `dualvec flags set phase=dual` first, so every write reaches both stores"
    else:
        first = "legacy no longer receives writes in phase target, so it is behind the target"
    return f"refusing to {command} in phase {phase.value}: {first} (or pass --force)"


def wait_for_flags(config: Settings) -> None:
    """Let every process pick up the last flag change before copying: a process still in phase
    legacy writes to legacy alone, and a copy made before its write would miss it."""
    snapshot = current_flags(config)
    if snapshot.updated_at is None:
        return
    settle = config.flag_poll_seconds + 0.5 - (time.time() - snapshot.updated_at)
    if settle > 0:
        click.echo(f"waiting {settle:.1f} s for every process to see the last flag change", err=True)
        time.sleep(settle)


@click.command("backfill")
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
    help="Progress file (default: backfill-<collection>.json next to the outbox).",
)
@click.option("--restart", is_flag=True, help="Ignore the checkpoint and copy every record again.")
@click.option("--dry-run", is_flag=True, help="Print the plan (counts, batches, checkpoint); write nothing.")
@click.option("--force", is_flag=True, help="Run whatever the phase.")
@click.option("--silent", is_flag=True, help="No progress on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def backfill_command(
    batch_size: int,
    checkpoint: Path | None,
    restart: bool,
    dry_run: bool,
    force: bool,
    silent: bool,
    as_json: bool,
) -> None:
    """Copy every legacy record into the target while live dual writes go on.

    Never overwrites a newer write nor brings back a deleted id. Interrupted or killed, run it
    again: it resumes from its checkpoint. Exits 0 when done, 1 on error, 130 when interrupted.
    """
    config = settings()
    path = checkpoint or config.state_file("backfill")
    with errors_exit():
        problem = None if force else phase_problem(config, "backfill")
        if problem and not dry_run:
            raise ConfigError(problem)
        if not dry_run:
            wait_for_flags(config)
        with opened_stores(config) as stores:
            if dry_run:
                plan = plan_backfill(
                    stores["legacy"],
                    stores["target"],
                    batch_size=batch_size,
                    checkpoint=path,
                    restart=restart,
                )
                _print_plan(plan, problem, as_json)
                return
            with (
                Outbox(config.outbox_path, config.collection) as outbox,
                progress_reporter("backfill", silent=silent) as on_progress,
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
    data = {**result.as_dict(), "checkpoint": str(path)}
    if as_json:
        echo_json(data)
    else:
        click.echo(" ".join(f"{key}={value}" for key, value in data.items()))


def _print_plan(plan: BackfillPlan, problem: str | None, as_json: bool) -> None:
    if as_json:
        echo_json({**plan.as_dict(), "dry_run": True, "refused": problem})
        return
    click.echo(
        f"would scan {plan.legacy_count} legacy records in {plan.batches} batches of {plan.batch_size} "
        f"(the target holds {plan.target_count})"
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
