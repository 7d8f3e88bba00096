"""A request body over the limit is refused with 413 before any of it is parsed.

A declared `Content-Length` over the limit is refused before a byte is read; a chunked body is
counted as it arrives and refused as soon as it passes the limit. A body within the limit is
handed on whole (every endpoint reads its body whole anyway).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dualvec.service.encoding import json_response
from dualvec.service.errors import error_content

__all__ = ["BodyLimit"]


class BodyLimit:
    """Pure ASGI middleware: a thin layer, so every request pays almost nothing for it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its whole body
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body: Message | None = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay() -> Message:
            nonlocal body
            if body is None:
                return await receive()
            message, body = body, None
            return message

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        content = error_content(
            "PayloadTooLarge",
            f"the request body is over this service's limit of {self.max_bytes} bytes; split the batch",
            "body",
        )
        await json_response(content, status=413)(scope, receive, send)
