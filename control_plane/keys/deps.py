"""Authentication dependencies: a handler's signature states its policy.

`PredictKey`, `ReadKey`, `WriteKey`, `AdminKey`: a verified key holding that
scope (admin implies all), already counted against its rate limit.
Missing/invalid/expired/revoked -> 401; lacking the scope -> 403; too many -> 429.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from control_plane.core.errors import PermissionDeniedError, RateLimitExceededError
from control_plane.core.request_id import add_response_headers
from control_plane.core.state import AppState, StateDep
from control_plane.keys.schemas import Principal
from control_plane.ratelimit.limiter import RateLimitResult

# auto_error=False: a missing header is our 401 with our error body, not FastAPI's 403.
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


async def authenticate(
    request: Request,
    state: StateDep,
    token: Annotated[str | None, Depends(_api_key_header)],
) -> Principal:
    principal = await state.verifier.verify(state.sessionmaker, token)
    if state.settings.rate_limit_enabled:
        enforce_rate_limit(await state.limiter.hit(principal.key_id, principal.rate_limit))
    request.state.principal = principal
    return principal


def enforce_rate_limit(result: RateLimitResult) -> None:
    """429 when over the limit; the X-RateLimit-* headers on the response either way."""
    if not result.allowed:
        raise RateLimitExceededError(
            "rate limit exceeded", headers=result.headers(), limit=result.limit
        )
    add_response_headers(result.headers())


def ensure_scope(principal: Principal, scope: str) -> None:
    if not principal.has_scope(scope):
        raise PermissionDeniedError(
            f"API key lacks the {scope!r} scope", required=scope, scopes=sorted(principal.scopes)
        )


def require(scope: str) -> Callable[[Principal], Awaitable[Principal]]:
    async def dependency(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        ensure_scope(principal, scope)
        return principal

    return dependency


async def ensure_model_access(state: AppState, principal: Principal, model_id: int) -> None:
    """A project-restricted key may query only the models its project's slots name."""
    if principal.project_id is None:
        return
    routes = await state.routing.routes(state.sessionmaker, principal.project_id)
    if model_id not in routes.model_ids:
        raise PermissionDeniedError(
            "API key not authorized for this model: no slot of its project serves it",
            model_id=model_id,
            project_id=principal.project_id,
        )


def ensure_project_access(principal: Principal, project_id: int) -> None:
    if not principal.may_access_project(project_id):
        raise PermissionDeniedError(
            "API key not authorized for this project", project_id=project_id
        )


PredictKey = Annotated[Principal, Depends(require("predict"))]
ReadKey = Annotated[Principal, Depends(require("read"))]
WriteKey = Annotated[Principal, Depends(require("write"))]
AdminKey = Annotated[Principal, Depends(require("admin"))]
