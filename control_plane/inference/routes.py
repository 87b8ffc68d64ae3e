"""/inference/...: the public prediction API (seed 000)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from control_plane.core.request_id import current_request_id
from control_plane.core.responses import OrjsonResponse
from control_plane.core.state import SessionDep, StateDep, TritonDep
from control_plane.db.models import Model
from control_plane.inference.schemas import (
    BatchPredictRequest,
    BatchPredictResponse,
    HealthResponse,
    LoadedModelsResponse,
    PredictRequest,
    PredictResponse,
    ProjectPredictResponse,
)
from control_plane.inference.service import recommend, recommend_one
from control_plane.keys.deps import PredictKey, ensure_project_access
from control_plane.slots.repository import get_project, project_slots
from control_plane.slots.selection import choose_slot

router = APIRouter(prefix="/inference", tags=["inference"])


@router.post("/predict/{model_id}", response_model=PredictResponse)
async def predict(
    model_id: int,
    body: PredictRequest,
    _: PredictKey,
    state: StateDep,
    session: SessionDep,
    triton: TritonDep,
) -> PredictResponse:
    runtime = await state.runtimes.recommender(session, model_id)
    items = await recommend_one(triton, runtime, body.user_id, body.cutoff)
    return PredictResponse(items=items, model_id=model_id, request_id=current_request_id())


@router.post("/predict/{model_id}/batch", response_model=BatchPredictResponse)
async def predict_batch(
    model_id: int,
    body: BatchPredictRequest,
    _: PredictKey,
    state: StateDep,
    session: SessionDep,
    triton: TritonDep,
) -> BatchPredictResponse:
    runtime = await state.runtimes.recommender(session, model_id)
    lists = await recommend(triton, runtime, body.user_ids, body.cutoff)
    request_id = current_request_id()
    return BatchPredictResponse(
        results=[
            PredictResponse(items=items, model_id=model_id, request_id=request_id)
            for items in lists
        ]
    )


@router.post("/predict/project/{project_id}", response_model=ProjectPredictResponse)
async def predict_project(
    project_id: int,
    body: PredictRequest,
    key: PredictKey,
    state: StateDep,
    session: SessionDep,
    triton: TritonDep,
) -> ProjectPredictResponse:
    ensure_project_access(key, project_id)
    project = await get_project(session, project_id)
    slots = await project_slots(session, project_id, active_only=True)
    slot = choose_slot(slots, user_id=body.user_id, sticky=project.sticky, salt=project.salt)
    runtime = await state.runtimes.recommender(session, slot.model_id)
    items = await recommend_one(triton, runtime, body.user_id, body.cutoff)
    return ProjectPredictResponse(
        items=items,
        model_id=slot.model_id,
        slot_id=slot.id,
        slot_name=slot.name,
        request_id=current_request_id(),
    )


@router.get("/health", response_model=HealthResponse)
async def health(triton: TritonDep) -> OrjsonResponse:
    # Healthy means Triton answers: a control plane without its Triton serves nothing.
    if not await triton.is_live():
        return OrjsonResponse({"status": "unhealthy", "loaded_models": 0}, status_code=503)
    names = await triton.ready_models()
    return OrjsonResponse({"status": "healthy", "loaded_models": len(names)})


@router.get("/models", response_model=LoadedModelsResponse)
async def loaded_models(session: SessionDep, triton: TritonDep) -> LoadedModelsResponse:
    """Ids of registered models that this replica's Triton has loaded."""
    names = await triton.ready_models()
    ids = sorted(
        (await session.scalars(select(Model.id).where(Model.triton_name.in_(names)))).all()
        if names
        else []
    )
    return LoadedModelsResponse(models=ids, count=len(ids))
