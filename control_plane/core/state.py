"""What the lifespan creates once per process, and the dependency aliases handlers use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from control_plane.core.errors import ServiceUnavailableError
from control_plane.core.settings import Settings
from control_plane.events.bus import EventBus, take_pending
from control_plane.inference.runtime import RuntimeCache
from control_plane.keys.verifier import KeyVerifier
from control_plane.lifecycle.manager import ModelLifecycle
from control_plane.lifecycle.reconciler import Reconciler
from control_plane.ratelimit.limiter import RateLimiter
from control_plane.slots.routing import RoutingCache
from control_plane.triton.client import TritonGateway


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: Redis | None
    triton: TritonGateway
    verifier: KeyVerifier
    limiter: RateLimiter
    events: EventBus
    runtimes: RuntimeCache
    lifecycle: ModelLifecycle
    reconciler: Reconciler
    routing: RoutingCache = field(default_factory=RoutingCache)


# Dependencies are `async def` on purpose: FastAPI runs plain `def` ones in a thread pool.
async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.conch
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: services flush, this commits, then events go out."""
    async with state.sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()
            for event in take_pending(session):
                await state.events.publish(event)


async def get_redis(state: StateDep) -> Redis:
    if state.redis is None:
        raise ServiceUnavailableError("Redis is not configured (REDIS_URL)")
    return state.redis


async def get_settings_dep(state: StateDep) -> Settings:
    return state.settings


async def get_triton(state: StateDep) -> TritonGateway:
    return state.triton


async def get_lifecycle(state: StateDep) -> ModelLifecycle:
    return state.lifecycle


# scope="function": commit before the response is sent, so a failed commit is an error
# response and a client never reads data that was not stored.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
RedisDep = Annotated[Redis, Depends(get_redis)]
TritonDep = Annotated[TritonGateway, Depends(get_triton)]
LifecycleDep = Annotated[ModelLifecycle, Depends(get_lifecycle)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
