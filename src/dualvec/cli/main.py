"""The root command group; each subcommand lives in its own module."""

from __future__ import annotations

import os

import click

from dualvec import __version__, configure_logging
from dualvec.cli.backfill import backfill_command
from dualvec.cli.bench import bench
from dualvec.cli.demo import demo
from dualvec.cli.doctor import doctor
from dualvec.cli.flags import flags, rollback
from dualvec.cli.mismatches import mismatches
from dualvec.cli.ramp import ramp
from dualvec.cli.remote import REMOTE_COMMANDS
from dualvec.cli.replay import replay
from dualvec.cli.serve import serve
from dualvec.cli.status import status
from dualvec.cli.verify import verify_command

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dualvec")
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    envvar="DUALVEC_CONFIG",
    help="TOML settings file (default: config/dualvec.toml when present).",
)
@click.option(
    "--server",
    envvar="DUALVEC_SERVER",
    metavar="URL",
    help="Run the command through this `dualvec serve` (status, flags, rollback, replay, backfill, "
    "verify, ramp): no config file, no store opened here. Sends DUALVEC_ADMIN_TOKEN as a bearer token.",
)
@click.option("--log-level", default="INFO", show_default=True, help="Log level on stderr.")
@click.option("--log-json/--log-console", default=None, help="Log format (default: console on a terminal).")
@click.pass_context
def cli(
    ctx: click.Context, config: str | None, server: str | None, log_level: str, log_json: bool | None
) -> None:
    """Migrate a vector index to sqlite-vec with dual writes, sticky read ramps and shadow reads.

    Exit codes: 0 ok, 1 error, 2 usage, 3 verify found differences, 4 the guard rolled a ramp
    back, 130 interrupted.
    """
    configure_logging(json=log_json, level=log_level)
    if config:
        os.environ["DUALVEC_CONFIG"] = config
    if server and ctx.invoked_subcommand in REMOTE_COMMANDS:
        ctx.obj = {"server": server}
    elif server and ctx.get_parameter_source("server") is click.core.ParameterSource.COMMANDLINE:
        # From DUALVEC_SERVER, the other commands (serve, demo, ...) just run locally.
        raise click.UsageError(
            f"--server runs only {', '.join(sorted(REMOTE_COMMANDS))}, not {ctx.invoked_subcommand}"
        )


for command in (
    bench,
    demo,
    backfill_command,
    doctor,
    flags,
    mismatches,
    ramp,
    rollback,
    replay,
    serve,
    status,
    verify_command,
):
    cli.add_command(command)


def main() -> None:
    cli()
