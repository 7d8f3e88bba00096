"""`dualvec demo`: what `make demo` runs."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from dualvec.cli.common import errors_exit
from dualvec.demo import DemoReport, describe_ramp, run_demo
from dualvec.logs import configure_logging

__all__ = ["demo"]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_report(report: DemoReport) -> None:
    click.echo(
        f"\ndualvec demo: two collections (docs {report.records} x {report.dim}, claims) from legacy "
        "LanceDB to sqlite-vec, live traffic throughout"
    )
    click.echo(f"legacy built in {report.build_seconds:.1f} s; backfill: {report.backfill}")
    header = (
        f"{'coll.':<6} {'phase':<20} {'reads L/T':>13} {'p50 L/T ms':>13} {'p95 L/T ms':>13} {'writes':>6} "
        f"{'errors':>6} {'shadow':>6} {'mism.':>5} {'infl.':>5} {'recall':>6} {'2nd fail':>8} {'repairs':>7}"
    )
    click.echo(header)
    click.echo("-" * len(header))
    for p in report.phases:
        recall = "-" if p.mean_recall is None else f"{p.mean_recall:.3f}"
        click.echo(
            f"{p.collection:<6} {p.name:<20} {p.reads['legacy']:>6}/{p.reads['target']:<6} "
            f"{_fmt(p.p50_ms['legacy']):>6}/{_fmt(p.p50_ms['target']):<6} "
            f"{_fmt(p.p95_ms['legacy']):>6}/{_fmt(p.p95_ms['target']):<6} "
            f"{p.writes:>6} {p.caller_errors:>6} "
            f"{p.shadow_compared:>6} {p.mismatches:>5} {p.in_flight:>5} {recall:>6} "
            f"{p.secondary_write_failures:>8} {p.repairs:>7}" + (f"  {p.notes}" if p.notes else "")
        )
    for label, result in report.verifies.items():
        click.echo(f"verify {label}: {result}")
    for label, summary in report.ramps.items():
        click.echo(f"guarded ramp of claims ({label}): {describe_ramp(summary)}")
    for name, flags in report.final_flags.items():
        click.echo(f"{name} ends in {flags}")
    click.echo(f"total {report.total_seconds:.1f} s")


@click.command()
@click.option("--records", default=10_000, show_default=True, type=click.IntRange(100, 1_000_000))
@click.option("--dim", default=384, show_default=True, type=click.IntRange(2, 4096))
@click.option("--phase-seconds", default=3.0, show_default=True, type=click.FloatRange(0.5, 600))
@click.option(
    "--port",
    default=9464,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="/metrics port (0: any free port).",
)
@click.option(
    "--dir",
    "workdir",
    default="demo-data",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def demo(records: int, dim: int, phase_seconds: float, port: int, workdir: Path, as_json: bool) -> None:
    """Run the whole migration on a generated legacy LanceDB collection and print a report.

    Only errors are logged while it runs; mismatch samples are kept in DIR/mismatches.jsonl
    (`dualvec mismatches --path DIR/mismatches.jsonl`).
    """
    configure_logging(level="ERROR")
    with errors_exit():
        report = run_demo(
            workdir,
            records=records,
            dim=dim,
            phase_seconds=phase_seconds,
            port=port,
            say=lambda line: click.echo(line, err=True),
        )
    if as_json:
        click.echo(json.dumps(asdict(report), indent=2))
    else:
        print_report(report)
