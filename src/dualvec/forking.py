"""Safe after `fork()`: a Migration built before it (gunicorn ``--preload``) works in the child.

`fork()` copies only the thread that calls it. In the child, a lock another thread held stays
locked for ever, a thread pool's workers are gone (work queued there never runs), a lock file
held by a vanished thread stays locked through the inherited descriptor, and a SQLite
connection must not be used at all (SQLite's locks belong to a process; its WAL index is
shared memory). So:

- Every unit of dualvec work that touches a store, the outbox or a lock file runs inside
  `working()`. Before a fork the forking thread waits until no such work is in flight in any
  thread, and holds new work back until the fork is done: the child then inherits connections
  that are idle (no transaction open) and no lock file held by a thread it does not have. The
  wait is bounded (`FORK_WAIT_SECONDS`); past it the fork goes on and the child leaves the
  parent's connections untouched instead of closing them.
- In the child, first every live store and outbox lets go of the parent's connections and
  makes new locks (`register(obj, "handles")`); each re-opens its connections on first use, so
  errors reach the caller that needs the store, and no connection is opened before all the
  parent's are closed (SQLite's per-process lock bookkeeping would otherwise count the parent's
  locks as the child's). Then every live Migration starts its own threads and pools and
  publishes its flags again (`register(obj, "machinery")`).
- The parent goes on as before.

Objects are held weakly: registering keeps nothing alive.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from typing import Any, Literal, Protocol

from dualvec.logs import get_logger

__all__ = ["FORK_WAIT_SECONDS", "ForkAware", "Stage", "close_or_keep", "keep", "register", "working"]

log = get_logger("dualvec.forking")

# How long a fork waits for dualvec work in flight (a SQLite write waits up to 30 s for its lock).
FORK_WAIT_SECONDS = 30.0

Stage = Literal["handles", "machinery"]


class ForkAware(Protocol):
    def after_fork(self, clean: bool) -> None:
        """Re-make, in the child, what belonged to the parent. `clean`: no dualvec work was in
        flight at the fork, so the inherited connections are idle and may be closed."""


class _Gate:
    """Counts dualvec work in flight; a fork waits for none and blocks new work meanwhile."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._active = 0
        self._forking = False
        self._local = threading.local()
        self.clean = True

    def _depth(self) -> int:
        depth: int = getattr(self._local, "depth", 0)
        return depth

    def __enter__(self) -> None:
        with self._lock:
            self._active += 1
        self._local.depth = self._depth() + 1

    def __exit__(self, *exc_info: object) -> None:
        self._local.depth -= 1
        with self._lock:
            self._active -= 1
            if self._forking and self._active <= 0:
                self._idle.notify_all()

    def before_fork(self) -> None:
        """Wait for work in flight, then return holding the lock: no work starts until the fork
        is done. Work of the forking thread itself (a fork from inside dualvec) is not waited for."""
        self._lock.acquire()
        own = self._depth()
        deadline = time.monotonic() + FORK_WAIT_SECONDS
        self._forking = True
        while self._active > own and (remaining := deadline - time.monotonic()) > 0:
            self._idle.wait(remaining)
        self._forking = False
        self.clean = self._active <= own

    def after_fork_in_parent(self) -> None:
        self._lock.release()

    def after_fork_in_child(self) -> None:
        # The threads that were counted are gone; the lock is held by this (the forking) thread.
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._active = self._depth()


_gate = _Gate()
_live: dict[Stage, weakref.WeakSet[Any]] = {"handles": weakref.WeakSet(), "machinery": weakref.WeakSet()}
# What a child must never close and never let the garbage collector close (see close_or_keep).
_kept: list[object] = []


def working() -> _Gate:
    """Mark a unit of dualvec work (`with working(): ...`): a fork never splits it. Re-entrant."""
    return _gate


def register(obj: ForkAware, stage: Stage) -> None:
    """Call `obj.after_fork(clean)` in every child forked while `obj` lives: "handles" (stores,
    outboxes: drop the parent's connections and locks) run before "machinery" (migrations:
    start threads and pools, which may use the handles)."""
    _live[stage].add(obj)


def keep(*resources: object) -> None:
    """In a child: hold the parent's `resources` for the life of the child, never to be used,
    so that no garbage collection closes them."""
    _kept.extend(r for r in resources if r is not None)


def close_or_keep(clean: bool, *resources: Any) -> None:
    """In a child, let go of the parent's connections: close them when the fork was clean (they
    are idle); otherwise `keep` them, because closing one that was mid-transaction would touch
    the WAL index the parent still uses."""
    if not clean:
        keep(*resources)
        return
    for resource in resources:
        if resource is not None:
            with contextlib.suppress(Exception):  # the parent's connection, closed on our side only
                resource.close()


def _before() -> None:
    _gate.before_fork()


def _after_in_parent() -> None:
    clean = _gate.clean
    _gate.after_fork_in_parent()
    if not clean:
        log.warning("fork_while_busy", waited_seconds=FORK_WAIT_SECONDS)


def _after_in_child() -> None:
    _gate.after_fork_in_child()
    clean = _gate.clean
    for stage in ("handles", "machinery"):
        for obj in list(_live[stage]):
            try:
                obj.after_fork(clean)
            except Exception as exc:  # one object's failure must not stop the others
                log.error("after_fork_failed", object=repr(obj), pid=os.getpid(), error=repr(exc))


os.register_at_fork(before=_before, after_in_parent=_after_in_parent, after_in_child=_after_in_child)
