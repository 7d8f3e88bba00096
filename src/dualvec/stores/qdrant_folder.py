"""What one Qdrant local-mode folder holds for dualvec: its one client, and the bound specs.

Local mode locks its folder exclusively: a second `QdrantClient(path=...)` fails even inside the
same process. Every store this process opens on a folder therefore borrows one shared client
(with a lock that serialises calls, since local mode is not thread-safe) and gives it back on
close; the last one out closes the client, which releases the folder. A folder that another
process holds raises `StoreLockedError` naming it.

A forked child does not own its parent's clients (`_disown_after_fork`): it must neither use
them nor close them, since closing releases the folder's lock, which parent and child share
through the inherited file.

Each collection's spec is kept beside Qdrant's files, in ``dualvec/<collection>.json``, so a
reopen with another model or layout is refused, as the SQLite stores refuse it. How the store
finds its record ids (``?id=`` on the URL) is kept beside it, in ``dualvec/<collection>.ids``:
it is part of the layout, and no check on the points alone can tell it (a collection dualvec
filled with uuid5 point ids also looks like one an application keys by UUIDs).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import portalocker
from qdrant_client import QdrantClient
from qdrant_client.models import ExtendedPointId

from dualvec.errors import ConfigError, StoreLockedError
from dualvec.files import write_atomic
from dualvec.forking import keep
from dualvec.spec import CollectionSpec, check_same_spec

__all__ = [
    "IdSource",
    "SharedClient",
    "bind_ids",
    "bind_spec",
    "borrow",
    "check_bound_ids",
    "check_bound_spec",
    "give_back",
]

# Where a record's id lives: a payload key (`spec.id_source`) or the point id itself.
IdSource = Literal["payload", "point"]

# qdrant-client's own lock file inside the folder (qdrant_client/local/qdrant_local.py).
_LOCK_FILE = ".lock"
_SPEC_DIR = "dualvec"


@dataclass
class SharedClient:
    """The folder's client, the lock every call on it takes, and per-collection id maps."""

    folder: Path
    client: QdrantClient
    lock: threading.RLock = field(default_factory=threading.RLock)
    users: int = 0
    # (qdrant collection, payload id key) -> caller id -> point id; see qdrant_local for why
    # it lives here.
    point_ids: dict[tuple[str, str], dict[str, ExtendedPointId]] = field(default_factory=dict)


@dataclass
class _Folders:
    """The folders this process holds a client on, and the lock over that map."""

    clients: dict[Path, SharedClient] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


_OPEN = _Folders()


def _held_elsewhere(folder: Path) -> bool:
    """Whether some other client holds the folder's lock: try to take it, and let go at once."""
    lock_file = folder / _LOCK_FILE
    if not lock_file.exists():
        return False
    with lock_file.open("a") as handle:
        try:
            portalocker.lock(handle, portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING)
        except portalocker.exceptions.LockException:
            return True
        portalocker.unlock(handle)
    return False


def _locked(folder: Path) -> StoreLockedError:
    return StoreLockedError(
        f"qdrant-local folder {folder} is locked: another process (or a QdrantClient outside "
        "dualvec in this process) has it open, and Qdrant's local mode lets only one client use a "
        "folder at a time. Close that store or stop that process, then retry; for concurrent "
        "access run a Qdrant server instead"
    )


def _open_client(folder: Path) -> QdrantClient:
    # Checked first because a client that fails on the lock has already opened every
    # collection's storage, and leaks those files.
    if _held_elsewhere(folder):
        raise _locked(folder)
    try:
        # Safe: every call goes through SharedClient.lock. Needed where SQLite is built with
        # THREADSAFE=2 (macOS), or a router's shadow-read thread could not use the store.
        return QdrantClient(path=str(folder), force_disable_check_same_thread=True)
    except RuntimeError as exc:
        if _held_elsewhere(folder):
            raise _locked(folder) from exc
        raise


def borrow(folder: Path) -> SharedClient:
    """The folder's shared client, opened if this process has none yet."""
    folder = folder.resolve()
    with _OPEN.lock:
        shared = _OPEN.clients.get(folder)
        if shared is None:
            shared = SharedClient(folder, _open_client(folder))
            _OPEN.clients[folder] = shared
        shared.users += 1
        return shared


def give_back(shared: SharedClient) -> None:
    """Return a borrowed client; the last user closes it, releasing the folder's lock."""
    with _OPEN.lock:
        shared.users -= 1
        if shared.users > 0:
            return
        del _OPEN.clients[shared.folder]
        # Closed under the lock so that a concurrent borrow cannot meet the lock still held.
        with shared.lock:
            shared.client.close()


def _disown_after_fork() -> None:
    """In a forked child: the parent's clients are not this process's. A store opened here must
    not borrow one, and none may be closed: closing unlocks the folder's lock file, a lock that
    belongs to the open file parent and child share, so the parent would lose the folder."""
    _OPEN.lock = threading.Lock()  # a thread that held it is gone
    keep(*(shared.client for shared in _OPEN.clients.values()))
    _OPEN.clients.clear()


os.register_at_fork(after_in_child=_disown_after_fork)


def _spec_path(folder: Path, name: str) -> Path:
    return folder / _SPEC_DIR / f"{name}.json"


def check_bound_spec(folder: Path, spec: CollectionSpec) -> bool:
    """Refuse `spec` if its collection was bound to another; return whether one was bound."""
    path = _spec_path(folder, spec.name)
    if not path.exists():
        return False
    check_same_spec(CollectionSpec.model_validate_json(path.read_text(encoding="utf-8")), spec)
    return True


def bind_spec(folder: Path, spec: CollectionSpec) -> None:
    """Store `spec` as the one its collection is bound to."""
    _write(_spec_path(folder, spec.name), spec.model_dump_json(indent=2))


def _write(path: Path, text: str) -> None:
    write_atomic(path, text.encode("utf-8"))


def _ids_path(folder: Path, name: str) -> Path:
    return folder / _SPEC_DIR / f"{name}.ids"


def check_bound_ids(folder: Path, spec: CollectionSpec, ids: IdSource, spec_bound: bool) -> None:
    """Refuse to read a collection's record ids from anywhere but where its first open read them.

    A spec bound before the ids were recorded was bound by a dualvec that only read them from
    the payload."""
    path = _ids_path(folder, spec.name)
    if path.exists():
        bound = json.loads(path.read_text(encoding="utf-8"))["ids"]
    elif spec_bound:
        bound = "payload"
    else:
        return
    if bound != ids:
        raise ConfigError(
            f"collection {spec.name!r} was opened with {_describe(bound)}, now with {_describe(ids)}; "
            f"use the store URL it was opened with (the binding is in {path})"
        )


def _describe(ids: str) -> str:
    return "?id=point (record ids are the point ids)" if ids == "point" else "record ids in the payload"


def bind_ids(folder: Path, spec: CollectionSpec, ids: IdSource) -> None:
    """Record where the collection's record ids live."""
    _write(_ids_path(folder, spec.name), json.dumps({"ids": ids}))
