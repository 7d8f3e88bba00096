"""The outbox: durable intents for writes the secondary store may not have received.

An intent names an id, the operation and which store was the source of truth when it was
written. It is committed before the primary is touched and cleared only after the secondary
has the same record, so a crash or an outage at any point leaves ids to repair, never a silent
difference. One small SQLite file; one transaction per batch.

Writers and replayers of a collection, in every process, serialise on `write_lock()`, an
exclusive `flock` on a file beside the outbox for that collection (released by the kernel when
a process dies), so a replay that re-reads the primary can never overwrite a newer write with
an older one, while writes to other collections go on. Every collection of a process shares one
connection to the file (`for_collection`). A forked child re-opens it on first use and makes new
locks (see `dualvec.forking`).
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
from dualvec.forking import close_or_keep, register, working
from dualvec.sqlite_driver import connect, write_transaction

__all__ = ["Intent", "Outbox", "OutboxStats", "WriteWatch", "other_role"]

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


class _Connection:
    """The outbox file's one connection and the lock that serialises its use, shared by every
    collection's handle; re-opened on first use in a forked child."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self._conn = self._open()
        self._stale = False
        self._closed = False
        register(self, "handles")

    def _open(self) -> Any:
        conn = connect(self.path, vec=False)
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    @property
    def conn(self) -> Any:
        """The connection; use it holding `lock`."""
        if self._stale:
            self._conn = self._open()
            self._stale = False
        return self._conn

    def after_fork(self, clean: bool) -> None:
        if self._closed:
            return
        self.lock = threading.Lock()
        close_or_keep(clean, self._conn)
        self._stale = True

    def close(self) -> None:
        with self.lock:
            self._conn.close()
            self._closed = True


class Outbox(Closing):
    """Intents for one collection, in a SQLite file shared by every process of a deployment."""

    def __init__(self, path: str | Path, collection: str) -> None:
        self.path = Path(path)
        self._db = _Connection(self.path)
        self._owner = True
        self._bind(collection)
        try:
            with working(), self._db.lock, write_transaction(self._db.conn):
                conn = self._db.conn
                conn.execute(
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
                conn.execute("CREATE INDEX IF NOT EXISTS intents_by_age ON intents (collection, created_at)")
                conn.execute(
                    "CREATE INDEX IF NOT EXISTS intents_by_attempts "
                    "ON intents (collection, attempts, created_at)"
                )
        except BaseException:
            self._db.close()
            raise

    def _bind(self, collection: str) -> None:
        self.collection = collection
        self._thread_lock = threading.RLock()
        self._lock_path = self.path.with_name(f"{self.path.name}.{collection}.lock")
        self._lock_depth = 0
        register(self, "handles")

    def after_fork(self, clean: bool) -> None:
        """In a forked child: a new write lock (the connection re-opens by itself)."""
        self._thread_lock = threading.RLock()
        self._lock_depth = 0

    def for_collection(self, collection: str) -> Outbox:
        """The intents of `collection`, on this outbox's connection (which this one closes)."""
        handle = copy.copy(self)
        handle._owner = False
        handle._bind(collection)
        return handle

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """Exclusive across threads and processes; re-entrant within a thread. A fork waits for
        it to be let go, so no child inherits the lock file held by a thread it does not have."""
        with working(), self._thread_lock, ExitStack() as held:
            if self._lock_depth == 0:
                held.enter_context(exclusive_lock(self._lock_path))
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with working(), self._db.lock:
            return list(self._db.conn.execute(sql, params).fetchall())

    def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """One write transaction."""
        with working(), self._db.lock:
            conn = self._db.conn
            with write_transaction(conn):
                conn.executemany(sql, rows)

    def record(self, ids: Sequence[str], op: Op, source: Role) -> None:
        """Make the intents durable (committed) before the primary is written.

        An id already waiting keeps its age, so `oldest_age_seconds` measures the longest
        wait, and takes the new source: the store being written now is the truth for it."""
        now = time.time()
        self._executemany(
            """INSERT INTO intents (collection, id, op, source, created_at) VALUES (?, ?, ?, ?, ?)
               ON CONFLICT (collection, id) DO UPDATE SET op = excluded.op, source = excluded.source""",
            [(self.collection, i, op, source, now) for i in ids],
        )

    def clear(self, ids: Sequence[str]) -> None:
        """Both stores now hold the same thing for these ids."""
        self._executemany(
            "DELETE FROM intents WHERE collection = ? AND id = ?", [(self.collection, i) for i in ids]
        )

    def failed(self, ids: Sequence[str], error: str) -> None:
        self._executemany(
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
            self._db.close()


class WriteWatch:
    """Whether any write has been committed to the outbox file since the watch began.

    Every live write, replay and repair commits its intents here before it touches a store, so
    a quiet outbox file means no store has changed since: backfill then trusts what it scanned
    instead of re-reading it. Unlike `dualvec.recent_writes.RecentWrites` (one process, per id),
    this sees every process but not which ids; a commit for another collection also counts,
    which only costs a re-read.

    SQLite's `PRAGMA data_version` changes on a connection whenever another connection, in this
    process or any other, has committed to the file. The watch reads it on a connection of its
    own, which never writes, so every writer counts."""

    def __init__(self, outbox: Outbox) -> None:
        self._conn = connect(outbox.path, vec=False)
        self._start = self._version()

    def _version(self) -> int:
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def quiet(self) -> bool:
        return self._version() == self._start

    def close(self) -> None:
        self._conn.close()
