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

A door whose bodies pass through unread (the Open Inference Protocol's inference,
`v2/routes.py`) declares `PassthroughEndpoint`s: the same admission, limit and
body cap, the caller's bytes handed over as they came, and the handler's
`TritonAnswer` sent back as it is.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import orjson
import pydantic
from fastapi.exceptions import RequestValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from control_plane.core.components import Components
from control_plane.core.errors import (
    PayloadTooLargeError,
    handled_error_response,
    unexpected_error_response,
)
from control_plane.core.request_id import RequestRecord
from control_plane.core.request_metrics import LANE_ROUTE
from control_plane.core.secret_rules import is_loopback
from control_plane.core.settings import Settings
from control_plane.inference.endpoints import ENDPOINTS, Endpoint
from control_plane.inference.handlers import Payload
from control_plane.keys.access import Policy, presented_key
from control_plane.keys.deps import enforce_rate_limit, require_json
from control_plane.keys.schemas import Principal
from control_plane.triton.http_pool import Headers
from control_plane.triton.passthrough import TritonAnswer

# Path ids as the routes accept them (1 and up, no leading zero); anything else,
# longer digit strings included, goes to FastAPI, whose validation answers it.
_ID = r"([1-9]\d{0,8})"


@dataclass(frozen=True, eq=False)
class PassthroughEndpoint:
    """An endpoint whose body is bytes for Triton: `path`'s groups (None where an
    optional group did not match) and the request's headers go to `handler` with
    the body; the answer it returns is sent as it is. `route` names its requests
    in traces, metrics and logs (a template, as FastAPI's routes are named)."""

    method: str
    path: re.Pattern[str]
    policy: Policy
    handler: Callable[
        [Components, Principal, tuple[str | None, ...], Headers, bytes], Awaitable[TritonAnswer]
    ]
    route: str = ""


@dataclass(frozen=True, slots=True)
class LaneRoute:
    method: str
    path: re.Pattern[str]
    endpoint: Endpoint


def _pattern(template: str, shape: str | None = None) -> re.Pattern[str]:
    group = _ID if shape is None else f"({shape})"
    return re.compile(re.sub(r"\\\{\w+\\\}", lambda _: group, re.escape(template)))


class LaneTable:
    """Endpoints compiled to path patterns; `match` finds one and the id in its path."""

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        self.routes = tuple(
            LaneRoute(e.method, _pattern(e.path, e.path_shape), e) for e in endpoints
        )
        self._methods = frozenset(route.method for route in self.routes)

    def match(self, method: str, path: str) -> tuple[Endpoint, int | str | None] | None:
        if method not in self._methods:
            return None
        for route in self.routes:
            found = route.path.fullmatch(path)
            if found is not None and route.method == method:
                value = found.group(1) if found.groups() else None
                return route.endpoint, None if value is None else route.endpoint.path_value(value)
        return None


_TABLE = LaneTable(ENDPOINTS)
ROUTES = _TABLE.routes

_JSON_HEADERS = [(b"content-type", b"application/json")]


def match(method: str, path: str) -> tuple[Endpoint, int | str | None] | None:
    """The seed-000 table's match (`PredictionLane` serves the tables it is given)."""
    return _TABLE.match(method, path)


class PredictionLane:
    def __init__(
        self,
        app: ASGIApp,
        extra_endpoints: Sequence[Endpoint] = (),
        passthrough_endpoints: Sequence[PassthroughEndpoint] = (),
        *,
        loopback_only: bool = False,
    ) -> None:
        """Serves `ENDPOINTS`, `extra_endpoints` (other doors' tables) and
        `passthrough_endpoints` in front of the whole middleware stack (`app`,
        inference/front.py): it does for its requests what the request-id middleware
        does (`RequestRecord`: id, response headers, metrics, access line) and leaves
        to `app` those `loopback_only` says it must refuse (core/loopback.py)."""
        self.app = app
        self._table = LaneTable((*ENDPOINTS, *extra_endpoints)) if extra_endpoints else _TABLE
        self._passthrough = tuple(passthrough_endpoints)
        self._loopback_only = loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        matched = self._table.match(method, path)
        passed: tuple[PassthroughEndpoint, tuple[str | None, ...]] | None = None
        if matched is None:
            passed = self._passthrough_match(method, path)
        components: Components | None = (
            getattr(scope["app"].state, "components", None) if matched or passed else None
        )
        settings = None if components is None else components.get(Settings)
        if components is None or settings is None or not settings.fast_lane:
            await self.app(scope, receive, send)
            return
        server = scope.get("server")
        if self._loopback_only and server is not None and not is_loopback(str(server[0])):
            await self.app(scope, receive, send)  # its LoopbackOnly answers
            return
        record = RequestRecord(scope)
        try:
            await self._serve(components, settings, matched, passed, scope, receive, send, record)
        finally:
            record.end(scope)

    async def _serve(
        self,
        components: Components,
        settings: Settings,
        matched: tuple[Endpoint, int | str | None] | None,
        passed: tuple[PassthroughEndpoint, tuple[str | None, ...]] | None,
        scope: Scope,
        receive: Receive,
        send: Send,
        record: RequestRecord,
    ) -> None:
        max_bytes = settings.max_body_bytes
        body: bytes | memoryview
        try:
            if matched is not None:
                endpoint, resource_id = matched
                scope[LANE_ROUTE] = endpoint.path  # the request's metrics and access line
                payload = await _serve_json(
                    components, endpoint, resource_id, scope, receive, max_bytes
                )
                answer = None if payload is None else _json_answer(payload, endpoint.status_code)
            else:
                assert passed is not None
                scope[LANE_ROUTE] = passed[0].route or passed[0].path.pattern
                answer = await _serve_passthrough(components, *passed, scope, receive, max_bytes)
            if answer is None:
                return  # the client went away: nobody to answer
            status, body = answer.status, answer.body
            headers = [*answer.headers, (b"content-length", str(len(body)).encode())]
        except Exception as exc:
            # FastAPI's own handlers answer; what they leave gets the one 500 body, as
            # the request-id middleware gives it behind FastAPI.
            response = await handled_error_response(Request(scope), exc)
            if response is None:
                response = unexpected_error_response(exc)
            status, headers, body = response.status_code, response.raw_headers, response.body
        headers = record.response_headers(status, headers)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _passthrough_match(
        self, method: str, path: str
    ) -> tuple[PassthroughEndpoint, tuple[str | None, ...]] | None:
        for endpoint in self._passthrough:
            found = endpoint.path.fullmatch(path)
            if found is not None and endpoint.method == method:
                return endpoint, found.groups()
        return None


def _json_answer(payload: Payload, status: int = 200) -> TritonAnswer:
    return TritonAnswer(status, _JSON_HEADERS, orjson.dumps(payload))


async def _serve_json(
    components: Components,
    endpoint: Endpoint,
    resource_id: int | str | None,
    scope: Scope,
    receive: Receive,
    max_bytes: int,
) -> Payload | None:
    async def handle(principal: Principal, raw_body: bytes) -> Payload:
        read = endpoint.read
        request = _validated(endpoint, raw_body) if read is None else read(scope, raw_body)
        return await endpoint.handler(components, principal, resource_id, request)

    # A shaped path parameter (a task id) is no resource the policy authorizes.
    authorized = resource_id if isinstance(resource_id, int) else None
    return await _admitted(
        components,
        endpoint.policy,
        authorized,
        scope,
        receive,
        max_bytes,
        handle,
        json_body=endpoint.body is not None,
    )


async def _serve_passthrough(
    components: Components,
    endpoint: PassthroughEndpoint,
    path_args: tuple[str | None, ...],
    scope: Scope,
    receive: Receive,
    max_bytes: int,
) -> TritonAnswer | None:
    async def handle(principal: Principal, raw_body: bytes) -> TritonAnswer:
        return await endpoint.handler(components, principal, path_args, scope["headers"], raw_body)

    return await _admitted(
        components, endpoint.policy, None, scope, receive, max_bytes, handle, json_body=False
    )


_Result = TypeVar("_Result")


async def _admitted(
    components: Components,
    policy: Policy,
    resource_id: int | None,
    scope: Scope,
    receive: Receive,
    max_bytes: int,
    handle: Callable[[Principal, bytes], Awaitable[_Result]],
    *,
    json_body: bool,
) -> _Result | None:
    """`handle`'s result for the admitted key and the body; None if the client left.

    The routes' order: the key, its rate limit, its scope and resource, then the body.
    """
    headers = _headers(scope)
    principal, limit_check = await policy.admit(components, presented_key(headers))
    if limit_check is not None and limit_check.done():
        # A key known to be over its limit: refused before any Triton work.
        enforce_rate_limit(limit_check.result())
    try:
        await policy.authorize(components, principal, resource_id)
        if json_body:
            require_json(headers)
        raw_body = await _read_body(receive, headers.get("content-length"), max_bytes)
        result = None if raw_body is None else await handle(principal, raw_body)
    except BaseException:
        # Over the limit, the 429 is the answer whatever the prediction did.
        if limit_check is not None:
            enforce_rate_limit(await limit_check)
        raise
    if limit_check is not None:
        enforce_rate_limit(await limit_check)
    return result


def _headers(scope: Scope) -> dict[str, str]:
    # The few headers the lane reads; ASGI names are already lower-case.
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope["headers"]
        if name in _LANE_HEADERS
    }


_LANE_HEADERS = frozenset(
    (b"x-api-key", b"authorization", b"content-type", b"content-length", b"transfer-encoding")
)


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


def _validated(endpoint: Endpoint, raw_body: bytes) -> pydantic.BaseModel | None:
    if endpoint.body is None:
        return None
    try:
        return endpoint.body.model_validate_json(raw_body)
    except pydantic.ValidationError as exc:
        # As FastAPI reports a body's problems: each located under "body".
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        raise RequestValidationError(errors) from None
