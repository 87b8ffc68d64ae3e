"""The prediction fast lane: the prediction endpoints served by a plain ASGI handler.

Profiling a warm prediction showed FastAPI's routing, body parsing, dependency
resolution and response handling taking about half of the control plane's CPU
per request. This middleware answers the endpoints of `endpoints.ENDPOINTS`
before FastAPI routes them: one regular expression per path, compiled from the
table, the table's access policy (`keys/deps.py`, applied before the body is
read), its pydantic body model (validated straight from the bytes), its handler,
and every error answered by FastAPI's own handlers (`core/errors.py`).
Everything else, and every prediction when `CONCH_FAST_LANE=false`, goes to
FastAPI, whose routes (generated from the same table) document them in /docs.

The rate limit is checked while the prediction runs rather than before it,
hiding the Redis round trip: a refused request gets its 429 and its result is
thrown away, and a key already known to be over its limit is refused before any
Triton work (`RateLimiter.hit` answers it at once).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
import pydantic
from fastapi.exceptions import RequestValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from control_plane.core.components import Components
from control_plane.core.errors import PayloadTooLargeError, handled_error_response
from control_plane.core.settings import Settings
from control_plane.inference.endpoints import ENDPOINTS, Endpoint
from control_plane.inference.handlers import Payload
from control_plane.keys.deps import enforce_rate_limit, require_json

# Path ids as the routes accept them (1 and up, no leading zero); anything else,
# longer digit strings included, goes to FastAPI, whose validation answers it.
_ID = r"([1-9]\d{0,8})"


@dataclass(frozen=True, slots=True)
class LaneRoute:
    method: str
    path: re.Pattern[str]
    endpoint: Endpoint


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{\w+\\\}", lambda _: _ID, re.escape(template)))


class LaneTable:
    """Endpoints compiled to path patterns; `match` finds one and the id in its path."""

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        self.routes = tuple(LaneRoute(e.method, _pattern(e.path), e) for e in endpoints)
        self._methods = frozenset(route.method for route in self.routes)

    def match(self, method: str, path: str) -> tuple[Endpoint, int | None] | None:
        if method not in self._methods:
            return None
        for route in self.routes:
            found = route.path.fullmatch(path)
            if found is not None and route.method == method:
                return route.endpoint, int(found.group(1)) if found.groups() else None
        return None


_TABLE = LaneTable(ENDPOINTS)
ROUTES = _TABLE.routes

_JSON_HEADERS = [(b"content-type", b"application/json")]


def match(method: str, path: str) -> tuple[Endpoint, int | None] | None:
    """The seed-000 table's match (`PredictionLane` serves the tables it is given)."""
    return _TABLE.match(method, path)


class PredictionLane:
    def __init__(self, app: ASGIApp, extra_endpoints: Sequence[Endpoint] = ()) -> None:
        """Serves `ENDPOINTS` and `extra_endpoints` (other doors' tables)."""
        self.app = app
        self._table = LaneTable((*ENDPOINTS, *extra_endpoints)) if extra_endpoints else _TABLE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        matched = (
            self._table.match(scope["method"], scope["path"]) if scope["type"] == "http" else None
        )
        components: Components | None = (
            getattr(scope["app"].state, "components", None) if matched else None
        )
        if matched is None or components is None:
            await self.app(scope, receive, send)
            return
        settings = components.get(Settings)
        if not settings.fast_lane:
            await self.app(scope, receive, send)
            return
        endpoint, resource_id = matched
        try:
            payload = await _serve(
                components, endpoint, resource_id, scope, receive, settings.max_body_bytes
            )
        except Exception as exc:
            # FastAPI's own handlers answer; what they leave gets the request-id
            # middleware's 500, as it does behind FastAPI.
            response = await handled_error_response(Request(scope), exc)
            if response is None:
                raise
            await response(scope, receive, send)
            return
        if payload is None:
            return  # the client went away: nobody to answer
        content = orjson.dumps(payload)
        headers = [*_JSON_HEADERS, (b"content-length", str(len(content)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})


async def _serve(
    components: Components,
    endpoint: Endpoint,
    resource_id: int | None,
    scope: Scope,
    receive: Receive,
    max_bytes: int,
) -> Payload | None:
    # The routes' order: the key, its rate limit, its scope and resource, then the body.
    headers = _headers(scope)
    principal, limit_check = await endpoint.policy.admit(components, headers.get("x-api-key"))
    if limit_check is not None and limit_check.done():
        # A key known to be over its limit: refused before any Triton work.
        enforce_rate_limit(limit_check.result())
    try:
        await endpoint.policy.authorize(components, principal, resource_id)
        require_json(headers)
        raw_body = await _read_body(receive, headers.get("content-length"), max_bytes)
        if raw_body is None:
            payload = None
        else:
            body = _validated(endpoint, raw_body)
            payload = await endpoint.handler(components, principal, resource_id, body)
    except BaseException:
        # Over the limit, the 429 is the answer whatever the prediction did.
        if limit_check is not None:
            enforce_rate_limit(await limit_check)
        raise
    if limit_check is not None:
        enforce_rate_limit(await limit_check)
    return payload


def _headers(scope: Scope) -> dict[str, str]:
    # The few headers the lane reads; ASGI names are already lower-case.
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope["headers"]
        if name in _LANE_HEADERS
    }


_LANE_HEADERS = frozenset((b"x-api-key", b"content-type", b"content-length", b"transfer-encoding"))


async def _read_body(receive: Receive, declared: str | None, max_bytes: int) -> bytes | None:
    """The body, read only up to `max_bytes` (CONCH_MAX_BODY_BYTES): a declared
    length over it is refused unread, a longer stream at the first chunk beyond it."""
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLargeError(max_bytes)
    chunks = []
    received = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        received += len(chunk)
        if received > max_bytes:
            raise PayloadTooLargeError(max_bytes)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _validated(endpoint: Endpoint, raw_body: bytes) -> pydantic.BaseModel:
    try:
        return endpoint.body.model_validate_json(raw_body)
    except pydantic.ValidationError as exc:
        # As FastAPI reports a body's problems: each located under "body".
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        raise RequestValidationError(errors) from None
