"""The root command group; each subcommand lives in its own module."""

from __future__ import annotations

import os

import click

from dualvec import __version__
from dualvec.cli.doctor import doctor
from dualvec.cli.flags import flags, rollback
from dualvec.cli.replay import replay
from dualvec.cli.status import status

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dualvec")
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    envvar="DUALVEC_CONFIG",
    help="TOML settings file (default: config/dualvec.toml when present).",
)
def cli(config: str | None) -> None:
    """Migrate a vector index to sqlite-vec with dual writes, sticky read ramps and shadow reads.

    Exit codes: 0 ok, 1 error, 2 usage, 3 verify found differences, 130 interrupted.
    """
    if config:
        os.environ["DUALVEC_CONFIG"] = config


for command in (doctor, flags, rollback, replay, status):
    cli.add_command(command)


def main() -> None:
    cli()
