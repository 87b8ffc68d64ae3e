"""Project rows (services flush; the request commits)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.core.errors import ConflictError
from control_plane.db.models import Project


async def create_project(session: AsyncSession, name: str, *, sticky: bool = False) -> Project:
    if await session.scalar(select(Project.id).where(Project.name == name)) is not None:
        raise ConflictError(f"project {name!r} already exists", name=name)
    # The salt keeps sticky assignments independent between projects.
    project = Project(name=name, sticky=sticky, salt=secrets.token_hex(16))
    session.add(project)
    await session.flush()
    return project


async def find_project(session: AsyncSession, name: str) -> Project | None:
    return await session.scalar(select(Project).where(Project.name == name))


async def list_projects(session: AsyncSession) -> Sequence[Project]:
    return (await session.scalars(select(Project).order_by(Project.id))).all()
