"""Access dependencies: a handler's signature states its policy (see `access.py`).

`WriteModelKey` reads "a key with the write scope that may act on the model in
the path"; `ReadAnyKey` leaves it to the handler to filter what it lists;
`WriteGlobalKey` needs a key restricted to no project; public routes declare
`dependencies=[Public]`. Every route of the API is a `GuardedRoute`, which
refuses to be built without exactly one declared policy and applies it before
the body is read: missing/invalid/expired/revoked key -> 401, over the rate
limit -> 429, lacking the scope -> 403, a resource outside the key's project ->
404 (the same answer as an unknown one).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Annotated, Any, get_args

from fastapi import Depends, Request, Response, params
from fastapi.dependencies.utils import get_typed_signature
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.routing import Match
from starlette.types import Scope

from control_plane.core.components import components_of
from control_plane.core.errors import RateLimitExceededError, UnsupportedMediaTypeError
from control_plane.core.openapi_errors import error_responses
from control_plane.core.request_id import add_response_headers
from control_plane.keys.access import PUBLIC, Policy, presented_key
from control_plane.keys.schemas import Principal
from control_plane.ratelimit.limiter import RateLimitResult


def enforce_rate_limit(result: RateLimitResult) -> None:
    """429 when over the limit; the X-RateLimit-* headers on the response either way."""
    if not result.allowed:
        raise RateLimitExceededError(
            "rate limit exceeded", headers=result.headers(), limit=result.limit
        )
    add_response_headers(result.headers())


def require_json(headers: Mapping[str, str]) -> None:
    """415 for a body that does not say it is JSON (form posts, text/plain, none)."""
    if headers.get("content-length", "0") == "0" and "transfer-encoding" not in headers:
        return  # no body: the route's validation says what is missing
    media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        raise UnsupportedMediaTypeError(
            "request body must be JSON (Content-Type: application/json)",
            expected="application/json",
        )


def declared_policy(route: APIRoute) -> Policy:
    policies = [d.call for d in route.dependant.dependencies if isinstance(d.call, Policy)]
    if len(policies) != 1:
        raise TypeError(
            f"route {sorted(route.methods or ())} {route.path} must declare exactly one access "
            f"policy (keys/deps.py), found {len(policies)}"
        )
    return policies[0]


def _signature_of(
    endpoint: Callable[..., Any], dependencies: Sequence[params.Depends] | None
) -> tuple[Policy | None, bool]:
    """The policy an endpoint declares (None if not exactly one) and whether it takes a
    JSON body, read from its signature before FastAPI analyses it."""
    policies = [d.dependency for d in dependencies or () if isinstance(d.dependency, Policy)]
    takes_body = False
    for parameter in get_typed_signature(endpoint).parameters.values():
        annotation = parameter.annotation
        depends = [
            m for m in getattr(annotation, "__metadata__", ()) if isinstance(m, params.Depends)
        ]
        policies += [d.dependency for d in depends if isinstance(d.dependency, Policy)]
        # A dependency (SettingsDep is a pydantic model too) is not the body.
        takes_body = takes_body or (not depends and _is_body(annotation))
    return (policies[0] if len(policies) == 1 else None), takes_body


def _is_body(annotation: Any) -> bool:
    """A pydantic model, or one inside a list, an Optional or an Annotated."""
    if isinstance(annotation, type):
        return issubclass(annotation, BaseModel)
    return any(_is_body(arg) for arg in get_args(annotation))


class GuardedRoute(APIRoute):
    """An API route whose policy runs before FastAPI reads or parses the body.

    It also documents, in OpenAPI, the error statuses its policy and its body
    can produce (each with the error body); a route adds its own in `responses`.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        policy, takes_body = _signature_of(endpoint, kwargs.get("dependencies"))
        statuses = [] if policy is None or policy.is_public else [401, 403, 429]
        if policy is not None and f"{{{policy.resource}}}" in path:
            statuses.append(404)
        if takes_body:
            statuses += [413, 415]
        if takes_body or "{" in path:
            statuses.append(422)
        kwargs["responses"] = {**error_responses(*statuses), **(kwargs.get("responses") or {})}
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        policy = declared_policy(self)
        takes_body = self.body_field is not None

        async def guarded(request: Request) -> Response:
            if not policy.is_public:
                components = components_of(request)
                token = presented_key(request.headers)
                principal, limit_check = await policy.admit(components, token)
                if limit_check is not None:
                    enforce_rate_limit(await limit_check)
                resource_id = policy.resource_id(request.path_params)
                await policy.authorize(components, principal, resource_id)
                request.state.principal = principal
            if takes_body:
                require_json(request.headers)
            return await handler(request)

        return guarded


def route_matching(param: str, pattern: str) -> type[GuardedRoute]:
    """A GuardedRoute that is no match where path parameter `param` is not `pattern`:
    the request goes on to the routes after it (`GET models/load/info` is the info of
    a model named "load", not an import job "info")."""
    shape = re.compile(pattern)

    class MatchingRoute(GuardedRoute):
        def matches(self, scope: Scope) -> tuple[Match, Scope]:
            match, child = super().matches(scope)
            value = child.get("path_params", {}).get(param) if match is not Match.NONE else None
            if value is not None and not shape.fullmatch(value):
                return Match.NONE, {}
            return match, child

    return MatchingRoute


Public = Depends(PUBLIC)

# The prediction fast lane applies these itself (inference/lane.py).
PREDICT_MODEL = Policy("predict", "model_id")
PREDICT_PROJECT = Policy("predict", "project_id")

PredictModelKey = Annotated[Principal, Depends(PREDICT_MODEL)]
PredictProjectKey = Annotated[Principal, Depends(PREDICT_PROJECT)]
PREDICT_ANY = Policy("predict", "any")  # the v2 door's inference, in the lane too

PredictAnyKey = Annotated[Principal, Depends(PREDICT_ANY)]
ReadModelKey = Annotated[Principal, Depends(Policy("read", "model_id"))]
ReadProjectKey = Annotated[Principal, Depends(Policy("read", "project_id"))]
ReadAnyKey = Annotated[Principal, Depends(Policy("read", "any"))]
ReadGlobalKey = Annotated[Principal, Depends(Policy("read", "global"))]
WriteModelKey = Annotated[Principal, Depends(Policy("write", "model_id"))]
WriteProjectKey = Annotated[Principal, Depends(Policy("write", "project_id"))]
WriteSlotKey = Annotated[Principal, Depends(Policy("write", "slot_id"))]
WriteGlobalKey = Annotated[Principal, Depends(Policy("write", "global"))]
AdminAnyKey = Annotated[Principal, Depends(Policy("admin", "any"))]
AdminKeyKey = Annotated[Principal, Depends(Policy("admin", "key_id"))]
