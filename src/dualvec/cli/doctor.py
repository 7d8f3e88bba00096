"""`dualvec doctor`: can dualvec run on this machine, and with which SQLite driver."""

from __future__ import annotations

import json
import sys

import click

from dualvec.doctor import diagnose

__all__ = ["doctor"]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def doctor(as_json: bool) -> None:
    """Report Python, the SQLite driver chosen, sqlite-vec's version and each backend.

    Exits 1 when sqlite-vec cannot load, saying what to install.
    """
    report = diagnose()
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        click.echo(f"python            {report.python} ({report.executable})")
        click.echo(f"platform          {report.platform}")
        click.echo(
            "stdlib sqlite3    "
            + ("can load extensions" if report.stdlib_can_load_extensions else "cannot load extensions")
        )
        click.echo(f"sqlite driver     {report.driver or 'none'}")
        click.echo(f"sqlite version    {report.driver_sqlite_version or '-'}")
        click.echo(f"sqlite-vec        {report.sqlite_vec_version or 'NOT LOADABLE'}")
        for backend in report.backends:
            state = "ok" if backend.available else "unavailable"
            versions = ", ".join(f"{k} {v}" for k, v in backend.versions.items())
            line = f"backend {backend.scheme:<13} {state:<12} {versions}"
            click.echo(line.rstrip() + (f"\n    {backend.problem}" if backend.problem else ""))
        for problem in report.problems:
            click.echo(f"problem: {problem}", err=True)
    sys.exit(0 if report.ok else 1)
