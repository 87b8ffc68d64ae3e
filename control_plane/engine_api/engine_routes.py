"""Seed 002's engine management: /api/inference/engine/{status,config,restart,cache}.

A thin door onto the lifecycle (control_plane/lifecycle/engine.py). The configuration
is global: one SQL row, applied by every replica. Status, restart and the cache are
this replica's: its process, its Triton, its loaded models (behind a load balancer,
each call reaches one replica). Reading needs `read`, changing needs `admin`; both
with a key restricted to no project, since the engine serves every project.

A change is stored and committed first, then applied here (awaited: the answer shows
this replica's models already reloaded with it), then announced: every other replica
reads the row from SQL and applies it in the background, and its reconciler would
find it within a period even if the event were lost.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from control_plane.core.components import ComponentsDep
from control_plane.core.errors import TritonError
from control_plane.core.openapi_errors import error_responses
from control_plane.db.audit import audit
from control_plane.db.models import EngineConfig
from control_plane.db.session import SessionDep
from control_plane.engine_api import monitoring
from control_plane.engine_api.engine_schemas import (
    EngineCacheCleared,
    EngineConfigApplied,
    EngineConfigRead,
    EngineConfigUpdate,
    EngineRestarted,
    EngineStatusRead,
    MemoryUsage,
    ModelBatching,
)
from control_plane.events.bus import EventBus
from control_plane.events.schemas import EngineConfigChanged
from control_plane.keys.access import Policy
from control_plane.keys.deps import GuardedRoute, ReadGlobalKey
from control_plane.keys.schemas import Principal
from control_plane.lifecycle.engine import apply_tuning, clear_cache, restart
from control_plane.lifecycle.manager import ModelLifecycle
from control_plane.lifecycle.tuning import batching_of, store_tuning
from control_plane.model_core.stats import InferenceStats
from control_plane.triton.client import TritonGateway

router = APIRouter(tags=["engine"], route_class=GuardedRoute)

AdminGlobalKey = Annotated[Principal, Depends(Policy("admin", "global"))]

# This door's own sampler: another caller's readings must not shorten its interval.
_CPU = monitoring.CpuSampler()


def _config_read(row: EngineConfig | None, lifecycle: ModelLifecycle) -> dict[str, Any]:
    timeout_us = None if row is None else row.batch_timeout_us
    return {
        "max_batch_size": None if row is None else row.max_batch_size,
        "batch_timeout_ms": None if timeout_us is None else timeout_us / 1000,
        "max_concurrent_requests": None if row is None else row.max_concurrent_requests,
        "model_cache_size": (row and row.model_cache_size) or lifecycle.default_max_loaded,
        "revision": 0 if row is None else row.revision,
        "updated_at": None if row is None else row.updated_at,
    }


async def _loaded_batching(lifecycle: ModelLifecycle) -> list[ModelBatching]:
    """Each loaded model's batching as Triton serves it now (not as Conch asked)."""
    models = []
    for name in lifecycle.loaded():
        try:
            batching = batching_of(await lifecycle.triton.model_config(name))
        except TritonError:
            continue  # unloaded meanwhile
        models.append(
            ModelBatching(
                triton_name=name,
                max_batch_size=batching.max_batch_size,
                dynamic_batching=batching.dynamic_batching,
                preferred_batch_size=batching.preferred_batch_size,
                max_queue_delay_microseconds=batching.max_queue_delay_microseconds,
            )
        )
    return models


@router.get("/engine/config")
async def read_engine_config(
    _: ReadGlobalKey, session: SessionDep, components: ComponentsDep
) -> EngineConfigRead:
    row = await session.get(EngineConfig, 1)
    return EngineConfigRead(**_config_read(row, components.get(ModelLifecycle)))


@router.put("/engine/config", responses=error_responses(503))
async def update_engine_config(
    body: EngineConfigUpdate, key: AdminGlobalKey, components: ComponentsDep
) -> EngineConfigApplied:
    lifecycle = components.get(ModelLifecycle)
    changes = body.changes()
    sessionmaker: async_sessionmaker[AsyncSession] = components.get(async_sessionmaker)
    tuning = None
    # Its own unit of work, committed here: no replica, this one included, may apply
    # a configuration that is not stored.
    async with sessionmaker() as session, session.begin():
        if changes:
            tuning = await store_tuning(session, changes)
            audit(
                session, key.key_id, "engine.config.update", "engine_config", 1,
                **body.model_dump(exclude_unset=True),
            )  # fmt: skip
        row = await session.get(EngineConfig, 1)
        stored = _config_read(row, lifecycle)
    failed: dict[str, str] = {}
    if tuning is not None:
        applied = await apply_tuning(lifecycle, tuning)
        failed = {} if applied is None else applied.failed
        await components.get(EventBus).publish(EngineConfigChanged(revision=tuning.revision))
    return EngineConfigApplied(**stored, models=await _loaded_batching(lifecycle), failed=failed)


@router.post("/engine/restart", responses=error_responses(503))
async def restart_engine(_: AdminGlobalKey, components: ComponentsDep) -> EngineRestarted:
    """Reload every model loaded on this replica, one at a time, each swapped in place:
    requests being served meanwhile are answered by the old copy, none fails."""
    result = await restart(components.get(ModelLifecycle))
    return EngineRestarted(reloaded=result.reloaded, failed=result.failed)


@router.delete("/engine/cache")
async def clear_engine_cache(_: AdminGlobalKey, components: ComponentsDep) -> EngineCacheCleared:
    """Unload this replica's models that no active slot pins and no request is using."""
    result = await clear_cache(components.get(ModelLifecycle))
    return EngineCacheCleared(unloaded=result.unloaded, kept=result.kept)


@router.get("/engine/status")
async def engine_status(_: ReadGlobalKey, components: ComponentsDep) -> EngineStatusRead:
    """This replica, measured now (figures from control_plane/engine_api/monitoring.py)."""
    triton = components.get(TritonGateway)
    try:
        loaded: int | None = len(await triton.ready_models())
    except TritonError:  # unreachable: the status says so rather than failing
        loaded = None
    stats = components.find(InferenceStats)
    uptime_s = monitoring.process_uptime_s()
    memory = monitoring.memory_usage()
    gpus = await monitoring.gpu_usage()
    return EngineStatusRead(
        status="running" if loaded is not None else "degraded",
        uptime=monitoring.format_uptime(uptime_s),
        uptime_s=round(uptime_s, 3),
        loaded_models=loaded,
        active_requests=triton.in_flight.total(),
        total_predictions=None if stats is None else stats.total_predictions(),
        average_response_time=None if stats is None else stats.window().average_response_time_s,
        memory_usage=MemoryUsage(
            total_mb=memory.total_mb, used_mb=memory.used_mb, free_mb=memory.free_mb
        ),
        cpu_usage=await _CPU.percent(),
        gpu_usage=None if gpus is None else gpus.usage_percent,
    )
