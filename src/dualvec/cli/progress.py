"""Progress of a long pass on stderr, for every command that makes one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
from rich.progress import Progress as ProgressBar

from dualvec.progress import Progress, ProgressCallback

__all__ = ["progress_reporter"]

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
