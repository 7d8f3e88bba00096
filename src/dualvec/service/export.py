"""Exporting a collection page by page while writes go on.

What an export promises (the contract of `GET /collections/{name}/records`):

- Records come in id order (by code point), from the collection's primary store, the source of
  truth in every phase.
- The first page takes the list of ids the collection holds at that moment; the export walks
  that list. A record held throughout the export is returned exactly once; no record is ever
  returned twice.
- Each page reads its records' current values when it is served: a record updated before its
  page comes back updated, one deleted before its page is left out (so a page may hold fewer
  than `limit` records while more follow).
- Records created after the first page are not part of the export: export again, or write them
  to your own change feed, to catch them.
- `next_cursor` is opaque. It names the last id the export has passed, so it stays valid when
  the service forgets the export (idle for 10 minutes, more than a few exports at once, a
  restart): the export then takes a fresh id list and goes on after that id, still without a
  repeat, and now including records created meanwhile with later ids.

Why a list of ids and not "ids after the cursor" asked of the store each page: the store
protocol has no ordered range read, and a scan per page would read the whole collection once
per page.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
import time
from bisect import bisect_right
from collections import OrderedDict
from dataclasses import dataclass, field

from dualvec.phases import write_roles
from dualvec.records import Record
from dualvec.router import Router
from dualvec.service.errors import ApiError

__all__ = ["DEFAULT_PAGE", "Exports"]

DEFAULT_PAGE = 1000
_IDLE_SECONDS = 600.0
# Each export in progress holds its id list in memory; an export evicted beyond this rebuilds it.
_MAX_EXPORTS = 4
_SCAN_BATCH = 1000


@dataclass
class _Export:
    ids: list[str]
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    used: float = field(default_factory=time.monotonic)


def _encode(collection: str, token: str, after: str) -> str:
    text = json.dumps([collection, token, after], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode(cursor: str, collection: str) -> tuple[str, str]:
    """(export token, last id passed) from a cursor this service returned for `collection`."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        data = None
    if not (isinstance(data, list) and len(data) == 3 and all(isinstance(part, str) for part in data)):
        raise ApiError(
            422,
            "ValidationError",
            "cursor: not a cursor this service returned; pass next_cursor from the previous page, "
            "or leave cursor out to start an export",
            "cursor",
        )
    if data[0] != collection:
        raise ApiError(
            422,
            "ValidationError",
            f"cursor: belongs to an export of collection {data[0]!r}, not {collection!r}",
            "cursor",
        )
    return data[1], data[2]


class Exports:
    """The id lists of the exports in progress, shared by every request thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # By (collection, token): a token never walks another collection's id list.
        self._exports: OrderedDict[tuple[str, str], _Export] = OrderedDict()

    def page(self, router: Router, cursor: str | None, limit: int) -> tuple[list[Record], str | None]:
        """The next `limit` records of an export (from the start when `cursor` is None) and the
        cursor that continues it, None after the last page."""
        collection = router.spec.name
        after: str | None = None
        export: _Export | None = None
        if cursor is not None:
            token, after = _decode(cursor, collection)
            export = self._resume((collection, token))
        if export is None:
            export = self._begin(router)
        ids = export.ids
        position = 0 if after is None else bisect_right(ids, after)
        store = router.stores[write_roles(router.flags.flags.phase)[0]]
        records: list[Record] = []
        # Ids deleted since the list was taken are skipped; the page is filled from those after.
        while len(records) < limit and position < len(ids):
            chunk = ids[position : position + limit - len(records)]
            position += len(chunk)
            records += store.get(chunk)
        if position >= len(ids):
            self._finish((collection, export.token))
            return records, None
        return records, _encode(collection, export.token, ids[position - 1])

    def _resume(self, key: tuple[str, str]) -> _Export | None:
        with self._lock:
            export = self._exports.get(key)
            if export is not None:
                export.used = time.monotonic()
                self._exports.move_to_end(key)
            return export

    def _begin(self, router: Router) -> _Export:
        # The scan runs outside the lock: other exports go on while this one lists its ids.
        ids = sorted(record.id for batch in router.scan(_SCAN_BATCH) for record in batch)
        export = _Export(ids)
        with self._lock:
            now = time.monotonic()
            for key in [k for k, e in self._exports.items() if now - e.used > _IDLE_SECONDS]:
                del self._exports[key]
            self._exports[(router.spec.name, export.token)] = export
            while len(self._exports) > _MAX_EXPORTS:
                self._exports.popitem(last=False)
        return export

    def _finish(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._exports.pop(key, None)
