"""The ASGI app of `dualvec serve`: the data API, probes and the admin API over one migration."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from dualvec import __version__
from dualvec.guard.loop import ContinuousGuard
from dualvec.guard.runs import RampRuns
from dualvec.migration import Migration
from dualvec.service import admin, data, probes
from dualvec.service.body_limit import BodyLimit
from dualvec.service.errors import install_error_handlers
from dualvec.service.limits import Limits
from dualvec.service.state import Service

__all__ = ["create_app"]

_DESCRIPTION = """\
The stores of every collection, behind one HTTP service, for applications that cannot import
Python and for stores only one process may open. Vectors travel as JSON numbers (`vector`) or
as base64 of little-endian float32 (`vector_b64`). Every error is
`{"error": {"type", "message", "field"}}`; a refused request (4xx) has written nothing.
"""


def create_app(
    migration: Callable[[], Migration],
    *,
    limits: Limits | None = None,
    admin_token: str | None = None,
) -> FastAPI:
    """An app serving the migration that `migration()` gives at startup, closed at shutdown.

    `migration` may open the stores itself (`lambda: Migration.from_settings(settings)`) or hand
    over one already open (the CLI does, so that a store that cannot open is a one-line error
    before the port is served). `admin_token`: the bearer token the admin API requires; None
    leaves it open, which only a loopback listener may do.
    """
    service = Service(migration, limits or Limits(), admin_token)
    ramps = RampRuns()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Opening and closing stores blocks; the event loop stays free meanwhile.
        await run_in_threadpool(service.start)
        opened = service.migration
        guard = ContinuousGuard(opened) if opened.settings.guard.enabled else None
        try:
            yield
        finally:
            # Ramps and the guard change flags from the stores' metrics: they stop first.
            await run_in_threadpool(ramps.close)
            if guard is not None:
                await run_in_threadpool(guard.close)
            await run_in_threadpool(service.stop)

    app = FastAPI(
        title="dualvec",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        # A missing or extra slash is a 404 in the error shape, not a redirect a client must follow.
        redirect_slashes=False,
        # Operation ids are the endpoints' names (search, upsert_records, ...): what generated
        # clients call their methods.
        generate_unique_id_function=lambda route: route.name,
    )
    app.state.service = service
    app.state.ramps = ramps
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=service.limits.max_body_bytes)
    for router in (data.router, probes.router, admin.router):
        app.include_router(router)
    return app
