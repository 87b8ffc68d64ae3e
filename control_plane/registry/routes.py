"""/api/v1/models: the registry, and model management on the replica that answers.

Load components, load/unload/reload and metrics concern the answering replica's Triton
(every replica converges on SQL by itself; these are the operator's levers).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status

from control_plane.core.components import ComponentsDep
from control_plane.core.errors import ConflictError, TritonError
from control_plane.core.openapi_errors import TRITON_ERRORS, error_responses
from control_plane.core.settings import Settings
from control_plane.core.types import ModelIdPath
from control_plane.db.audit import audit
from control_plane.db.models import Model
from control_plane.db.session import SessionDep
from control_plane.keys.access import (
    Policy,
    ensure_may_register,
    ensure_owns_model,
    visible_model_ids,
)
from control_plane.keys.deps import GuardedRoute, ReadAnyKey, ReadModelKey, WriteModelKey
from control_plane.keys.schemas import Principal
from control_plane.lifecycle.deps import LifecycleDep
from control_plane.lifecycle.manager import ModelLifecycle
from control_plane.lifecycle.schemas import ModelMetrics
from control_plane.lifecycle.stats import summarize
from control_plane.manifests.store import ManifestStore
from control_plane.registry import service
from control_plane.registry.schemas import ModelInfo, ModelRead, ModelRegister

router = APIRouter(prefix="/models", tags=["models"], route_class=GuardedRoute)

# Registration names its project in the body: `ensure_may_register` decides there.
WriteAnyKey = Annotated[Principal, Depends(Policy("write", "any"))]


def _with_status(lifecycle: ModelLifecycle, model: Model, **details: object) -> ModelInfo:
    info = ModelInfo.model_validate({**ModelRead.model_validate(model).model_dump(), **details})
    info.pinned = model.triton_name in lifecycle.pinned
    info.repository_error = lifecycle.bad_entries.get(model.triton_name)
    known = lifecycle.statuses.get(model.triton_name)
    if known is not None:
        info.load_state = known.state.value
        info.loaded_at = known.loaded_at
        info.last_used_at = known.last_used_at
        info.replica_load_error = known.load_error
    return info


async def _info(components: ComponentsDep, model: Model) -> ModelInfo:
    details = await service.disk_details(components.get(ManifestStore), model.triton_name)
    return _with_status(components.get(ModelLifecycle), model, **details)


@router.post("", status_code=status.HTTP_201_CREATED, responses=error_responses(404, 409))
async def register_model(
    body: ModelRegister, key: WriteAnyKey, session: SessionDep, components: ComponentsDep
) -> ModelRead:
    """Register model_repository/<triton_name>, into `project_id` if given. A key
    restricted to a project registers into that project only; into no project needs
    a key restricted to none (403)."""
    ensure_may_register(key, body.project_id)
    model = await service.register_model(
        session,
        components.get(ManifestStore),
        body.triton_name,
        project_id=body.project_id,
        visible=await visible_model_ids(components, key),
    )
    into = {} if body.project_id is None else {"project_id": body.project_id}
    audit(
        session,
        key.key_id,
        "model.register",
        "model",
        model.id,
        triton_name=body.triton_name,
        **into,
    )
    return ModelRead.model_validate(model)


@router.get("")
async def list_models(
    key: ReadAnyKey, session: SessionDep, components: ComponentsDep
) -> list[ModelInfo]:
    """Every registered model; a project-restricted key sees its project's models only
    (registered into it, or named by its slots)."""
    models = await service.list_models(session)
    visible = await visible_model_ids(components, key)
    if visible is not None:
        models = [m for m in models if m.id in visible]
    return [_with_status(components.get(ModelLifecycle), m) for m in models]


@router.get("/{model_id}")
async def read_model(
    model_id: ModelIdPath, _: ReadModelKey, session: SessionDep, components: ComponentsDep
) -> ModelInfo:
    """Framework, tensors, size on disk, and load state/time/error on this replica."""
    return await _info(components, await service.get_model(session, model_id))


@router.delete(
    "/{model_id}", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(404, 409)
)
async def delete_model(model_id: ModelIdPath, key: WriteModelKey, session: SessionDep) -> None:
    """Unregister; every replica unloads it (model_deleted, and reconciliation). A key
    restricted to a project deletes only models registered into that project."""
    ensure_owns_model(key, model_id, (await service.get_model(session, model_id)).project_id)
    model = await service.delete_model(session, model_id)
    audit(session, key.key_id, "model.delete", "model", model_id, triton_name=model.triton_name)


@router.post("/{model_id}/load", responses=error_responses(409, *TRITON_ERRORS))
async def load_model(
    model_id: ModelIdPath, key: WriteModelKey, session: SessionDep, components: ComponentsDep
) -> ModelInfo:
    """Load and warm on this replica now (a failed model is retried at once)."""
    model = await service.get_model(session, model_id)
    components.get(ModelLifecycle).status(model.triton_name).touch()
    await components.get(ModelLifecycle).wait_loaded(
        model.triton_name, components.get(Settings).model_load_timeout_s, retry_failed=True
    )
    audit(session, key.key_id, "model.load", "model", model.id)
    return await _info(components, model)


@router.post("/{model_id}/unload", responses=error_responses(409, *TRITON_ERRORS))
async def unload_model(
    model_id: ModelIdPath, key: WriteModelKey, session: SessionDep, components: ComponentsDep
) -> ModelInfo:
    """Unload from this replica; refused while an active slot serves the model."""
    model = await service.get_model(session, model_id)
    if model.triton_name in components.get(ModelLifecycle).pinned:
        raise ConflictError(
            f"model {model_id} is pinned by an active slot; repoint the slot first",
            model_id=model_id,
        )
    await components.get(ModelLifecycle).unload(model.triton_name)
    audit(session, key.key_id, "model.unload", "model", model.id)
    return await _info(components, model)


@router.post("/{model_id}/reload", responses=error_responses(409, *TRITON_ERRORS))
async def reload_model(
    model_id: ModelIdPath, key: WriteModelKey, session: SessionDep, components: ComponentsDep
) -> ModelInfo:
    """Triton reloads in place: the loaded copy serves until the new one is ready."""
    model = await service.get_model(session, model_id)
    await components.get(ModelLifecycle).reload(model.triton_name)
    audit(session, key.key_id, "model.reload", "model", model.id)
    return await _info(components, model)


@router.get("/{model_id}/metrics")
async def model_metrics(
    model_id: ModelIdPath, _: ReadModelKey, session: SessionDep, lifecycle: LifecycleDep
) -> ModelMetrics:
    """Counts, average latencies and the batch sizes Triton formed, since it was loaded."""
    model = await service.get_model(session, model_id)
    try:
        raw = await lifecycle.triton.statistics(model.triton_name)
    except TritonError:
        raw = {}  # not loaded here: Triton keeps no statistics for it
    summary = summarize(raw)
    return ModelMetrics(model_id=model.id, triton_name=model.triton_name, **summary)
