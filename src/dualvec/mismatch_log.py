"""Mismatch samples: what a shadow read saw when the target disagreed with legacy, kept so that
an operator can read them back (`dualvec mismatches`).

Each sample goes two ways: a structlog event ``shadow_mismatch`` (shipped with the rest of the
service's logs), and a line in a bounded local JSONL file, so that the latest samples can be
read on the host without a log pipeline.

A sample holds ids and distances only: never vectors, metadata, query text or a raw routing key
(the router passes a one-way hash of it).

Several processes (gunicorn workers) and their threads append to the same file. Every append
and every trim holds an exclusive ``flock`` on ``<path>.lock``, which also keeps the file's line
count so that an append need not read the file. An append is one ``write()`` of one whole line
to a file opened with ``O_APPEND``. Once the file passes ``max_samples`` plus a tenth, it is
trimmed back to the last ``max_samples`` lines by writing them to a temporary file and renaming
it over the log: a rewrite every ``max_samples // 10`` appends rather than on each, and a reader
sees the old file or the new, never half of one. Readers take no lock; they skip a line that
does not parse, which can only be one being written at that instant. POSIX only, as the outbox.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dualvec.errors import ConfigError
from dualvec.files import exclusive_lock, write_atomic
from dualvec.logs import get_logger
from dualvec.records import Hit

__all__ = ["MismatchLog", "MismatchSample", "utc_now"]

log = get_logger("dualvec.mismatch_log")


def utc_now() -> str:
    """A sample's timestamp: ISO 8601 in UTC to the millisecond, so that text order is time order."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _hits(data: list[Mapping[str, Any]]) -> tuple[Hit, ...]:
    return tuple(Hit(str(h["id"]), float(h["distance"])) for h in data)


@dataclass(frozen=True)
class MismatchSample:
    """One disagreement: both top-k answers (legacy and target, whichever served) and why they
    count as a mismatch. Hits keep their id and distance only; metadata is never written."""

    timestamp: str
    query_id: str
    routing_key_hash: str | None
    served_store: str
    k: int
    recall: float
    rank_agreement: float
    max_distance_delta: float | None
    reasons: tuple[str, ...]
    legacy: tuple[Hit, ...]
    target: tuple[Hit, ...]
    # Which collection's reads disagreed (None in samples written before collections existed).
    collection: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "timestamp": self.timestamp,
            "collection": self.collection,
            "query_id": self.query_id,
            "routing_key_hash": self.routing_key_hash,
            "served_store": self.served_store,
            "k": self.k,
            "recall": self.recall,
            "rank_agreement": self.rank_agreement,
            "max_distance_delta": self.max_distance_delta,
            "reasons": list(self.reasons),
            "legacy": [{"id": h.id, "distance": h.distance} for h in self.legacy],
            "target": [{"id": h.id, "distance": h.distance} for h in self.target],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MismatchSample:
        delta = data["max_distance_delta"]
        return cls(
            timestamp=str(data["timestamp"]),
            query_id=str(data["query_id"]),
            routing_key_hash=data["routing_key_hash"],
            served_store=str(data["served_store"]),
            k=int(data["k"]),
            recall=float(data["recall"]),
            rank_agreement=float(data["rank_agreement"]),
            max_distance_delta=None if delta is None else float(delta),
            reasons=tuple(data["reasons"]),
            legacy=_hits(data["legacy"]),
            target=_hits(data["target"]),
            collection=data.get("collection"),
        )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class MismatchLog:
    """The latest `max_samples` mismatch samples in a JSONL file at `path` (see module docstring).

    The file and its directory are created on the first sample, so a migration without
    mismatches leaves none.
    """

    def __init__(self, path: str | os.PathLike[str], max_samples: int = 1000) -> None:
        if max_samples < 1:
            raise ConfigError(f"max_samples must be 1 or more, not {max_samples}")
        self.path = Path(path)
        self.max_samples = max_samples
        self._trim_at = max_samples + max_samples // 10
        self._lock_path = self.path.with_name(self.path.name + ".lock")

    def record(self, sample: MismatchSample) -> None:
        """Log `sample` as a ``shadow_mismatch`` event, then append it to the file.

        Logged first, so that a full disk loses the local copy, not the event.
        """
        data = sample.to_dict()
        log.warning("shadow_mismatch", **data)
        line = json.dumps(data, separators=(",", ":")).encode() + b"\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked() as lock_fd:
            known = self._read_count(lock_fd)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                _write_all(fd, line)
            finally:
                os.close(fd)
            count = known + 1 if known is not None else self._count_lines()
            if count > self._trim_at:
                count = self._trim()
            os.ftruncate(lock_fd, 0)
            os.pwrite(lock_fd, str(count).encode(), 0)

    def latest(self, n: int = 20) -> list[MismatchSample]:
        """The `n` most recent samples, newest first; empty when nothing was ever recorded."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        samples: list[MismatchSample] = []
        for line in reversed(raw.splitlines()):
            if len(samples) >= n:
                break
            try:
                samples.append(MismatchSample.from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                continue  # a line being appended right now
        return samples

    def _locked(self) -> AbstractContextManager[int]:
        return exclusive_lock(self._lock_path)

    @staticmethod
    def _read_count(lock_fd: int) -> int | None:
        """The line count kept in the lock file; None when it is new or unreadable."""
        try:
            return int(os.pread(lock_fd, 32, 0))
        except ValueError:
            return None

    def _count_lines(self) -> int:
        return self.path.read_bytes().count(b"\n")

    def _trim(self) -> int:
        """Keep the last `max_samples` lines; returns how many remain."""
        keep = self.path.read_bytes().splitlines(keepends=True)[-self.max_samples :]
        write_atomic(self.path, b"".join(keep))
        return len(keep)
