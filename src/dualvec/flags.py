"""The live flag file: how a ramp or a rollback reaches every running process without a restart.

The file holds defaults for every collection and per-collection overrides::

    {"phase": "dual", "read_percent": 0,                 <- defaults (a single-collection
     "collections": {"claims": {"read_percent": 50}},       file is just these)
     "updated_at": 1767000000.0}

A collection's flags are, key by key, its override, else the file's default, else the value in
the settings (TOML, environment). Writers replace the file atomically (temporary file, fsync,
rename), so a reader sees the old file or the new one, never half of one. Readers poll it
(every `flag_poll_seconds`, at most a second); a file that does not parse or validate is
refused, logged, and the last good flags stay in force; an override for a collection this
process does not declare is ignored with a warning. The hot path only reads a dict holding
frozen snapshots.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dualvec.errors import ConfigError
from dualvec.forking import working
from dualvec.json_files import read_json_state, write_json_atomic
from dualvec.logs import get_logger
from dualvec.settings import Flags, Phase

__all__ = [
    "FLAG_KEYS",
    "FlagFile",
    "FlagOverrides",
    "FlagSnapshot",
    "FlagSource",
    "FlagSourceFactory",
    "FlagWatcher",
    "flags_report",
    "read_flag_file",
    "write_flag_file",
]

log = get_logger("dualvec.flags")

FLAG_KEYS = tuple(Flags.model_fields)


class FlagOverrides(BaseModel):
    """Flags a level of the file sets; None leaves the value to the level below."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    phase: Phase | None = None
    read_percent: float | None = Field(default=None, ge=0.0, le=100.0)
    shadow_percent: float | None = Field(default=None, ge=0.0, le=100.0)

    def over(self, base: Flags) -> Flags:
        """`base` with the values this level sets."""
        values = {key: getattr(self, key) for key in FLAG_KEYS}
        return base.model_copy(update={key: value for key, value in values.items() if value is not None})


class FlagFile(FlagOverrides):
    """What the flag file holds: defaults for every collection, then per-collection overrides."""

    collections: dict[str, FlagOverrides] = Field(default_factory=dict)
    updated_at: float | None = None

    @classmethod
    def of(cls, flags: Flags) -> FlagFile:
        """A file setting `flags` for every collection."""
        return cls(**flags.model_dump())

    def resolve(self, collection: str, base: Flags, path: str) -> FlagSnapshot:
        """The flags `collection` follows, each value's source named."""
        override = self.collections.get(collection, FlagOverrides())
        sources = {}
        for key in FLAG_KEYS:
            if getattr(override, key) is not None:
                sources[key] = f"{path} (collection {collection})"
            elif getattr(self, key) is not None:
                sources[key] = path
            else:
                sources[key] = "settings"
        flags = override.over(self.over(base))
        return FlagSnapshot(flags, path, self.updated_at, sources)


@dataclass(frozen=True)
class FlagSnapshot:
    """Flags in force and where they came from: `source` is the flag file's path or
    "settings"; `sources` says it per key."""

    flags: Flags
    source: str
    updated_at: float | None = None
    sources: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, flags: Flags) -> FlagSnapshot:
        return cls(flags, "settings", None, dict.fromkeys(FLAG_KEYS, "settings"))


def read_flag_file(path: Path) -> FlagFile | None:
    """The flag file at `path`, None when there is none; `ConfigError` when it is invalid."""
    try:
        data = read_json_state(path)
        return None if data is None else FlagFile.model_validate(data)
    except (ConfigError, ValidationError) as exc:
        raise ConfigError(f"flag file {path} is invalid, keeping the last good flags: {exc}") from exc


def write_flag_file(path: Path, flags: Flags | FlagFile) -> None:
    """Replace `path` atomically and durably (a `Flags` sets every collection's defaults)."""
    content = FlagFile.of(flags) if isinstance(flags, Flags) else flags
    data = content.model_dump(mode="json", exclude_none=True, exclude={"updated_at"})
    data["collections"] = {
        name: override.model_dump(mode="json", exclude_none=True)
        for name, override in content.collections.items()
    }
    write_json_atomic(path, {**data, "updated_at": time.time()})


class FlagSource(Protocol):
    """Where a process's flags come from: the flag file by default (`FlagWatcher`), or a flag
    service. A source keeps each collection's last good flags and calls `on_change` when a
    collection's flags change; a bad value never reaches a router."""

    def current(self, collection: str) -> FlagSnapshot:
        """The flags `collection` follows now."""

    def close(self) -> None:
        """Stop watching; `current` keeps answering the last flags."""


FlagSourceFactory = Callable[
    [Mapping[str, Flags], Callable[[str, FlagSnapshot], None], Callable[[str], None]], FlagSource
]
"""Builds a process's flag source from each collection's configured flags, the callback that
publishes a change and the one that counts a refusal (how `Migration` takes a flag service
instead of the flag file)."""


class FlagWatcher:
    """Keeps each declared collection's flags equal to the flag file (or its configured flags
    when there is none); one thread for every collection of a process."""

    def __init__(
        self,
        path: Path,
        base: Mapping[str, Flags],
        *,
        poll_seconds: float = 0.2,
        on_change: Callable[[str, FlagSnapshot], None] | None = None,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        self._base = dict(base)
        self._poll = poll_seconds
        self._on_change = on_change
        self._on_refused = on_refused
        self._seen: tuple[int, int, int] | None = None
        self._current = {name: FlagSnapshot.from_settings(flags) for name, flags in self._base.items()}
        self.refresh()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dualvec-flags", daemon=True)
        self._thread.start()

    def current(self, collection: str) -> FlagSnapshot:
        """The flags `collection` follows now."""
        return self._current[collection]

    def refresh(self) -> None:
        """Re-read the file if it changed."""
        try:
            stat = self.path.stat()
            seen: tuple[int, int, int] | None = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            seen = None
        if seen == self._seen:
            return
        try:
            content = read_flag_file(self.path)
        except ConfigError as exc:
            self._seen = seen  # an invalid file is refused once, then awaited until it changes
            log.error("flag_file_refused", path=str(self.path), error=str(exc))
            if self._on_refused is not None:
                for name in self._base:  # the file holds every collection's flags
                    self._on_refused(name)
            return
        # Marked seen only once read: a file that could not be opened is tried again next poll.
        self._seen = seen
        if content is not None:
            unknown = sorted(set(content.collections) - set(self._base))
            if unknown:
                log.warning("flag_overrides_ignored", path=str(self.path), collections=unknown)
        current = {
            name: FlagSnapshot.from_settings(flags)
            if content is None
            else content.resolve(name, flags, str(self.path))
            for name, flags in self._base.items()
        }
        changed = [
            name
            for name, snapshot in current.items()
            if (snapshot.flags, snapshot.source) != (self._current[name].flags, self._current[name].source)
        ]
        self._current = current
        for name in changed:
            log.info("flags_changed", collection=name, **current[name].flags.model_dump(mode="json"))
            if self._on_change is not None:
                self._on_change(name, current[name])

    def _run(self) -> None:
        while not self._stop.wait(self._poll):
            try:
                with working():  # a fork never copies a log write or a publish half done
                    self.refresh()
            except Exception as exc:  # the watcher must outlive any one bad read
                log.error("flag_watch_failed", path=str(self.path), error=repr(exc))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def flags_report(snapshots: dict[str, FlagSnapshot]) -> dict[str, Any]:
    """`{"collections": {NAME: {phase, read_percent, shadow_percent, sources}}}`."""
    return {
        "collections": {
            name: {**snapshot.flags.model_dump(mode="json"), "sources": dict(snapshot.sources)}
            for name, snapshot in snapshots.items()
        }
    }
