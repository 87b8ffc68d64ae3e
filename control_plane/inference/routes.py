"""/inference/...: the public prediction API (seed 000)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from fastapi import APIRouter
from redis.exceptions import RedisError
from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError

from control_plane.core.responses import OrjsonResponse
from control_plane.core.state import SessionDep, StateDep
from control_plane.db.models import Model
from control_plane.inference.handlers import (
    predict_for_project,
    predict_for_user,
    predict_for_users,
)
from control_plane.inference.schemas import (
    BatchPredictRequest,
    BatchPredictResponse,
    HealthResponse,
    LoadedModelsResponse,
    PredictRequest,
    PredictResponse,
    ProjectPredictResponse,
    ReadinessResponse,
)
from control_plane.keys.deps import PredictKey

router = APIRouter(prefix="/inference", tags=["inference"])


# The prediction handlers take no SQL session: the runtime and routing caches open
# one only on a miss, so a warm request costs no database round trip. They answer
# with bodies built by hand and rendered by orjson: validating them again against
# the response models cost more than the rest of the handler. With the fast lane on
# (the default) `lane.py` serves these three paths before FastAPI routes them.


@router.post("/predict/{model_id}", response_model=PredictResponse)
async def predict(
    model_id: int, body: PredictRequest, key: PredictKey, state: StateDep
) -> OrjsonResponse:
    return OrjsonResponse(await predict_for_user(state, key, model_id, body))


@router.post("/predict/{model_id}/batch", response_model=BatchPredictResponse)
async def predict_batch(
    model_id: int, body: BatchPredictRequest, key: PredictKey, state: StateDep
) -> OrjsonResponse:
    return OrjsonResponse(await predict_for_users(state, key, model_id, body))


@router.post("/predict/project/{project_id}", response_model=ProjectPredictResponse)
async def predict_project(
    project_id: int, body: PredictRequest, key: PredictKey, state: StateDep
) -> OrjsonResponse:
    return OrjsonResponse(await predict_for_project(state, key, project_id, body))


async def _check(probe: Awaitable[object], timeout_s: float = 1.0) -> str:
    try:
        await asyncio.wait_for(probe, timeout_s)
    except (TimeoutError, OSError, SQLAlchemyError, RedisError):
        return "down"
    return "ok"


@router.get("/health", response_model=HealthResponse)
async def health(state: StateDep) -> OrjsonResponse:
    """Per component; `degraded` when something other than Triton is down, never a lie."""
    triton_live = await state.triton.is_live()
    components = {
        "triton": "ok" if triton_live else "down",
        "sql": await _check(_sql_ping(state)),
        "redis": "not_configured" if state.redis is None else await _check(state.redis.ping()),
        "listener": "not_configured"
        if state.events.redis is None
        else ("ok" if state.events.subscribed.is_set() else "down"),
    }
    if not triton_live:  # a control plane without its Triton serves nothing
        return OrjsonResponse(
            {"status": "unhealthy", "loaded_models": 0, "components": components},
            status_code=503,
        )
    loaded = len(await state.triton.ready_models())
    healthy = all(v in ("ok", "not_configured") for v in components.values())
    status = "healthy" if healthy else "degraded"
    return OrjsonResponse({"status": status, "loaded_models": loaded, "components": components})


async def _sql_ping(state: StateDep) -> None:
    async with state.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


@router.get("/ready", response_model=ReadinessResponse)
async def ready(state: StateDep) -> OrjsonResponse:
    """503 until this replica has reconciled once and every pinned model is loaded here."""
    lifecycle = state.lifecycle
    missing = sorted(name for name in lifecycle.pinned if name not in set(lifecycle.loaded()))
    is_ready = state.reconciler.passes > 0 and not missing
    body = {"ready": is_ready, "pinned": len(lifecycle.pinned), "missing": missing}
    return OrjsonResponse(body, status_code=200 if is_ready else 503)


@router.get("/models", response_model=LoadedModelsResponse)
async def loaded_models(session: SessionDep, state: StateDep) -> LoadedModelsResponse:
    """Ids of registered models loaded and warmed on this replica (its own Triton)."""
    names = state.lifecycle.loaded()
    ids = sorted(
        (await session.scalars(select(Model.id).where(Model.triton_name.in_(names)))).all()
        if names
        else []
    )
    return LoadedModelsResponse(models=ids, count=len(ids))
