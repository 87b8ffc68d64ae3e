"""/api/v1/projects."""

from __future__ import annotations

from fastapi import APIRouter, status

from control_plane.core.openapi_errors import error_responses
from control_plane.core.types import ProjectIdPath
from control_plane.db.audit import audit
from control_plane.db.session import SessionDep
from control_plane.keys.deps import (
    GuardedRoute,
    ReadAnyKey,
    ReadProjectKey,
    WriteGlobalKey,
    WriteProjectKey,
)
from control_plane.projects import service
from control_plane.projects.schemas import ProjectCreate, ProjectRead, ProjectUpdate
from control_plane.routing.repository import get_project

router = APIRouter(prefix="/projects", tags=["projects"], route_class=GuardedRoute)


@router.post("", status_code=status.HTTP_201_CREATED, responses=error_responses(409))
async def create_project(
    body: ProjectCreate, key: WriteGlobalKey, session: SessionDep
) -> ProjectRead:
    project = await service.create_project(session, body.name, sticky=body.sticky)
    audit(session, key.key_id, "project.create", "project", project.id, name=body.name)
    return ProjectRead.model_validate(project)


@router.get("")
async def list_projects(key: ReadAnyKey, session: SessionDep) -> list[ProjectRead]:
    projects = await service.list_projects(session)
    return [ProjectRead.model_validate(p) for p in projects if key.may_access_project(p.id)]


@router.get("/{project_id}")
async def read_project(
    project_id: ProjectIdPath, _: ReadProjectKey, session: SessionDep
) -> ProjectRead:
    return ProjectRead.model_validate(await get_project(session, project_id))


@router.patch("/{project_id}")
async def update_project(
    project_id: ProjectIdPath, body: ProjectUpdate, key: WriteProjectKey, session: SessionDep
) -> ProjectRead:
    project = await get_project(session, project_id)
    if body.sticky is not None:
        project.sticky = body.sticky
    await session.flush()
    audit(session, key.key_id, "project.update", "project", project.id, sticky=project.sticky)
    return ProjectRead.model_validate(project)
