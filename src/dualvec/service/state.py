"""What every request of one app shares, and the dependencies that hand it to endpoints."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, cast

from fastapi import Depends, Path, Request

from dualvec.migration import Migration
from dualvec.router import Router
from dualvec.service.errors import ApiError
from dualvec.service.export import Exports
from dualvec.service.jobs import Jobs
from dualvec.service.limits import Limits

__all__ = ["Collection", "Service", "ServiceDep", "service_of"]

# How much of an unknown name an error message repeats back.
_SHOWN = 100


class Service:
    """The migration an app serves (open between its startup and its shutdown), its limits,
    its admin token, its exports in progress and its admin jobs."""

    def __init__(self, migration: Callable[[], Migration], limits: Limits, admin_token: str | None) -> None:
        self._migration = migration
        self.limits = limits
        self.admin_token = admin_token or None
        self.exports = Exports()
        self.jobs = Jobs()
        self._open: Migration | None = None

    def start(self) -> None:
        self._open = self._migration()

    def stop(self) -> None:
        self.jobs.stop()  # before the stores close under a running backfill or verify
        migration, self._open = self._open, None
        if migration is not None:
            migration.close()

    @property
    def migration(self) -> Migration:
        """The open migration; 503 while the app starts or stops."""
        if self._open is None:
            raise ApiError(
                503,
                "NotReady",
                "the service's stores are not open (it is starting or stopping); retry shortly",
                headers={"Retry-After": "1"},
            )
        return self._open

    def router(self, name: str) -> Router:
        """The named collection's router; 404 naming the declared ones. The name is only ever a
        key looked up here, so no name a client sends reaches SQL or a path."""
        routers = self.migration.routers
        router = routers.get(name)
        if router is None:
            raise ApiError(
                404,
                "NotFound",
                f"collection {name[:_SHOWN]!r} is not declared; declared: {sorted(routers)}",
                "name",
            )
        return router


def _service(request: Request) -> Service:
    return cast(Service, request.app.state.service)


# The dependencies are async: one that does no I/O must not cost a trip through the thread pool.


async def service_of(request: Request) -> Service:
    return _service(request)


ServiceDep = Annotated[Service, Depends(service_of)]


async def _collection(
    request: Request, name: Annotated[str, Path(description="A declared collection (GET /collections).")]
) -> Router:
    # Not through ServiceDep: every level of dependencies costs each request its resolution.
    return _service(request).router(name)


Collection = Annotated[Router, Depends(_collection)]
