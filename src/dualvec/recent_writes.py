"""Which ids this process was writing, and when: what lets a shadow comparison tell a write in
flight from a real divergence.

A shadow read and the served read run at different moments; an id written between them can
be in one answer and not the other, with no store at fault. The router notes each write's ids
as it starts and as it ends; the shadow runner asks which of the ids its two answers disagree
on were being written since the served read began. Entries older than `horizon_seconds` are
dropped, so memory stays bounded by the write rate, not the collection size.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

__all__ = ["RecentWrites"]


class RecentWrites:
    """Per id, when its latest write started and ended (None while it runs)."""

    def __init__(self, horizon_seconds: float = 60.0) -> None:
        self._horizon = horizon_seconds
        self._lock = threading.Lock()
        self._writes: dict[str, tuple[float, float | None]] = {}
        self._pruned_at = time.monotonic()

    @contextmanager
    def writing(self, ids: Iterable[str]) -> Iterator[None]:
        """Note `ids` as being written for the duration of the block."""
        batch = list(ids)
        start = time.monotonic()
        with self._lock:
            for record_id in batch:
                self._writes[record_id] = (start, None)
        try:
            yield
        finally:
            end = time.monotonic()
            with self._lock:
                for record_id in batch:
                    if self._writes.get(record_id, (None, None))[0] == start:
                        self._writes[record_id] = (start, end)
                if end - self._pruned_at > self._horizon:
                    self._prune(end)

    def discard(self, ids: Iterable[str]) -> None:
        """Forget `ids`: their write is over and the stores differ (a failed secondary)."""
        with self._lock:
            for record_id in ids:
                self._writes.pop(record_id, None)

    def written_since(self, ids: Iterable[str], since: float) -> set[str]:
        """Those of `ids` with a write running at `since` or after (monotonic seconds)."""
        with self._lock:
            found = set()
            for record_id in ids:
                entry = self._writes.get(record_id)
                if entry is not None and (entry[1] is None or entry[1] >= since):
                    found.add(record_id)
            return found

    def _prune(self, now: float) -> None:
        cutoff = now - self._horizon
        self._writes = {
            i: (start, end) for i, (start, end) in self._writes.items() if end is None or end >= cutoff
        }
        self._pruned_at = now
