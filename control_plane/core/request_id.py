"""Request ids: the caller's X-Request-ID when safe, else a fresh UUID4.

Pure ASGI middleware (not BaseHTTPMiddleware) so it adds no task switch per request
and also covers responses produced by exception handlers.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "X-Request-ID"
# A UUID or a short token of safe characters: anything else is replaced, never echoed.
_SAFE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

_request_id: ContextVar[str] = ContextVar("request_id", default="")


def current_request_id() -> str:
    return _request_id.get() or str(uuid.uuid4())


def accept_request_id(value: str | None) -> str:
    if value:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            if _SAFE.match(value):
                return value
    return str(uuid.uuid4())


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                supplied = value.decode("latin-1")
                break
        request_id = accept_request_id(supplied)
        token = _request_id.set(request_id)

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # Answer unexpected errors here, inside the request id's context, with
            # the one error body; Starlette's outer handler would lose both.
            if started:
                raise
            from control_plane.core.errors import unexpected_error_response

            response = unexpected_error_response(exc)
            await response(scope, receive, send_with_id)
        finally:
            _request_id.reset(token)
