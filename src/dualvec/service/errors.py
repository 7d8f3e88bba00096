"""One error shape for every answer that is not a success, and the handlers that produce it.

Every error the service sends, from a route it does not have to a store that failed, is::

    {"error": {"type": "ValidationError", "message": "records[0].vector: ...", "field": "records[0].vector"}}

`type` is the name of the `dualvec.errors` class when the library raised one (so a client can
map it back onto the same tree), else one of the service's own: `MalformedJSON`, `NotFound`,
`MethodNotAllowed`, `PayloadTooLarge`, `Unauthorized`, `NotReady`, `InternalError`. `field` is
the JSON path of the offending input (`records[2].metadata.lang`, `filter.year.$gte`, `k`,
`cursor`, the path parameter `name`), or null when no one input is at fault.

=====================  ======  ==============================================================
what                   status  why this status
=====================  ======  ==============================================================
MalformedJSON          400     the body is not JSON, or not sent as JSON
Unauthorized           401     the admin API needs the bearer token
NotFound               404     unknown route or collection (the message lists the declared ones)
MethodNotAllowed       405     the route exists for other methods (``Allow`` header)
ModelMismatchError     409     well-formed, but conflicts with the collection's embedding model:
                               re-embed or pick another collection; retrying cannot help
PayloadTooLarge        413     body over the byte limit, or a batch over the record limit: split it
ValidationError        422     a field fails the API's or the library's checks
StoreError (and        503     a store failed; transient as far as the caller can tell, so
StoreLockedError)              ``Retry-After`` is set. The message names the store, never a trace
NotReady               503     the stores are not open (starting or stopping)
other DualvecError,    500     a fault of the service; the details go to the log, not the client
InternalError
=====================  ======  ==============================================================

A refused request (4xx) has written nothing: the API's checks and the library's all run before
any store is touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from dualvec.errors import DualvecError, ModelMismatchError, StoreError, ValidationError
from dualvec.logs import get_logger
from dualvec.service.encoding import json_response
from dualvec.service.fields import field_of, json_path

__all__ = ["ApiError", "error_content", "install_error_handlers"]

log = get_logger("dualvec.service")

# Seconds a client should wait before retrying after a store failure.
_RETRY_AFTER = "1"
_HTTP_TYPES = {
    400: "MalformedJSON",
    401: "Unauthorized",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "PayloadTooLarge",
}


class ApiError(Exception):
    """An error answer the service decided on: status, type, message, the field at fault."""

    def __init__(
        self,
        status: int,
        type: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.field = field
        self.headers = headers or {}


def error_content(type: str, message: str, field: str | None) -> dict[str, Any]:
    return {"error": {"type": type, "message": message, "field": field}}


def _answer(error: ApiError) -> Response:
    return json_response(
        error_content(error.type, error.message, error.field), status=error.status, headers=error.headers
    )


def _dualvec_status(exc: DualvecError) -> ApiError:
    """The library's error tree mapped onto status codes (see the table above)."""
    name = type(exc).__name__
    message = str(exc)
    if isinstance(exc, ModelMismatchError):
        return ApiError(409, name, message, "model")
    if isinstance(exc, ValidationError):
        return ApiError(422, name, message, field_of(message))
    if isinstance(exc, StoreError):
        return ApiError(503, name, message, None, {"Retry-After": _RETRY_AFTER})
    return ApiError(500, name, message)


def _request_validation(errors: Sequence[Any]) -> ApiError:
    """FastAPI's parse and validation errors: one message naming every problem; the first
    problem's field."""
    first = errors[0]
    if first["type"] == "json_invalid":
        reason = first.get("ctx", {}).get("error", "invalid JSON")
        return ApiError(
            400, "MalformedJSON", f"body is not valid JSON ({reason} at character {first['loc'][-1]})", "body"
        )
    if tuple(first["loc"]) == ("body",) and isinstance(first.get("input"), bytes):
        return ApiError(
            400, "MalformedJSON", "body: send a JSON object with Content-Type: application/json", "body"
        )
    problems = [f"{json_path(error['loc'])}: {error['msg']}" for error in errors[:10]]
    more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
    return ApiError(422, "ValidationError", "; ".join(problems) + more, json_path(first["loc"]))


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception to the one error shape."""

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _answer(exc)

    async def dualvec_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DualvecError)
        error = _dualvec_status(exc)
        if error.status >= 500:
            log.error("request_failed", path=request.url.path, error=repr(exc))
        return _answer(error)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return _answer(_request_validation(exc.errors()))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        headers = {name.lower(): value for name, value in (exc.headers or {}).items()}
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see /openapi.json for the API"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; use {headers.get('allow')}"
        else:
            message = str(exc.detail)
        return _answer(
            ApiError(exc.status_code, _HTTP_TYPES.get(exc.status_code, "HTTPError"), message, None, headers)
        )

    async def internal_error(request: Request, exc: Exception) -> Response:
        # Starlette logs the traceback after this answer; the client sees none of it.
        return _answer(ApiError(500, "InternalError", "the service failed on this request; see its log"))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(DualvecError, dualvec_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)
