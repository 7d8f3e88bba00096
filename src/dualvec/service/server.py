"""Running the app under uvicorn until SIGTERM or SIGINT, then stopping gracefully.

On the signal uvicorn stops accepting connections, lets the requests in flight finish, runs the
app's shutdown (which closes the stores), and returns: the process exits 0. A second SIGINT
skips the wait.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import uvicorn
from fastapi import FastAPI

__all__ = ["StopSignal", "run", "stop_signals"]

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignal:
    """Whether a stop was asked for, and the server to pass it on to once there is one."""

    def __init__(self) -> None:
        self.requested = False
        self.server: uvicorn.Server | None = None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        if self.server is not None:
            self.server.should_exit = True


@contextmanager
def stop_signals() -> Iterator[StopSignal]:
    """While inside, SIGTERM and SIGINT are recorded instead of ending the process.

    Installed before the stores open, so a stop asked for during start-up still closes them;
    and uvicorn, which raises the signal it stopped on again once it has shut down, raises it
    into this handler rather than into the default one that would end the process by signal.
    """
    stop = StopSignal()
    previous = {sig: signal.signal(sig, stop.handle) for sig in _SIGNALS}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(app: FastAPI, sock: socket.socket, stop: StopSignal) -> None:
    """Serve `app` on `sock` until a stop signal; return once in-flight requests have finished
    and the app has shut down."""
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_config=None,  # uvicorn's own records go through the root logger, configured or not
        access_log=False,
        server_header=False,
    )
    server = uvicorn.Server(config)
    stop.server = server
    server.should_exit = stop.requested
    server.run(sockets=[sock])
