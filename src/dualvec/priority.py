"""Worker threads below their caller's CPU priority: shadow workers and `AsyncRouter`'s pool
run their store calls niced, so that on a host whose cores the stores keep busy the caller's
own reads and the event loop win a core as soon as they wake."""

from __future__ import annotations

import contextlib
import os
import threading

__all__ = ["lower_priority"]


def lower_priority(niceness: int) -> None:
    """Give the calling thread `niceness` more than it has (a thread pool's initializer).

    Linux schedules threads individually, so only this thread is affected; elsewhere (or when
    the OS refuses) the thread keeps the process's priority. A niced thread yields to every
    busier program on the host too, not only to its own process's threads."""
    if niceness and hasattr(os, "setpriority"):
        thread = threading.get_native_id()
        with contextlib.suppress(OSError):
            os.setpriority(
                os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + niceness)
            )
