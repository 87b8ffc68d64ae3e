"""Request ids: the caller's X-Request-ID when safe, else a fresh UUID4.

Pure ASGI middleware (not BaseHTTPMiddleware) so it adds no task switch per request
and also covers responses produced by exception handlers. It also adds the headers
that dependencies registered for the response (rate-limit headers), whichever
Response object the handler returns, and measures and logs every request
(`request_metrics.py`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from contextvars import ContextVar

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control_plane.core import access_log, request_metrics

HEADER = "X-Request-ID"
# A UUID or a short token of safe characters: anything else is replaced, never echoed.
_SAFE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

_request_id: ContextVar[str] = ContextVar("request_id", default="")
# One dict per request, created by the middleware and filled in place by dependencies
# (which may run in a copied context: mutation is visible, a new `set` would not be).
_pending_headers: ContextVar[dict[str, str] | None] = ContextVar("pending_headers", default=None)


def add_response_headers(headers: Mapping[str, str]) -> None:
    """Headers for the current request's response, added when it starts."""
    pending = _pending_headers.get()
    if pending is not None:
        pending.update(headers)


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
        pending: dict[str, str] = {}
        headers_token = _pending_headers.set(pending)
        facts, facts_token = access_log.begin_request(request_id)
        started_at = request_metrics.started()
        status = request_metrics.NO_ANSWER

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers[HEADER] = request_id
                for name, value in pending.items():
                    if name not in headers:  # an error response's own headers win
                        headers[name] = value
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
            # Measured and logged here: every route, the lane's too, and every error.
            request_metrics.finished(scope, status, started_at, facts)
            access_log.end_request(facts_token)
            _request_id.reset(token)
            _pending_headers.reset(headers_token)
