"""The /metrics endpoint for `dualvec serve` and `dualvec demo`.

Applications that embed a Router can mount the same registry in their own web app instead
(`prometheus_client.make_asgi_app(registry=metrics.registry)`, or `metrics.render()` with
`prometheus_client.CONTENT_TYPE_LATEST`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

from dualvec.metrics import DualvecMetrics, multiprocess_registry

__all__ = ["MetricsServer", "start_metrics_server"]


@dataclass
class MetricsServer:
    server: WSGIServer
    thread: Thread
    url: str

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_metrics_server(metrics: DualvecMetrics, host: str = "127.0.0.1", port: int = 9464) -> MetricsServer:
    """Serve `metrics` (or, under PROMETHEUS_MULTIPROC_DIR, every process's) on a thread.

    Port 0 picks a free port; the returned URL names the one in use.
    """
    registry = multiprocess_registry() if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else metrics.registry
    server, thread = start_http_server(port, host, registry=registry)
    bound_port = server.server_address[1]
    return MetricsServer(server, thread, f"http://{host}:{bound_port}/metrics")
