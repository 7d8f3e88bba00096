"""The thin base class the built-in adapters share.

It owns the contract's checks (validation, model, metric) so every adapter behaves the same on
bad input, and maps backend exceptions to `StoreError` at the boundary. Adapters implement the
underscored methods and only ever see clean input.

Every backend call runs inside `forking.working()`, so a fork never splits one. In a forked
child a store lets go of what the parent opened (`after_fork`) and re-opens it on its first
call there (`_reopen`), whatever the adapter.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import ClassVar, TypeVar

from dualvec.closing import Closing
from dualvec.errors import DualvecError, StoreError, UnsupportedMetricError, ValidationError
from dualvec.filters import Condition, Filter, parse_filter
from dualvec.forking import register, working
from dualvec.records import Hit, Record, Vector
from dualvec.spec import CollectionSpec, Metric
from dualvec.validation import (
    MAX_BATCH,
    check_ids,
    check_k,
    check_model,
    check_query_vector,
    check_records,
)

__all__ = ["BaseStore"]

T = TypeVar("T")


class BaseStore(Closing, ABC):
    """Validation and error mapping around a backend's primitive operations."""

    backend: ClassVar[str]
    metrics: ClassVar[frozenset[Metric]] = frozenset({"cosine", "l2", "dot"})
    exact: bool = True
    # Set in a forked child until the store has re-opened what the parent had open.
    _stale: bool = False
    _closed: bool = False

    def __init__(self, spec: CollectionSpec) -> None:
        if spec.metric not in self.metrics:
            raise UnsupportedMetricError(
                f"{self.backend} cannot compute metric {spec.metric!r} for collection "
                f"{spec.name!r}; supported: {sorted(self.metrics)}"
            )
        self.spec = spec
        register(self, "handles")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec.name!r}>"

    def upsert(self, records: Iterable[Record], *, model: str | None = None) -> None:
        check_model(self.spec, model)
        clean = check_records(self.spec, records)
        if clean:
            self._guard("upsert", self._upsert, clean)

    def delete(self, ids: Sequence[str]) -> None:
        clean = check_ids(self.spec, ids)
        if clean:
            self._guard("delete", self._delete, clean)

    def get(self, ids: Sequence[str]) -> list[Record]:
        clean = check_ids(self.spec, ids)
        return self._guard("get", self._get, clean) if clean else []

    def search(
        self,
        vector: object,
        k: int = 10,
        filter: Filter | None = None,
        *,
        model: str | None = None,
    ) -> list[Hit]:
        check_model(self.spec, model)
        query = check_query_vector(self.spec, vector)
        limit = check_k(k)
        conditions = parse_filter(self.spec, filter)
        return self._guard("search", self._search, query, limit, conditions)

    def count(self) -> int:
        return self._guard("count", self._count)

    def scan(self, batch_size: int = 1000) -> Iterator[list[Record]]:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise ValidationError(f"batch_size: expected an int, got {batch_size!r}")
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValidationError(f"batch_size: expected 1 to {MAX_BATCH}, got {batch_size}")
        batches = self._guard("scan", self._scan, batch_size)
        while True:
            batch = self._guard("scan", next, batches, None)
            if batch is None:
                return
            if batch:
                yield batch

    def close(self) -> None:
        self._guard("close", self._close)
        self._closed = True

    def after_fork(self, clean: bool) -> None:
        """In a forked child: drop the parent's locks and connections (see `forking`); the next
        call re-opens. A store closed before the fork stays closed."""
        if not self._closed:
            self._forget_parent(clean)
            self._stale = True

    def _guard(self, op: str, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        """Run a backend call, wrapping foreign exceptions so callers catch one tree."""
        try:
            with working():
                if self._stale and op != "close":
                    self._reopen()
                return fn(*args, **kwargs)
        except DualvecError:
            raise
        except Exception as exc:
            raise StoreError(
                f"{self.backend} {op} on collection {self.spec.name!r} failed: {type(exc).__name__}: {exc}"
            ) from exc

    @abstractmethod
    def _upsert(self, records: list[Record]) -> None: ...

    @abstractmethod
    def _delete(self, ids: list[str]) -> None: ...

    @abstractmethod
    def _get(self, ids: list[str]) -> list[Record]: ...

    @abstractmethod
    def _search(self, query: Vector, k: int, conditions: list[Condition]) -> list[Hit]: ...

    @abstractmethod
    def _count(self) -> int: ...

    @abstractmethod
    def _scan(self, batch_size: int) -> Iterator[list[Record]]: ...

    def _close(self) -> None:
        """Release what the store holds open."""

    def _forget_parent(self, clean: bool) -> None:
        """In a forked child: new locks, and the parent's connections closed or kept unused
        (`forking.close_or_keep`). Nothing here may open anything."""

    def _reopen(self) -> None:
        """In a forked child, on the first call: open what `_forget_parent` let go, then clear
        `_stale`; safe when several threads arrive at once."""
        self._stale = False
