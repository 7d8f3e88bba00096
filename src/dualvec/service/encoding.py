"""JSON answers written straight to bytes.

Endpoints hand back plain dicts and lists, serialised by pydantic-core's Rust encoder: a
thousand exported vectors cost milliseconds, where validating them again through the response
models and `json.dumps` would cost far more. The response models still describe these shapes
in the OpenAPI schema, and the tests check each answer against them.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import Response
from pydantic_core import to_json

__all__ = ["json_response"]


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(to_json(content), status_code=status, headers=headers, media_type="application/json")
