"""`dualvec serve`: the HTTP service that owns every collection's stores."""

from __future__ import annotations

import os

import click

from dualvec.cli.common import errors_exit, settings
from dualvec.errors import BackendMissingError
from dualvec.metrics import DualvecMetrics
from dualvec.migration import Migration
from dualvec.service.limits import DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY_BYTES, Limits
from dualvec.service.listen import check_exposure, listen
from dualvec.validation import MAX_BATCH

__all__ = ["serve"]


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, envvar="DUALVEC_SERVE_HOST", show_envvar=True)
@click.option(
    "--port",
    default=8765,
    show_default=True,
    type=click.IntRange(0, 65535),
    envvar="DUALVEC_SERVE_PORT",
    show_envvar=True,
    help="0 picks a free port (printed at start).",
)
@click.option("--replay/--no-replay", default=True, show_default=True, help="Run the outbox replayer.")
@click.option(
    "--max-body-bytes",
    default=DEFAULT_MAX_BODY_BYTES,
    show_default=True,
    type=click.IntRange(1),
    envvar="DUALVEC_SERVE_MAX_BODY_BYTES",
    show_envvar=True,
    help="Largest request body; larger ones get 413.",
)
@click.option(
    "--max-batch",
    default=DEFAULT_MAX_BATCH,
    show_default=True,
    type=click.IntRange(1, MAX_BATCH),
    envvar="DUALVEC_SERVE_MAX_BATCH",
    show_envvar=True,
    help="Most records per upsert or export page, ids per get or delete; more get 413.",
)
def serve(host: str, port: int, replay: bool, max_body_bytes: int, max_batch: int) -> None:
    """Open every declared collection and serve it over HTTP: the data API (OpenAPI schema at
    /openapi.json), /metrics, /healthz, /readyz and the admin API.

    Listens on 127.0.0.1 unless told otherwise, and refuses any address beyond loopback unless
    DUALVEC_ADMIN_TOKEN is set (the admin API then requires Authorization: Bearer <token>).
    SIGTERM or Ctrl-C: stop accepting, finish the requests in flight, close the stores, exit 0.
    Under PROMETHEUS_MULTIPROC_DIR, /metrics sums every process of the application.
    """
    config = settings()
    admin_token = os.environ.get("DUALVEC_ADMIN_TOKEN") or None
    with errors_exit():
        try:
            from dualvec.service.app import create_app
            from dualvec.service.server import run, stop_signals
        except ImportError as exc:
            raise BackendMissingError(
                f"dualvec serve needs the server extra: pip install 'dualvec[server]' ({exc})"
            ) from exc
        limits = Limits(max_body_bytes=max_body_bytes, max_batch=max_batch)
        check_exposure(host, admin_token)
        with stop_signals() as stop, listen(host, port) as sock:
            migration = Migration.from_settings(config, metrics=DualvecMetrics(), start_replayer=replay)
            try:
                bound_host, bound_port = sock.getsockname()[:2]
                shown = f"[{bound_host}]" if ":" in bound_host else bound_host
                click.echo(f"serving {len(migration)} collection(s) on http://{shown}:{bound_port}", err=True)
                run(create_app(lambda: migration, limits=limits, admin_token=admin_token), sock, stop)
            finally:
                # The app's shutdown closes it; this covers a server that never got that far.
                migration.close()
