"""The prediction fast lane: the four prediction endpoints served by a plain ASGI handler.

Profiling a warm prediction showed FastAPI's routing, body parsing, dependency
resolution and response handling taking about half of the control plane's CPU
per request. This middleware answers the prediction paths before FastAPI routes
them: one regular expression per path, the same access policies as the routes
(`keys/deps.py`, applied before the body is read), the same pydantic request
models (validated straight from the bytes), the same handler functions
(`handlers.py`, `tabular.predict_for_rows`) and the same error body.
Everything else, and every prediction when `CONCH_FAST_LANE=false`, goes to
FastAPI, whose routes document these endpoints in /docs.

The rate limit is checked while the prediction runs rather than before it,
hiding the Redis round trip: a refused request gets its 429 and its result is
thrown away, and a key already known to be over its limit is refused before any
Triton work (`RateLimiter.hit` answers it at once).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pydantic
from starlette.types import ASGIApp, Receive, Scope, Send

from control_plane.core.components import Components
from control_plane.core.errors import (
    ConchError,
    PayloadTooLargeError,
    conch_error_response,
    http_error_response,
    validation_error_response,
)
from control_plane.core.settings import Settings
from control_plane.inference.handlers import (
    Payload,
    predict_for_project,
    predict_for_user,
    predict_for_users,
)
from control_plane.inference.schemas import BatchPredictRequest, PredictRequest
from control_plane.inference.tabular import TabularPredictRequest, predict_for_rows
from control_plane.keys.access import Policy
from control_plane.keys.deps import PREDICT_MODEL, PREDICT_PROJECT, enforce_rate_limit, require_json
from control_plane.keys.schemas import Principal

Handler = Callable[[Components, Principal, int, Any], Awaitable[Payload]]

# Path ids as the routes accept them (1 and up, no leading zero); anything else,
# longer digit strings included, goes to FastAPI, whose validation answers it.
_ID = r"([1-9]\d{0,8})"


@dataclass(frozen=True)
class LaneRoute:
    path: re.Pattern[str]
    policy: Policy
    body: type[pydantic.BaseModel]
    handler: Handler


ROUTES = (
    LaneRoute(
        re.compile(rf"/inference/predict/{_ID}"), PREDICT_MODEL, PredictRequest, predict_for_user
    ),
    LaneRoute(
        re.compile(rf"/inference/predict/{_ID}/batch"),
        PREDICT_MODEL,
        BatchPredictRequest,
        predict_for_users,
    ),
    LaneRoute(
        re.compile(rf"/inference/predict/project/{_ID}"),
        PREDICT_PROJECT,
        PredictRequest,
        predict_for_project,
    ),
    LaneRoute(
        re.compile(rf"/api/v1/models/{_ID}/predict"),
        PREDICT_MODEL,
        TabularPredictRequest,
        predict_for_rows,
    ),
)

_JSON_HEADERS = [(b"content-type", b"application/json")]


def match(method: str, path: str) -> tuple[LaneRoute, int] | None:
    if method != "POST":
        return None
    for route in ROUTES:
        found = route.path.fullmatch(path)
        if found is not None:
            return route, int(found.group(1))
    return None


class PredictionLane:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        matched = match(scope["method"], scope["path"]) if scope["type"] == "http" else None
        components: Components | None = (
            getattr(scope["app"].state, "components", None) if matched else None
        )
        if matched is None or components is None or not components.get(Settings).fast_lane:
            await self.app(scope, receive, send)
            return
        route, resource_id = matched
        try:
            payload = await _serve(components, route, resource_id, scope, receive)
        except ConchError as exc:
            await conch_error_response(exc)(scope, receive, send)
            return
        except PayloadTooLargeError as exc:
            await http_error_response(exc)(scope, receive, send)
            return
        except pydantic.ValidationError as exc:
            await validation_error_response(exc.errors(), ("body",))(scope, receive, send)
            return
        if payload is None:
            return  # the client went away: nobody to answer
        content = orjson.dumps(payload)
        headers = [*_JSON_HEADERS, (b"content-length", str(len(content)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})


async def _serve(
    components: Components, route: LaneRoute, resource_id: int, scope: Scope, receive: Receive
) -> Payload | None:
    # The routes' order: the key, its rate limit, its scope and resource, then the body.
    headers = _headers(scope)
    principal, limit_check = await route.policy.admit(components, headers.get("x-api-key"))
    if limit_check is None:
        return await _predict(components, route, principal, resource_id, headers, receive)
    if limit_check.done():  # a key known to be over its limit: refused before any Triton work
        enforce_rate_limit(limit_check.result())
    try:
        payload = await _predict(components, route, principal, resource_id, headers, receive)
    except BaseException:
        # Over the limit, the 429 is the answer whatever the prediction did.
        enforce_rate_limit(await limit_check)
        raise
    enforce_rate_limit(await limit_check)
    return payload


async def _predict(
    components: Components,
    route: LaneRoute,
    principal: Principal,
    resource_id: int,
    headers: dict[str, str],
    receive: Receive,
) -> Payload | None:
    await route.policy.authorize(components, principal, resource_id)
    require_json(headers)
    raw_body = await _read_body(receive)
    if raw_body is None:
        return None
    body = route.body.model_validate_json(raw_body)
    return await route.handler(components, principal, resource_id, body)


def _headers(scope: Scope) -> dict[str, str]:
    # The few headers the lane reads; ASGI names are already lower-case.
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope["headers"]
        if name in _LANE_HEADERS
    }


_LANE_HEADERS = frozenset((b"x-api-key", b"content-type", b"content-length", b"transfer-encoding"))


async def _read_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
