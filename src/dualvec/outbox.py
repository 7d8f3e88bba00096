"""The outbox: durable intents for writes the secondary store may not have received.

An intent names an id, the operation and which store was the source of truth when it was
written. It is committed before the primary is touched and cleared only after the secondary
has the same record, so a crash or an outage at any point leaves ids to repair, never a silent
difference. One small SQLite file; one transaction per batch.

Writers and replayers of a collection, in every process, serialise on `write_lock()`, an
exclusive `flock` on a file beside the outbox for that collection (released by the kernel when
a process dies), so a replay that re-reads the primary can never overwrite a newer write with
an older one, while writes to other collections go on. Every collection of a process shares one
connection to the file (`for_collection`).
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dualvec.closing import Closing
from dualvec.files import exclusive_lock
from dualvec.sqlite_driver import connect, write_transaction

__all__ = ["Intent", "Outbox", "OutboxStats", "other_role"]

Op = Literal["upsert", "delete"]
Role = Literal["legacy", "target"]


def other_role(role: Role) -> Role:
    return "target" if role == "legacy" else "legacy"


@dataclass(frozen=True)
class Intent:
    id: str
    op: Op
    source: Role
    created_at: float
    attempts: int


@dataclass(frozen=True)
class OutboxStats:
    depth: int
    oldest_age_seconds: float


class Outbox(Closing):
    """Intents for one collection, in a SQLite file shared by every process of a deployment."""

    def __init__(self, path: str | Path, collection: str) -> None:
        self.path = Path(path)
        self._conn = connect(self.path, vec=False)
        self._conn.execute("PRAGMA synchronous = FULL")
        self._lock = threading.Lock()
        self._owner = True
        self._bind(collection)
        with write_transaction(self._conn):
            self._conn.execute(
                """CREATE TABLE IF NOT EXISTS intents (
                    collection TEXT NOT NULL,
                    id TEXT NOT NULL,
                    op TEXT NOT NULL,
                    source TEXT NOT NULL,
                    created_at REAL NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    last_error TEXT,
                    PRIMARY KEY (collection, id)
                ) WITHOUT ROWID"""
            )
            self._conn.execute(
                "CREATE INDEX IF NOT EXISTS intents_by_age ON intents (collection, created_at)"
            )
            self._conn.execute(
                "CREATE INDEX IF NOT EXISTS intents_by_attempts ON intents (collection, attempts, created_at)"
            )

    def _bind(self, collection: str) -> None:
        self.collection = collection
        self._thread_lock = threading.RLock()
        self._lock_path = self.path.with_name(f"{self.path.name}.{collection}.lock")
        self._lock_depth = 0

    def for_collection(self, collection: str) -> Outbox:
        """The intents of `collection`, on this outbox's connection (which this one closes)."""
        handle = copy.copy(self)
        handle._owner = False
        handle._bind(collection)
        return handle

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """Exclusive across threads and processes; re-entrant within a thread."""
        with self._thread_lock, ExitStack() as held:
            if self._lock_depth == 0:
                held.enter_context(exclusive_lock(self._lock_path))
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._conn.execute(sql, params).fetchall())

    def record(self, ids: Sequence[str], op: Op, source: Role) -> None:
        """Make the intents durable (committed) before the primary is written.

        An id already waiting keeps its age, so `oldest_age_seconds` measures the longest
        wait, and takes the new source: the store being written now is the truth for it."""
        now = time.time()
        with self._lock, write_transaction(self._conn):
            self._conn.executemany(
                """INSERT INTO intents (collection, id, op, source, created_at) VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT (collection, id) DO UPDATE SET op = excluded.op, source = excluded.source""",
                [(self.collection, i, op, source, now) for i in ids],
            )

    def clear(self, ids: Sequence[str]) -> None:
        """Both stores now hold the same thing for these ids."""
        with self._lock, write_transaction(self._conn):
            self._conn.executemany(
                "DELETE FROM intents WHERE collection = ? AND id = ?", [(self.collection, i) for i in ids]
            )

    def failed(self, ids: Sequence[str], error: str) -> None:
        with self._lock, write_transaction(self._conn):
            self._conn.executemany(
                "UPDATE intents SET attempts = attempts + 1, last_error = ? WHERE collection = ? AND id = ?",
                [(error[:500], self.collection, i) for i in ids],
            )

    def pending(self, limit: int) -> list[Intent]:
        """Waiting intents, the least often tried first, then the oldest: an id that keeps
        failing sinks behind fresh ones instead of blocking them."""
        rows = self._execute(
            "SELECT id, op, source, created_at, attempts FROM intents WHERE collection = ? "
            "ORDER BY attempts, created_at LIMIT ?",
            (self.collection, limit),
        )
        return [Intent(*row) for row in rows]

    def waiting(self) -> dict[str, Role]:
        """Ids waiting and the store that is the truth for each.

        Call it holding `write_lock()`: live writers clear their intents before letting go, so
        what remains is only writes whose secondary failed (or a crashed process left), few."""
        depth = self.stats().depth
        return {intent.id: intent.source for intent in self.pending(depth)} if depth else {}

    @classmethod
    def peek(cls, path: Path, collection: str) -> OutboxStats:
        """The stats of an outbox, without creating one where there is none."""
        if not path.exists():
            return OutboxStats(0, 0.0)
        with cls(path, collection) as outbox:
            return outbox.stats()

    def stats(self) -> OutboxStats:
        depth, oldest = self._execute(
            "SELECT count(*), min(created_at) FROM intents WHERE collection = ?", (self.collection,)
        )[0]
        age = max(0.0, time.time() - oldest) if oldest is not None else 0.0
        return OutboxStats(int(depth), age)

    def close(self) -> None:
        if self._owner:
            with self._lock:
                self._conn.close()
