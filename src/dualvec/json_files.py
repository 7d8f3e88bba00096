"""Small JSON state files (flags, checkpoints, verify results) written atomically and durably."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dualvec.errors import ConfigError

__all__ = ["read_json_state", "write_json_atomic"]


def write_json_atomic(path: Path, payload: Mapping[str, Any]) -> None:
    """Replace `path` atomically and durably with `payload` as JSON: a reader (or a process
    killed mid-write and started again) sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # mkstemp makes the file private; services running as another user must read it.
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2)
            handle.write("\n")
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


def read_json_state(path: Path) -> dict[str, Any] | None:
    """A state file's JSON object, None when there is none; `ConfigError` when it is unreadable
    (the atomic writes never leave half a file, so only a hand edit gets there)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); delete it to start over") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a JSON object; delete it to start over")
    return data
