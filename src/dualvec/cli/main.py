"""The root command group; each subcommand lives in its own module."""

from __future__ import annotations

import click

from dualvec import __version__
from dualvec.cli.doctor import doctor

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dualvec")
def cli() -> None:
    """Migrate a vector index to sqlite-vec with dual writes, sticky read ramps and shadow reads."""


cli.add_command(doctor)


def main() -> None:
    cli()
