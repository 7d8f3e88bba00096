"""`dualvec ramp`: raise one collection's read_percent step by step under the guard
(`dualvec.guard.ramp` holds the loop; this module parses, picks where it runs, and prints).

Where the numbers come from decides where the ramp runs. A CLI process serves no traffic, so
its own metrics say nothing:

- `dualvec --server URL ramp ...`: the service runs the ramp on its own metrics (or on
  `--prometheus`), changes its flags through the phase rules and counts every decision in its
  /metrics; this command starts it, prints its events and waits for its end.
- `dualvec ramp --prometheus URL ...`: this process ramps the deployment's flag file, judging
  every process Prometheus scrapes (the fleet).
- `dualvec ramp --metrics-url URL ...`: the same, judging one process's /metrics (an
  application that embeds the router and exposes its metrics).
"""

from __future__ import annotations

import time
from typing import Any

import click
from pydantic import ValidationError

from dualvec.cli.common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_ROLLED_BACK,
    chosen_collections,
    echo_json,
    errors_exit,
    require_flag_file_read_by_services,
    settings,
)
from dualvec.cli.remote import Remote, RemoteError, remote_client, unsupported
from dualvec.guard.checks import CheckResult
from dualvec.guard.ramp import PhaseRulesControl, Ramp, RampPlan, parse_steps
from dualvec.guard.sources import ExpositionSource, PrometheusSource, SignalSource
from dualvec.settings import GuardSettings, parse_duration
from dualvec.spec import describe

__all__ = ["ramp"]

_POLL_SECONDS = 0.2
_EXIT_CODES = {"completed": 0, "rolled_back": EXIT_ROLLED_BACK}


def _checks(entry: dict[str, Any]) -> str:
    return ", ".join(CheckResult(name, **check).describe() for name, check in entry["checks"].items())


def print_event(event: dict[str, Any]) -> None:
    """One line on stderr per ramp event, the same whether the ramp runs here or in a service."""
    kind = event["event"]
    if kind == "started":
        guard = ", ".join(f"{key} {value}" for key, value in event["guard"].items())
        click.echo(
            f"ramping {event['collection']} (phase {event['phase']}, read_percent {event['read_percent']:g}) "
            f"through {', '.join(f'{s:g}' for s in event['steps'])}; one interval of "
            f"{event['interval_seconds']:g}s per step; signals: {event['source']}; guard: {guard}"
            + ("; dry run: no flag changes" if event["dry_run"] else ""),
            err=True,
        )
        if event["skipped"]:
            click.echo(
                f"skipping steps {', '.join(f'{s:g}' for s in event['skipped'])}: already past them", err=True
            )
    elif kind == "step":
        click.echo(f"step {event['step']}/{event['of']}: read_percent {event['read_percent']:g}", err=True)
    elif kind == "interval":
        failures = f"failed {event['failed_checks']}/{event['failure_limit']}"
        if event["checks"]:
            click.echo(
                f"  {event['verdict']} -> {event['action']} [{failures}]: {_checks(event)}",
                err=True,
            )
        else:
            click.echo(f"  {event['verdict']} -> {event['action']} [{failures}]: {event['reason']}", err=True)
    elif kind == "rolled_back":
        verb = "would roll back" if event["dry_run"] else "rolled back"
        click.echo(
            f"{verb}: {event['reason']} (cause {event['cause']}); phase {event['phase']}, "
            f"read_percent {event['read_percent']:g}",
            err=True,
        )
    elif kind == "completed":
        click.echo(f"completed: phase {event['phase']}, read_percent {event['read_percent']:g}", err=True)
    elif kind == "stopped":
        click.echo(f"stopped: phase {event['phase']}, read_percent {event['read_percent']:g}", err=True)


def _overrides(items: tuple[str, ...]) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in GuardSettings.model_fields or key in ("enabled", "interval"):
            keys = sorted(set(GuardSettings.model_fields) - {"enabled", "interval"})
            raise click.BadParameter(
                f"{item!r}: expected KEY=VALUE with KEY one of {keys}", param_hint="--guard"
            )
        found[key] = value
    return found


def _finish(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        echo_json(summary)
    code = _EXIT_CODES.get(summary["outcome"], EXIT_ERROR)
    if code:
        raise SystemExit(code)


def _through_service(remote: Remote, body: dict[str, Any], as_json: bool) -> None:
    with errors_exit():
        run = remote.call("POST", "/admin/ramps", body)
    shown = 0
    try:
        while True:
            for event in run["events"][shown:]:
                print_event(event)
            shown = len(run["events"])
            if run["state"] != "running":
                break
            time.sleep(_POLL_SECONDS)
            with errors_exit():
                run = remote.call("GET", f"/admin/ramps/{run['id']}")
    except KeyboardInterrupt as exc:
        with errors_exit():
            stopped = remote.call("DELETE", f"/admin/ramps/{run['id']}")
        for event in stopped["events"][shown:]:
            print_event(event)
        click.echo(
            "interrupted: the flags stay as they are; run the same command again to continue", err=True
        )
        raise SystemExit(EXIT_INTERRUPTED) from exc
    if run["state"] == "failed":
        with errors_exit():
            raise RemoteError(run["error"]["message"])
    if run["state"] == "stopped":
        click.echo(
            "error: the service stopped the ramp (it is shutting down); the flags stay as they are", err=True
        )
        raise SystemExit(EXIT_ERROR)
    _finish(run["result"], as_json)


@click.command()
@click.option("--collection", required=True, metavar="NAME", help="The declared collection to ramp.")
@click.option(
    "--steps",
    default="10,25,50,100",
    show_default=True,
    help="Rising read_percent steps; those at or below the current read_percent are skipped.",
)
@click.option(
    "--interval",
    metavar="DURATION",
    help='Time per step before it is judged: "30s", "5m" (default: [guard] interval).',
)
@click.option("--prometheus", metavar="URL", help="Judge every process this Prometheus scrapes (the fleet).")
@click.option("--job", metavar="NAME", help="With --prometheus: only this scrape job's processes.")
@click.option(
    "--metrics-url", metavar="URL", help="Judge one process's /metrics (an app embedding the router)."
)
@click.option(
    "--guard",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a [guard] setting for this ramp, e.g. --guard failure_limit=1 (repeatable).",
)
@click.option("--dry-run", is_flag=True, help="Evaluate and report every interval; change no flag.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def ramp(
    collection: str,
    steps: str,
    interval: str | None,
    prometheus: str | None,
    job: str | None,
    metrics_url: str | None,
    overrides: tuple[str, ...],
    dry_run: bool,
    as_json: bool,
) -> None:
    """Raise a collection's read_percent step by step, judging each interval by the [guard]
    checks (mismatch ratio, recall, target p99 over legacy p99, error ratio, enough
    comparisons); roll it back through the phase rules when failed intervals reach
    failure_limit (read_percent 0; target-primary back to dual).

    The numbers: through a service (dualvec --server URL ramp), the service's own metrics;
    otherwise --prometheus URL (every process of the fleet) or --metrics-url URL (one process).

    Exit codes: 0 every step reached and judged healthy; 1 error (a step refused by the phase
    rules, flags changed by someone else meanwhile); 2 usage; 4 rolled back by the guard (with
    --dry-run: would have been); 130 interrupted (the flags stay; the same command continues
    from the current read_percent).
    """
    try:
        plan_steps = parse_steps(steps)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--steps") from exc
    try:
        interval_seconds = None if interval is None else parse_duration(interval)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--interval") from exc
    if job and not prometheus:
        raise click.UsageError("--job selects processes in Prometheus: give --prometheus URL too")
    changes = _overrides(overrides)
    remote = remote_client()
    if remote is not None:
        unsupported("--metrics-url", metrics_url)
        body = {
            "collection": collection,
            "steps": list(plan_steps),
            "interval": interval_seconds,
            "dry_run": dry_run,
            "prometheus": prometheus,
            "job": job,
            "guard": changes,
        }
        _through_service(remote, body, as_json)
        return
    if bool(prometheus) == bool(metrics_url):
        raise click.UsageError(
            "a ramp judges the traffic of the processes that serve it, and this command serves none: "
            "run it through the service (dualvec --server URL ramp), or name one source of metrics, "
            "--prometheus URL (the fleet) or --metrics-url URL (one process)"
        )
    config = settings()
    chosen_collections(config, [collection])
    try:
        guard = GuardSettings.model_validate({**config.guard.model_dump(), **changes})
    except ValidationError as exc:
        raise click.BadParameter(describe(exc), param_hint="--guard") from exc
    source: SignalSource = (
        PrometheusSource(prometheus, job) if prometheus else ExpositionSource.at_url(str(metrics_url))
    )
    plan = RampPlan(collection, plan_steps, interval_seconds or guard.interval, guard, dry_run=dry_run)
    with errors_exit():
        if not dry_run:
            require_flag_file_read_by_services(config)
        summary = Ramp(plan, PhaseRulesControl(config, collection), source, on_event=print_event).run()
    _finish(summary, as_json)
