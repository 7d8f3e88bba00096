"""gunicorn server hooks for applications that build their Migration (or Router) at import time
and run with ``--preload``: one gunicorn config for every worker to share the metrics.

The Migration itself needs no hook: it is safe after `fork()` on its own (`dualvec.forking`).
What needs the server is Prometheus multiprocess mode, so that /metrics, whichever worker
answers it, sums every worker:

- start gunicorn with ``PROMETHEUS_MULTIPROC_DIR`` naming an empty directory (empty it before
  every start, e.g. in the service's start script: files left by an earlier run would be
  summed in). It must be set before Python starts, not in the config file;
- serve ``migration.metrics.render()`` (or `dualvec.metrics.multiprocess_registry`) at /metrics;
- use these hooks, either as the config module (``gunicorn -c python:dualvec.gunicorn``) or
  imported into your own ``gunicorn.conf.py``::

      from dualvec.gunicorn import child_exit, when_ready  # noqa: F401

      preload_app = True
      workers = 3

`child_exit` runs in the master when a worker exits (or is killed) and removes that worker's
live gauges from the sums, as prometheus_client requires; counters and histograms keep what
the worker counted. gunicorn itself is not a dependency of dualvec.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["child_exit", "when_ready"]


def _multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn hook (in the master, for every worker that exits): its live gauges (flags, phase,
    outbox) leave the sums across workers."""
    if _multiprocess_dir() is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def when_ready(server: Any) -> None:
    """gunicorn hook (in the master, once it listens): warn when several workers would each
    answer /metrics with only their own counts."""
    if server.cfg.workers > 1 and _multiprocess_dir() is None:
        server.log.warning(
            "dualvec: %d workers without PROMETHEUS_MULTIPROC_DIR: each /metrics scrape shows one "
            "worker only. Set it to an empty directory before starting gunicorn",
            server.cfg.workers,
        )
