"""Two file primitives every piece of dualvec state relies on: an atomic, durable replace and
an exclusive lock shared across processes."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["exclusive_lock", "write_atomic"]


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` atomically and durably with `data`: a reader (or a process killed
    mid-write and started again) sees the old file or the new one, never half of one, and once
    this returns the new one survives a power cut (file and directory are fsynced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private; services running as another user must read it.
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextmanager
def exclusive_lock(path: Path) -> Iterator[int]:
    """Hold an exclusive `flock` on `path` (created if needed), across threads and processes;
    the kernel releases it if the process dies. Yields the lock file's descriptor, which a
    caller may use to keep a little state beside the lock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # closing releases the flock
