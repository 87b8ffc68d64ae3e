"""Who may do what: the one authorization decision of the API.

Every route declares a `Policy` in its signature (`key: WriteModelKey` in
`keys/deps.py`): the scope it needs and the resource it acts on. `GuardedRoute`
applies it before FastAPI reads the body, so a caller without a valid key never
gets a body buffered or parsed; the prediction fast lane applies the same
policies. The rules:

- a key needs the route's scope (admin implies every scope), else 403;
- a key restricted to project P acts only inside P: a project, slot, model or
  key outside P answers exactly like one that does not exist (404). P's models are
  those registered into P and those P's slots name (`visible_model_ids`);
- global operations (create a project, the engine's status; register a model
  into no project, delete a model P does not own) need a key restricted to no
  project, else 403. A key of P may register models into P and delete those it
  owns (`ensure_may_register`, `ensure_owns_model`);
- a key creates keys at most as powerful as itself (`keys/service.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pydantic
from fastapi import Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import InstrumentedAttribute

from control_plane.core import access_log, tracing
from control_plane.core.components import Components
from control_plane.core.errors import (
    NotFoundError,
    PermissionDeniedError,
    key_not_found,
    model_not_found,
    project_not_found,
    slot_not_found,
)
from control_plane.core.settings import Settings
from control_plane.core.types import ResourceId
from control_plane.db.models import ApiKey, DeploymentSlot
from control_plane.keys.schemas import Principal, Scope
from control_plane.keys.verifier import KeyVerifier
from control_plane.model_core.catalog import ModelCatalog
from control_plane.model_core.handle import ModelHandle
from control_plane.ratelimit.limiter import RateLimiter, RateLimitResult
from control_plane.routing.cache import RoutingCache

# What a route acts on: the path parameter naming it, "any" (the handler checks
# ids that arrive in the body and filters lists), "global" (unrestricted keys
# only) or "public" (no key at all).
Resource = Literal["public", "global", "any", "model_id", "project_id", "slot_id", "key_id"]

_ID = pydantic.TypeAdapter(ResourceId)


# Declared so that OpenAPI (and every generated client) knows the header.
_API_KEY = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An API key: `conch keys create`"
)


@dataclass(frozen=True, eq=False)
class Policy:
    scope: Scope | None
    resource: Resource

    async def __call__(
        self, request: Request, _: Annotated[str | None, Security(_API_KEY)]
    ) -> Principal:
        """As a FastAPI dependency: the caller `GuardedRoute` admitted."""
        principal: Principal | None = getattr(request.state, "principal", None)
        if principal is None:  # a route outside GuardedRoute: refuse rather than serve
            raise RuntimeError(f"{request.url.path} is not guarded by its policy")
        return principal

    @property
    def is_public(self) -> bool:
        return self.scope is None

    async def admit(
        self, components: Components, token: str | None
    ) -> tuple[Principal, asyncio.Future[RateLimitResult] | None]:
        """The verified key (401 otherwise) and its rate-limit check, still running."""
        verifier = components.get(KeyVerifier)
        with tracing.span("conch.auth") as span:
            principal = await verifier.verify(components.get(async_sessionmaker), token)
            if span is not None:
                span.set_attribute("conch.key_id", principal.key_id)
        access_log.note_key(principal.key_id)
        if not components.get(Settings).rate_limit_enabled:
            return principal, None
        check = components.get(RateLimiter).hit(principal.key_id, principal.rate_limit)
        tracing.span_until(check, "conch.rate_limit", _limit_attributes)
        return principal, check

    async def authorize(
        self, components: Components, principal: Principal, resource_id: int | None
    ) -> None:
        """403 without the scope; 404 for a resource outside the key's project."""
        assert self.scope is not None
        if not principal.has_scope(self.scope):
            raise PermissionDeniedError(
                f"API key lacks the {self.scope!r} scope",
                required=self.scope,
                scopes=sorted(principal.scopes),
            )
        if principal.project_id is None or self.resource == "any":
            return
        if self.resource == "global":
            raise PermissionDeniedError(
                "this operation needs an API key that is not restricted to a project",
                project_id=principal.project_id,
            )
        assert resource_id is not None
        if self.resource == "project_id":
            ensure_project(principal, resource_id)
        elif self.resource == "model_id":
            await ensure_model(components, principal, resource_id)
        else:  # a slot or a key: its row names its project
            column, not_found = _OWNED_BY_PROJECT[self.resource]
            if await _project_of(components, column, resource_id) != principal.project_id:
                raise not_found(resource_id)

    def resource_id(self, path_params: Mapping[str, str]) -> int | None:
        """The id in the path, validated as the route will validate it (422 if bad)."""
        if self.resource not in path_params:
            return None
        try:
            return _ID.validate_python(path_params[self.resource])
        except pydantic.ValidationError as exc:
            raise RequestValidationError(
                [{**e, "loc": ("path", self.resource)} for e in exc.errors()]
            ) from None


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The API key a request presents: `X-API-Key`, else `Authorization: Bearer <key>`
    (what KServe, OpenAI and most HTTP clients send). `headers` reads lower-case names."""
    key = headers.get("x-api-key")
    if key:
        return key
    scheme, _, credentials = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip() or None


def _limit_attributes(result: RateLimitResult) -> dict[str, bool | int]:
    return {"conch.rate_limit.allowed": result.allowed, "conch.rate_limit.limit": result.limit}


class _PublicPolicy(Policy):
    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        return None  # no key, no security scheme in OpenAPI


PUBLIC = _PublicPolicy(None, "public")


def ensure_project(principal: Principal, project_id: int) -> None:
    if not principal.may_access_project(project_id):
        raise project_not_found(project_id)


def ensure_may_register(principal: Principal, project_id: int | None) -> None:
    """Registering into no project is global (403 for a restricted key); into another
    project than the key's, 404 as for a project that does not exist."""
    if principal.project_id is None:
        return
    if project_id is None:
        raise PermissionDeniedError(
            "registering a model into no project needs an API key that is not restricted "
            f"to a project; set project_id to {principal.project_id}",
            project_id=principal.project_id,
        )
    ensure_project(principal, project_id)


def ensure_owns_model(principal: Principal, model_id: int, owner: int | None) -> None:
    """For a model the key already may see (policy `model_id`): changing the registry
    entry itself needs the model to be registered into the key's project; a model its
    slots merely name is someone else's (403, as for any global operation)."""
    if principal.project_id is not None and owner != principal.project_id:
        raise PermissionDeniedError(
            f"model {model_id} is not registered into project {principal.project_id}; "
            "this operation needs an API key that is not restricted to a project",
            project_id=principal.project_id,
            model_id=model_id,
        )


async def visible_model_ids(components: Components, principal: Principal) -> frozenset[int] | None:
    """The models a key may see: those registered into its project and those its
    project's slots name (active or not); None for a key restricted to no project
    (every model). Read from the routing cache: no SQL on the hot path."""
    if principal.project_id is None:
        return None
    routing = components.get(RoutingCache)
    sessionmaker = components.get(async_sessionmaker)
    return (await routing.routes(sessionmaker, principal.project_id)).model_ids


async def visible_model(components: Components, principal: Principal, ref: str) -> ModelHandle:
    """The model `ref` names (a Conch id, a Triton name or a registered name: the
    newest the key may see); an invisible model answers exactly as an unknown one."""
    visible = await visible_model_ids(components, principal)
    catalog = components.get(ModelCatalog)
    return await catalog.resolve(components.get(async_sessionmaker), ref, visible=visible)


async def ensure_model(components: Components, principal: Principal, model_id: int) -> None:
    visible = await visible_model_ids(components, principal)
    if visible is not None and model_id not in visible:
        raise model_not_found(model_id)


_OWNED_BY_PROJECT: dict[str, tuple[InstrumentedAttribute[Any], Callable[[int], NotFoundError]]] = {
    "slot_id": (DeploymentSlot.project_id, slot_not_found),
    "key_id": (ApiKey.project_id, key_not_found),
}


async def _project_of(
    components: Components, project_column: InstrumentedAttribute[Any], row_id: int
) -> int | None:
    """The project of the slot or key `row_id`; None if there is no such row. (A
    session of its own: the route's session is not open yet when policies run.)"""
    sessionmaker: async_sessionmaker[AsyncSession] = components.get(async_sessionmaker)
    async with sessionmaker() as session:
        table = project_column.class_
        return await session.scalar(select(project_column).where(table.id == row_id))
