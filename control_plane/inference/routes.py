"""/inference/...: the public prediction API (seed 000) and the replica's health."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from fastapi import APIRouter
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from control_plane.core.components import ComponentsDep
from control_plane.core.errors import DEFAULT_RETRY_AFTER_S, TritonError, retry_after
from control_plane.core.responses import OrjsonResponse
from control_plane.core.settings import Settings
from control_plane.db.models import Model
from control_plane.db.probes import answers, sql_ping
from control_plane.db.session import SessionDep
from control_plane.events.bus import EventBus
from control_plane.inference.endpoints import include_endpoints
from control_plane.inference.schemas import (
    HealthResponse,
    LoadedModelsResponse,
    ReadinessResponse,
)
from control_plane.keys.deps import GuardedRoute, Public
from control_plane.lifecycle.manager import ModelLifecycle
from control_plane.lifecycle.reconciler import Reconciler
from control_plane.ratelimit.limiter import RateLimiter
from control_plane.triton.client import TritonGateway

router = APIRouter(prefix="/inference", tags=["inference"], route_class=GuardedRoute)


# The prediction endpoints (`endpoints.py`). With the fast lane on (the default)
# `lane.py` serves them before FastAPI routes them.
include_endpoints(router)


async def _check(probe: Awaitable[object], timeout_s: float) -> str:
    return "ok" if await answers(probe, timeout_s) else "down"


@router.get(
    "/health",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "Triton is down"}},
    dependencies=[Public],
)
async def health(app: ComponentsDep) -> OrjsonResponse:
    """Per component; `degraded` when something other than Triton is down, never a lie."""
    triton = app.get(TritonGateway)
    events = app.get(EventBus)
    redis = app.find(Redis)
    settings = app.get(Settings)
    probe_s = settings.health_probe_timeout_s
    triton_live = await triton.is_live()
    components = {
        "triton": "ok" if triton_live else "down",
        "sql": await _check(sql_ping(app.get(AsyncEngine)), probe_s),
        "redis": "not_configured" if redis is None else await _check(redis.ping(), probe_s),
        "listener": "not_configured"
        if events.redis is None
        else ("ok" if events.subscribed.is_set() else "down"),
        # `fallback`: limits are per process right now, not shared by the replicas.
        "rate_limiter": await app.get(RateLimiter).health()
        if settings.rate_limit_enabled
        else "disabled",
    }
    # Entries Triton cannot use are skipped, the rest serves: degraded, not down.
    bad_entries = app.get(ModelLifecycle).repository_problems()
    components["repository"] = "degraded" if bad_entries else "ok"
    body = {"components": components, "bad_entries": bad_entries}
    if not triton_live:  # a control plane without its Triton serves nothing
        unhealthy = {"status": "unhealthy", "loaded_models": 0, **body}
        return OrjsonResponse(unhealthy, 503, headers=retry_after(DEFAULT_RETRY_AFTER_S))
    healthy = all(v in ("ok", "not_configured", "disabled") for v in components.values())
    status = "healthy" if healthy else "degraded"
    loaded = len(await triton.ready_models())
    return OrjsonResponse({"status": status, "loaded_models": loaded, **body})


@router.get(
    "/ready",
    response_model=ReadinessResponse,
    responses={503: {"model": ReadinessResponse, "description": "Not ready to serve"}},
    dependencies=[Public],
)
async def ready(components: ComponentsDep) -> OrjsonResponse:
    """503 + Retry-After while Triton is unreachable, and until this replica has
    reconciled once and every pinned model is loaded and warmed here. Loaded means
    in Triton's own index too, not only in memory: a restarted Triton is empty."""
    lifecycle = components.get(ModelLifecycle)
    wait_s = components.get(Settings).readiness_triton_timeout_s
    try:
        in_triton = set(
            await asyncio.wait_for(components.get(TritonGateway).ready_models(), wait_s)
        )
        triton_up = True
    except (TritonError, TimeoutError):
        in_triton, triton_up = set(), False
    loaded = in_triton.intersection(lifecycle.loaded())
    missing = sorted(name for name in lifecycle.pinned if name not in loaded)
    is_ready = triton_up and components.get(Reconciler).passes > 0 and not missing
    body = {"ready": is_ready, "pinned": len(lifecycle.pinned), "missing": missing}
    if is_ready:
        return OrjsonResponse(body)
    return OrjsonResponse(body, status_code=503, headers=retry_after(DEFAULT_RETRY_AFTER_S))


@router.get("/models", response_model=LoadedModelsResponse, dependencies=[Public])
async def loaded_models(session: SessionDep, components: ComponentsDep) -> LoadedModelsResponse:
    """Ids of registered models loaded and warmed on this replica (its own Triton)."""
    names = components.get(ModelLifecycle).loaded()
    ids = sorted(
        (await session.scalars(select(Model.id).where(Model.triton_name.in_(names)))).all()
        if names
        else []
    )
    return LoadedModelsResponse(models=ids, count=len(ids))
