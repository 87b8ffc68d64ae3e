"""/api/v1/models."""

from __future__ import annotations

from fastapi import APIRouter, status

from control_plane.core.audit import audit
from control_plane.core.state import SessionDep, SettingsDep
from control_plane.keys.deps import ReadKey, WriteKey
from control_plane.registry import service
from control_plane.registry.schemas import ModelRead, ModelRegister

router = APIRouter(prefix="/models", tags=["models"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def register_model(
    body: ModelRegister, key: WriteKey, session: SessionDep, settings: SettingsDep
) -> ModelRead:
    model = await service.register_model(session, settings.model_repository, body.triton_name)
    audit(session, key.key_id, "model.register", "model", model.id, triton_name=body.triton_name)
    return ModelRead.model_validate(model)


@router.get("")
async def list_models(_: ReadKey, session: SessionDep) -> list[ModelRead]:
    return [ModelRead.model_validate(m) for m in await service.list_models(session)]


@router.get("/{model_id}")
async def read_model(model_id: int, _: ReadKey, session: SessionDep) -> ModelRead:
    return ModelRead.model_validate(await service.get_model(session, model_id))
