"""The admin API's guard: `Authorization: Bearer <DUALVEC_ADMIN_TOKEN>`, as a dependency of the
admin router only (the data API stays open to whoever can reach the service).

With no token set the guard lets every request through; the service then refuses to listen
beyond loopback (`dualvec.service.listen`), so only the machine itself can reach it.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from dualvec.service.errors import ApiError
from dualvec.service.state import ServiceDep

__all__ = ["require_admin"]

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="adminToken",
    description="The value of DUALVEC_ADMIN_TOKEN in the service's environment.",
)


async def require_admin(
    service: ServiceDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    token = service.admin_token
    if token is None:
        return
    if credentials is None:
        raise ApiError(
            401,
            "Unauthorized",
            "the admin API needs the header Authorization: Bearer <DUALVEC_ADMIN_TOKEN>",
            "authorization",
            {"WWW-Authenticate": "Bearer"},
        )
    # Constant time: how long a refusal takes says nothing about how much of the token matched.
    if not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
        raise ApiError(
            401,
            "Unauthorized",
            "the bearer token is not this service's DUALVEC_ADMIN_TOKEN",
            "authorization",
            {"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
