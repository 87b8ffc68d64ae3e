"""What the lifespan creates once per process, found by its type.

Every layer asks for the component it needs by its class (`provided(KeyVerifier)`
as a FastAPI dependency, `components.get(RateLimiter)` in code), so no layer below
the app factory imports the wiring that knows them all (control_plane/state.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar, cast

from fastapi import Depends, Request
from redis.asyncio import Redis

from control_plane.core.errors import ServiceUnavailableError
from control_plane.core.settings import Settings

T = TypeVar("T")


class Components:
    def __init__(self) -> None:
        self._by_type: dict[type[Any], object] = {}

    def add(self, kind: type[T], component: T) -> None:
        self._by_type[kind] = component

    def find(self, kind: type[T]) -> T | None:
        return cast("T | None", self._by_type.get(kind))

    def get(self, kind: type[T]) -> T:
        found = self._by_type.get(kind)
        if found is None:
            raise LookupError(f"the app provides no {kind.__name__}")
        return cast(T, found)


def components_of(request: Request) -> Components:
    components: Components = request.app.state.components
    return components


# Dependencies are `async def` on purpose: FastAPI runs plain `def` ones in a thread pool.
async def _components(request: Request) -> Components:
    return components_of(request)


def provided(kind: type[T]) -> Callable[[Request], Awaitable[T]]:
    """A FastAPI dependency that answers the app's component of this type."""

    async def provide(request: Request) -> T:
        return components_of(request).get(kind)

    provide.__name__ = f"provide_{kind.__name__}"
    return provide


async def _redis(request: Request) -> Redis:
    redis = components_of(request).find(Redis)
    if redis is None:
        raise ServiceUnavailableError("Redis is not configured (REDIS_URL)")
    return redis


ComponentsDep = Annotated[Components, Depends(_components)]
SettingsDep = Annotated[Settings, Depends(provided(Settings))]
RedisDep = Annotated[Redis, Depends(_redis)]
