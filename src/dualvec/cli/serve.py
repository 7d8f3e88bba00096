"""`dualvec serve`: a sidecar that exposes /metrics and keeps every collection's outbox drained."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click

from dualvec.cli.common import errors_exit, settings
from dualvec.metrics import DualvecMetrics
from dualvec.metrics_server import start_metrics_server
from dualvec.migration import Migration

__all__ = ["serve"]


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9464, show_default=True, type=click.IntRange(0, 65535))
@click.option("--replay/--no-replay", default=True, show_default=True, help="Run the outbox replayer.")
def serve(host: str, port: int, replay: bool) -> None:
    """Open every declared collection and expose Prometheus metrics (flags, outbox depth and
    age, repairs, per collection) until stopped.

    Under PROMETHEUS_MULTIPROC_DIR the endpoint sums every process of the application, so one
    sidecar can serve the metrics of a gunicorn fleet. Stop with SIGTERM or Ctrl-C.
    """
    config = settings()
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    with errors_exit():
        metrics = DualvecMetrics()
        migration = Migration.from_settings(config, metrics=metrics, start_replayer=replay)
        server = start_metrics_server(metrics, host, port)
        click.echo(f"serving metrics on {server.url}", err=True)
        try:
            stop.wait()
        finally:
            server.close()
            migration.close()
