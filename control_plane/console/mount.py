"""/console: the web console, a door of its own mounted on the control plane.

A sub-application, so its pages stay out of the API's OpenAPI document and its
errors are HTML pages: the same conversion of every exception as the API's
(`core/errors.py`), drawn as a page with the same status, message and request id.
It shares the app's state, so every dependency of the API (`SessionDep`,
`ComponentsDep`, ...) finds the components the lifespan creates.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control_plane.console import admin_routes, routes
from control_plane.console.pages import PACKAGE, base_path, render
from control_plane.console.sessions import clear_cookie
from control_plane.core.components import components_of
from control_plane.core.errors import (
    AuthenticationError,
    ConchError,
    handled_error_response,
    http_error_response,
    unexpected_error_response,
)
from control_plane.core.settings import Settings

PREFIX = "/console"
# Nothing from elsewhere: our own styles, script and forms; no framing.
_SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}
# The exception classes core/errors.py converts; anything else is the API's 500.
_HANDLED = (
    ConchError, RequestValidationError, StarletteHTTPException, IntegrityError, DataError,
    OverflowError, OperationalError, InterfaceError, PoolTimeoutError, RedisConnectionError,
    RedisTimeoutError,
)  # fmt: skip
_KEPT_HEADERS = ("retry-after", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


class _PageHeaders:
    """Security headers on every console response, `Cache-Control: no-store` on pages
    (they hold a key's data), and `Server-Timing: app;dur=<ms>` (time to the answer)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if "etag" not in headers:  # static files keep their caching
                    headers.setdefault("cache-control", "no-store")
                headers["server-timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _error_page(request: Request, exc: Exception) -> Response:
    if isinstance(exc, AuthenticationError) and request.method in ("GET", "HEAD"):
        # Not signed in (or the session ended): to the sign-in form, as any site does.
        redirect = RedirectResponse(f"{base_path(request)}/sign-in", status_code=303)
        clear_cookie(redirect, request, components_of(request).get(Settings))
        return redirect
    if isinstance(exc, StarletteHTTPException):
        answer = http_error_response(exc)  # (the API's 405 reads the API's routes)
    else:
        answer = await handled_error_response(request, exc) or unexpected_error_response(exc)
    body: dict[str, Any] = orjson.loads(answer.body)
    headers = {k: v for k, v in answer.headers.items() if k.lower() in _KEPT_HEADERS}
    response = render(
        request, "error.html", None, status_code=answer.status_code, headers=headers, error=body
    )
    if isinstance(exc, AuthenticationError):
        clear_cookie(response, request, components_of(request).get(Settings))
    return response


def mount_console(app: FastAPI) -> None:
    """Serve the console at /console on `app` (settings: CONCH_CONSOLE_*)."""
    console = FastAPI(
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        exception_handlers=dict.fromkeys(_HANDLED, _error_page),
    )
    console.state = app.state  # one state: what the lifespan adds, the console finds
    console.include_router(routes.router)
    console.include_router(admin_routes.router)
    console.mount("/static", StaticFiles(directory=PACKAGE / "static"), name="static")
    app.mount(PREFIX, _PageHeaders(console))
