"""The live flag file: how a ramp or a rollback reaches every running process without a restart.

Writers replace the file atomically (temporary file, fsync, rename), so a reader sees the old
file or the new one, never half of one. Readers poll it (every `flag_poll_seconds`, at most a
second); a file that does not parse or validate is refused, logged, and the last good flags
stay in force. The hot path only reads an attribute holding a frozen snapshot.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from pydantic import ValidationError

from dualvec.errors import ConfigError
from dualvec.json_files import read_json_state, write_json_atomic
from dualvec.settings import Flags

__all__ = ["FlagSnapshot", "FlagWatcher", "read_flag_file", "write_flag_file"]

log = structlog.get_logger("dualvec.flags")


@dataclass(frozen=True)
class FlagSnapshot:
    """Flags in force and where they came from ("settings" or the flag file's path)."""

    flags: Flags
    source: str
    updated_at: float | None = None


def read_flag_file(path: Path) -> FlagSnapshot | None:
    """The flags in `path`, None when there is no file; `ConfigError` when it is invalid."""
    try:
        data = read_json_state(path)
        if data is None:
            return None
        updated_at = data.pop("updated_at", None)
        return FlagSnapshot(Flags.model_validate(data), str(path), updated_at)
    except (ConfigError, ValidationError) as exc:
        raise ConfigError(f"flag file {path} is invalid, keeping the last good flags: {exc}") from exc


def write_flag_file(path: Path, flags: Flags) -> None:
    """Replace `path` atomically and durably with `flags`."""
    write_json_atomic(path, {**flags.model_dump(mode="json"), "updated_at": time.time()})


class FlagWatcher:
    """Keeps `current` equal to the flag file (or the configured flags when there is none)."""

    def __init__(
        self,
        path: Path,
        defaults: Flags,
        *,
        poll_seconds: float = 0.2,
        on_change: Callable[[FlagSnapshot], None] | None = None,
    ) -> None:
        self.path = path
        self._defaults = FlagSnapshot(defaults, "settings")
        self._poll = poll_seconds
        self._on_change = on_change
        self._seen: tuple[int, int, int] | None = None
        self.current = self._defaults
        self.refresh()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dualvec-flags", daemon=True)
        self._thread.start()

    def refresh(self) -> FlagSnapshot:
        """Re-read the file if it changed; return the flags in force."""
        try:
            stat = self.path.stat()
            seen: tuple[int, int, int] | None = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            seen = None
        if seen == self._seen:
            return self.current
        try:
            snapshot = read_flag_file(self.path) or self._defaults
        except ConfigError as exc:
            self._seen = seen  # an invalid file is refused once, then awaited until it changes
            log.error("flag_file_refused", path=str(self.path), error=str(exc))
            return self.current
        # Marked seen only once read: a file that could not be opened is tried again next poll.
        self._seen = seen
        if snapshot.flags != self.current.flags or snapshot.source != self.current.source:
            log.info("flags_changed", source=snapshot.source, **snapshot.flags.model_dump(mode="json"))
            self.current = snapshot
            if self._on_change is not None:
                self._on_change(snapshot)
        return self.current

    def _run(self) -> None:
        while not self._stop.wait(self._poll):
            try:
                self.refresh()
            except Exception as exc:  # the watcher must outlive any one bad read
                log.error("flag_watch_failed", path=str(self.path), error=repr(exc))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
