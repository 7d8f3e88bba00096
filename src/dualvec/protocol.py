"""The store contract every backend and the router implement.

A `typing.Protocol`, so an application can adapt its own store without inheriting from dualvec.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol, runtime_checkable

from dualvec.filters import Filter
from dualvec.records import Hit, Record
from dualvec.spec import CollectionSpec

__all__ = ["VectorStore"]


@runtime_checkable
class VectorStore(Protocol):
    """One collection in one backend, with the same semantics whichever backend it is.

    - `upsert` replaces whole records by id, atomically per batch where the backend allows.
    - `get` returns the records found, in the order asked, silently skipping missing ids.
    - `search` returns at most `k` hits, closest first, distances in the spec's metric.
    - `scan` yields every record exactly once, in batches, in memory bounded by `batch_size`.
    - `exact` is False when answers come from an approximate index.
    """

    spec: CollectionSpec
    exact: bool

    def upsert(self, records: Iterable[Record], *, model: str | None = None) -> None: ...

    def delete(self, ids: Sequence[str]) -> None: ...

    def get(self, ids: Sequence[str]) -> list[Record]: ...

    def search(
        self,
        vector: object,
        k: int = 10,
        filter: Filter | None = None,
        *,
        model: str | None = None,
    ) -> list[Hit]: ...

    def count(self) -> int: ...

    def scan(self, batch_size: int = 1000) -> Iterator[list[Record]]: ...

    def close(self) -> None: ...
