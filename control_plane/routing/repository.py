"""SQL for projects' slots and models, shared by inference, management and A/B analysis."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.core.errors import project_not_found, slot_not_found
from control_plane.db.models import DeploymentSlot, Model, Project


async def get_project(session: AsyncSession, project_id: int) -> Project:
    project = await session.get(Project, project_id)
    if project is None:
        raise project_not_found(project_id)
    return project


async def project_slots(
    session: AsyncSession, project_id: int, *, active_only: bool = False
) -> Sequence[DeploymentSlot]:
    query = select(DeploymentSlot).where(DeploymentSlot.project_id == project_id)
    if active_only:
        query = query.where(DeploymentSlot.active.is_(True))
    return (await session.scalars(query.order_by(DeploymentSlot.id))).all()


async def project_model_ids(session: AsyncSession, project_id: int) -> Sequence[int]:
    """The models registered into the project (not those its slots merely name)."""
    query = select(Model.id).where(Model.project_id == project_id).order_by(Model.id)
    return (await session.scalars(query)).all()


async def get_slot(session: AsyncSession, slot_id: int) -> DeploymentSlot:
    slot = await session.get(DeploymentSlot, slot_id)
    if slot is None:
        raise slot_not_found(slot_id)
    return slot
