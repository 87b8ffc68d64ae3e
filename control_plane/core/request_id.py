"""Request ids: the caller's X-Request-ID when safe, else a fresh UUID4.

Pure ASGI middleware (not BaseHTTPMiddleware) so it adds no task switch per request
and also covers responses produced by exception handlers. It also adds the headers
that dependencies registered for the response (rate-limit headers), whichever
Response object the handler returns, and measures and logs every request
(`request_metrics.py`). `RequestRecord` is that work for one request: the
prediction lane, in front of the middleware stack (`inference/front.py`), does it
for its own requests with the same record.
"""

from __future__ import annotations

import os
import random
import re
import uuid
from collections.abc import Iterable, Mapping
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control_plane.core import access_log, request_metrics

HEADER = "X-Request-ID"
_NAME = b"x-request-id"
# A UUID or a short token of safe characters: anything else is replaced, never echoed.
_SAFE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_VARIANT = "89ab"  # RFC 9562's variant bits (10xx) as the 17th hex digit
# Its own generator, which nobody else seeds, reseeded in a forked child (which would
# otherwise repeat its parent's ids).
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)
# Registered response headers' names as ASGI sends them (a few, named in code).
_RAW_NAMES: dict[str, bytes] = {}

_request_id: ContextVar[str] = ContextVar("request_id", default="")
# One dict per request, created by the middleware and filled in place by dependencies
# (which may run in a copied context: mutation is visible, a new `set` would not be).
_pending_headers: ContextVar[dict[str, str] | None] = ContextVar("pending_headers", default=None)

Headers = list[tuple[bytes, bytes]]


def add_response_headers(headers: Mapping[str, str]) -> None:
    """Headers for the current request's response, added when it starts."""
    pending = _pending_headers.get()
    if pending is not None:
        pending.update(headers)


def new_request_id() -> str:
    """A random UUID4 as `str(uuid.uuid4())` writes it, at a sixth of its cost here:
    no UUID object, and 16 bytes of a Mersenne Twister seeded from os.urandom rather
    than a getrandom syscall per request. A request id must be unique, not secret
    (it is echoed to the caller and authorizes nothing); random rather than a
    counter, so that ids tell nobody how many requests a replica serves."""
    raw = _ids.randbytes(16)
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[raw[8] & 3]}{h[17:20]}-{h[20:]}"


def current_request_id() -> str:
    return _request_id.get() or new_request_id()


def accept_request_id(value: str | None) -> str:
    if value:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            if _SAFE.match(value):
                return value
    return new_request_id()


class RequestRecord:
    """One HTTP request from its start to its end: its id (current while it is
    served), the headers registered for its response, its access-log facts, its
    duration and in-flight count. `end` measures and logs it, once."""

    __slots__ = (
        "_facts_token", "_headers_token", "_id_token", "facts", "pending", "request_id",
        "started_at", "status",
    )  # fmt: skip

    def __init__(self, scope: Scope) -> None:
        supplied = None
        for name, value in scope["headers"]:
            if name == _NAME:
                supplied = value.decode("latin-1")
                break
        self.request_id = accept_request_id(supplied)
        self.pending: dict[str, str] = {}
        self.status: int | None = None  # what the response started with, if it did
        self._id_token = _request_id.set(self.request_id)
        self._headers_token = _pending_headers.set(self.pending)
        self.facts, self._facts_token = access_log.begin_request(self.request_id)
        self.started_at = request_metrics.started()

    def response_headers(self, status: int, headers: Iterable[tuple[bytes, bytes]]) -> Headers:
        """A starting response's headers with the request id and the registered ones
        it does not set itself (an error response's own rate-limit headers win)."""
        self.status = status
        out = [header for header in headers if header[0] != _NAME]
        own = {name for name, _ in out}
        out.append((_NAME, self.request_id.encode("latin-1")))
        for name, value in self.pending.items():
            raw = _RAW_NAMES.get(name)
            if raw is None:
                raw = _RAW_NAMES.setdefault(name, name.lower().encode("latin-1"))
            if raw not in own:
                out.append((raw, value.encode("latin-1")))
        return out

    def end(self, scope: Scope) -> None:
        status = request_metrics.NO_ANSWER if self.status is None else self.status
        request_metrics.finished(scope, status, self.started_at, self.facts)
        access_log.end_request(self._facts_token)
        _request_id.reset(self._id_token)
        _pending_headers.reset(self._headers_token)


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = RequestRecord(scope)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = record.response_headers(
                    message["status"], message.get("headers", ())
                )
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # Answer unexpected errors here, inside the request id's context, with
            # the one error body; Starlette's outer handler would lose both.
            if record.status is not None:
                raise
            from control_plane.core.errors import unexpected_error_response

            response = unexpected_error_response(exc)
            await response(scope, receive, send_with_id)
        finally:
            # Measured and logged here: every route, the lane's too, and every error.
            record.end(scope)
