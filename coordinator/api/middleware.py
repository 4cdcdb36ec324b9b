"""ASGI middleware: every HTTP response carries an ``x-request-id`` header."""

from __future__ import annotations

import secrets

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RequestIdMiddleware", "request_id_of"]

_HEADER = b"x-request-id"


def request_id_of(scope: Scope) -> str:
    """The id this request was given (``req_`` + 24 hex characters)."""
    return str(scope.get("state", {}).get("request_id", ""))


class RequestIdMiddleware:
    """Assigns an id to each HTTP request and adds it to the response headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        request_id = f"req_{secrets.token_hex(12)}"
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((_HEADER, request_id.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)
