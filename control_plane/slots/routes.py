"""/api/v1/projects/{id}/slots and /api/v1/slots/{id}."""

from __future__ import annotations

from fastapi import APIRouter, status

from control_plane.core.components import ComponentsDep
from control_plane.core.openapi_errors import TRITON_ERRORS, error_responses
from control_plane.core.types import ProjectIdPath, SlotIdPath
from control_plane.db.audit import audit
from control_plane.db.session import SessionDep
from control_plane.keys.access import ensure_model
from control_plane.keys.deps import GuardedRoute, ReadProjectKey, WriteProjectKey, WriteSlotKey
from control_plane.lifecycle.manager import ModelLifecycle
from control_plane.registry.service import get_model
from control_plane.routing.repository import get_project, get_slot, project_slots
from control_plane.slots import service
from control_plane.slots.schemas import SlotCreate, SlotRead, SlotUpdate

router = APIRouter(tags=["slots"], route_class=GuardedRoute)


async def _prepare(components: ComponentsDep, session: SessionDep, model_id: int) -> None:
    """Load and warm the model on this replica first; 409/503 if it cannot serve."""
    model = await get_model(session, model_id)
    await components.get(ModelLifecycle).prepare(model.triton_name)


@router.post(
    "/projects/{project_id}/slots",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(409, *TRITON_ERRORS),
)
async def create_slot(
    project_id: ProjectIdPath,
    body: SlotCreate,
    key: WriteProjectKey,
    session: SessionDep,
    components: ComponentsDep,
) -> SlotRead:
    await ensure_model(components, key, body.model_id)
    if body.active:  # a slot that serves must never point at a cold or broken model
        await _prepare(components, session, body.model_id)
    slot = await service.create_slot(session, project_id, body)
    audit(session, key.key_id, "slot.create", "slot", slot.id, **body.model_dump())
    return SlotRead.model_validate(slot)


@router.get("/projects/{project_id}/slots")
async def list_slots(
    project_id: ProjectIdPath, _: ReadProjectKey, session: SessionDep
) -> list[SlotRead]:
    await get_project(session, project_id)
    return [SlotRead.model_validate(s) for s in await project_slots(session, project_id)]


@router.patch("/slots/{slot_id}", responses=error_responses(409, *TRITON_ERRORS))
async def update_slot(
    slot_id: SlotIdPath,
    body: SlotUpdate,
    key: WriteSlotKey,
    session: SessionDep,
    components: ComponentsDep,
) -> SlotRead:
    if body.model_id is not None:
        await ensure_model(components, key, body.model_id)
    slot = await get_slot(session, slot_id)
    repointed = body.model_id is not None and body.model_id != slot.model_id
    activated = body.active is True and not slot.active
    will_serve = slot.active if body.active is None else body.active
    if will_serve and (repointed or activated):
        await _prepare(components, session, body.model_id or slot.model_id)
    await service.update_slot(session, slot, body)
    audit(
        session, key.key_id, "slot.update", "slot", slot.id, **body.model_dump(exclude_unset=True)
    )
    return SlotRead.model_validate(slot)
