"""Create and change deployment slots (services flush; the request commits)."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.core.errors import ConflictError
from control_plane.db.models import DeploymentSlot
from control_plane.events.bus import publish_after_commit
from control_plane.events.schemas import SlotChanged
from control_plane.registry.service import get_model
from control_plane.routing.repository import get_project
from control_plane.slots.schemas import SlotCreate, SlotUpdate


def slot_changed(session: AsyncSession, slot: DeploymentSlot) -> None:
    """Every replica re-reads its pinned set after the commit (and reconciles anyway)."""
    publish_after_commit(
        session,
        SlotChanged(
            project_id=slot.project_id, slot_id=slot.id, model_id=slot.model_id, active=slot.active
        ),
    )


async def _only_control(session: AsyncSession, project_id: int, slot_id: int) -> None:
    await session.execute(
        update(DeploymentSlot)
        .where(DeploymentSlot.project_id == project_id, DeploymentSlot.id != slot_id)
        .values(is_control=False)
    )


async def create_slot(session: AsyncSession, project_id: int, body: SlotCreate) -> DeploymentSlot:
    await get_project(session, project_id)
    await get_model(session, body.model_id)
    duplicate = await session.scalar(
        select(DeploymentSlot.id).where(
            DeploymentSlot.project_id == project_id, DeploymentSlot.name == body.name
        )
    )
    if duplicate is not None:
        raise ConflictError(f"slot {body.name!r} already exists in project {project_id}")
    slot = DeploymentSlot(project_id=project_id, **body.model_dump())
    session.add(slot)
    await session.flush()
    if slot.is_control:
        await _only_control(session, project_id, slot.id)
    slot_changed(session, slot)
    return slot


async def update_slot(session: AsyncSession, slot: DeploymentSlot, body: SlotUpdate) -> None:
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    if "model_id" in changes:
        await get_model(session, changes["model_id"])
    for field, value in changes.items():
        setattr(slot, field, value)
    await session.flush()
    if changes.get("is_control"):
        await _only_control(session, slot.project_id, slot.id)
    if {"model_id", "active"} & changes.keys():
        slot_changed(session, slot)
