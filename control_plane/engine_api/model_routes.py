"""/api/inference/models/...: seed 002's model management over Conch's registry.

A model in a path is whatever a caller calls it: its Conch id, its Triton name or
its registered name (the newest model of that name the key may see), resolved by
the model catalog. A model outside the key's project answers exactly like an
unknown one (404), so the policy is `any` and `visible_model` decides here.

"Unload" (`DELETE models/{model_id}`) means what the seed's answer says: the model
leaves this replica's Triton through the lifecycle, and its registration stays
(deleting it is `DELETE /api/v1/models/{id}`). A model an active slot pins is
refused with 409, as by `/api/v1/models/{id}/unload`: eviction and reconciliation
would bring it back at once. Like every load state, it is this replica's; other
replicas keep theirs, and reconciliation loads back models used recently.

Figures come from this replica's `InferenceStats` (null when the app counts no
predictions) and Triton's statistics; per-model memory is what Triton reports for
the model, null when its backend reports none. Nothing is estimated.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi import Path as PathParam

from conch_manifest.names import MAX_MODEL_NAME_LENGTH
from control_plane.core.components import Components, ComponentsDep
from control_plane.core.errors import ConflictError
from control_plane.core.openapi_errors import TRITON_ERRORS, error_responses
from control_plane.core.settings import Settings
from control_plane.db.audit import audit
from control_plane.db.models import Model
from control_plane.db.session import SessionDep
from control_plane.engine_api.management_schemas import (
    ModelInfo,
    ModelList,
    ModelMetricsAnswer,
    ModelReloaded,
    ModelSummary,
    ModelUnloaded,
)
from control_plane.engine_api.monitoring import from_triton, triton_memory_mb
from control_plane.keys.access import Policy, visible_model, visible_model_ids
from control_plane.keys.deps import GuardedRoute, ReadAnyKey
from control_plane.keys.schemas import Principal
from control_plane.lifecycle.manager import ModelLifecycle
from control_plane.lifecycle.schemas import ModelMetrics
from control_plane.lifecycle.stats import summarize
from control_plane.manifests.store import ManifestStore
from control_plane.model_core.stats import InferenceStats, ModelCounters
from control_plane.registry import service as registry

router = APIRouter(prefix="/models", tags=["engine api: models"], route_class=GuardedRoute)

# The path names a model by id or name: `visible_model` checks it, not the policy.
WriteAnyKey = Annotated[Principal, Depends(Policy("write", "any"))]
ModelRef = Annotated[
    str,
    PathParam(
        min_length=1,
        max_length=MAX_MODEL_NAME_LENGTH,
        description="the model's Conch id, its Triton name or its registered name",
    ),
]
_NOT_FOUND = error_responses(404)
_MB = 1024 * 1024


def _counters(components: Components, model_id: int) -> ModelCounters | None:
    """This replica's counters of the model; None when the app records none."""
    stats = components.find(InferenceStats)
    return None if stats is None else stats.model(model_id)


async def _triton_statistics(components: Components, triton_name: str) -> dict[str, Any] | None:
    """Triton's statistics of the model; None when Triton has none (not loaded), is
    unreachable or slow."""
    timeout_s = components.get(Settings).monitoring_triton_timeout_s
    triton = components.get(ModelLifecycle).triton
    return await from_triton(triton.statistics(triton_name), timeout_s)


async def _triton_memory_mb(
    components: Components, triton_name: str, loaded: Collection[str]
) -> float | None:
    """What Triton reports the model holds; None if not loaded or not reported."""
    if triton_name not in loaded:
        return None
    statistics = await _triton_statistics(components, triton_name)
    return None if statistics is None else triton_memory_mb(statistics)


async def _compiled(components: Components, triton_name: str) -> bool:
    """Whether the export optimized the model's graph (`conch export --optimize`,
    `compile_model`); False when its manifest cannot be read."""
    try:
        stored = await components.get(ManifestStore).get(triton_name)
    except Exception:  # missing or unreadable: the repository report says which
        return False
    return stored.manifest.optimization is not None


async def _summary(components: Components, model: Model) -> ModelSummary:
    status = components.get(ModelLifecycle).statuses.get(model.triton_name)
    counters = _counters(components, model.id)
    return ModelSummary(
        model_id=model.id,
        name=model.name,
        triton_name=model.triton_name,
        model_type=model.framework,
        task=model.task,
        compiled=await _compiled(components, model.triton_name),
        load_state=status.state.value if status else "unloaded",
        loaded_at=status.loaded_at if status else None,
        inference_count=counters.inference_count if counters else None,
    )


def _total(figures: list[float | None]) -> float | None:
    measured = [figure for figure in figures if figure is not None]
    return round(sum(measured), 3) if measured else None


@router.get("/list")
async def list_models(key: ReadAnyKey, session: SessionDep, components: ComponentsDep) -> ModelList:
    """The models this key may see (a project's key: its project's), with their load
    state on this replica and the memory Triton reports for those loaded."""
    models = await registry.list_models(session)
    visible = await visible_model_ids(components, key)
    if visible is not None:
        models = [m for m in models if m.id in visible]
    loaded = set(components.get(ModelLifecycle).loaded())
    memory = await asyncio.gather(
        *(_triton_memory_mb(components, m.triton_name, loaded) for m in models)
    )
    return ModelList(
        models=[await _summary(components, m) for m in models],
        total_models=len(models),
        total_memory_usage_mb=_total(list(memory)),
    )


@router.get("/{model_id}/info", responses=_NOT_FOUND)
async def model_info(
    model_id: ModelRef, key: ReadAnyKey, session: SessionDep, components: ComponentsDep
) -> ModelInfo:
    """Type, tensors, size on disk, load state on this replica, use and memory."""
    handle = await visible_model(components, key, model_id)
    model = await registry.get_model(session, handle.model_id)
    lifecycle = components.get(ModelLifecycle)
    status = lifecycle.statuses.get(handle.triton_name)
    counters = _counters(components, handle.model_id)
    on_disk = await registry.disk_details(components.get(ManifestStore), handle.triton_name)
    size = on_disk["size_bytes"]
    return ModelInfo(
        **(await _summary(components, model)).model_dump(),
        model_path=handle.triton_name,
        pinned=handle.triton_name in lifecycle.pinned,
        last_used=counters.last_used_at if counters else None,
        average_inference_time=counters.average_inference_time_s if counters else None,
        model_size_mb=None if size is None else round(size / _MB, 3),
        memory_usage_mb=await _triton_memory_mb(components, handle.triton_name, lifecycle.loaded()),
        max_batch_size=handle.max_batch_size,
        inputs=on_disk.get("inputs", []),
        outputs=on_disk.get("outputs", []),
        load_error=status.load_error if status else None,
    )


@router.delete("/{model_id}", responses=error_responses(404, 409, *TRITON_ERRORS))
async def unload_model(
    model_id: ModelRef, key: WriteAnyKey, session: SessionDep, components: ComponentsDep
) -> ModelUnloaded:
    """Unload from this replica's Triton (the registration stays). 409 while an active
    slot serves it. Unloading a model that is not loaded changes nothing."""
    handle = await visible_model(components, key, model_id)
    lifecycle = components.get(ModelLifecycle)
    if handle.triton_name in lifecycle.pinned:
        raise ConflictError(
            f"model {handle.model_id} is pinned by an active slot; repoint the slot first",
            model_id=handle.model_id,
        )
    loaded = lifecycle.loaded()
    was_loaded = handle.triton_name in loaded
    memory = await _triton_memory_mb(components, handle.triton_name, loaded)
    await lifecycle.unload(handle.triton_name)
    audit(session, key.key_id, "model.unload", "model", handle.model_id)
    return ModelUnloaded(
        message="Model unloaded successfully" if was_loaded else "Model was not loaded",
        model_id=handle.model_id,
        was_loaded=was_loaded,
        memory_freed_mb=memory if was_loaded else 0.0,
    )


@router.post("/{model_id}/reload", responses=error_responses(404, 409, *TRITON_ERRORS))
async def reload_model(
    model_id: ModelRef, key: WriteAnyKey, session: SessionDep, components: ComponentsDep
) -> ModelReloaded:
    """Load the model's files again and warm it; a loaded copy serves meanwhile."""
    handle = await visible_model(components, key, model_id)
    lifecycle = components.get(ModelLifecycle)
    started = time.monotonic()
    await lifecycle.reload(handle.triton_name)
    elapsed = time.monotonic() - started
    audit(session, key.key_id, "model.reload", "model", handle.model_id)
    return ModelReloaded(
        message="Model reloaded successfully",
        model_id=handle.model_id,
        reload_time=round(elapsed, 6),
        loaded_at=lifecycle.status(handle.triton_name).loaded_at,
    )


@router.get("/{model_id}/metrics", responses=_NOT_FOUND)
async def model_metrics(
    model_id: ModelRef, key: ReadAnyKey, components: ComponentsDep
) -> ModelMetricsAnswer:
    """Conch's counters of this replica and Triton's statistics of its server."""
    handle = await visible_model(components, key, model_id)
    raw = await _triton_statistics(components, handle.triton_name)
    triton = None
    if raw is not None:
        triton = ModelMetrics(
            model_id=handle.model_id, triton_name=handle.triton_name, **summarize(raw)
        )
    counters = _counters(components, handle.model_id)
    requests = counters.inference_count + counters.error_count if counters else 0
    busy_s = counters.total_inference_time_s if counters else 0.0
    return ModelMetricsAnswer(
        model_id=handle.model_id,
        inference_count=counters.inference_count if counters else None,
        average_inference_time=counters.average_inference_time_s if counters else None,
        total_inference_time=busy_s if counters else None,
        last_inference_time=counters.last_inference_time_s if counters else None,
        error_count=counters.error_count if counters else None,
        error_rate=counters.error_rate if counters and requests else None,
        throughput_per_second=(
            round(counters.inference_count / busy_s, 3) if counters and busy_s > 0 else None
        ),
        memory_usage_mb=None if raw is None else triton_memory_mb(raw),
        triton=triton,
    )
