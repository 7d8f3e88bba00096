"""Small JSON state files (flags, checkpoints, verify results) written atomically and durably."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dualvec.errors import ConfigError
from dualvec.files import write_atomic

__all__ = ["read_json_state", "write_json_atomic"]


def write_json_atomic(path: Path, payload: Mapping[str, Any]) -> None:
    """Replace `path` atomically and durably with `payload` as JSON (see `files.write_atomic`)."""
    write_atomic(path, (json.dumps(payload, indent=2) + "\n").encode())


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
