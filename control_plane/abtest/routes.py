"""/api/v1/conversion_event/ and /api/v1/projects/{id}/ab_results|promote."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, status

from control_plane.abtest import service
from control_plane.abtest.schemas import (
    MAX_EVENTS_PER_BATCH,
    ABResults,
    ConversionEventIn,
    ConversionEventsAccepted,
    PromoteRequest,
)
from control_plane.core.errors import ConflictError
from control_plane.core.openapi_errors import error_responses
from control_plane.core.types import ProjectIdPath
from control_plane.db.audit import audit
from control_plane.db.session import SessionDep
from control_plane.keys.access import ensure_project
from control_plane.keys.deps import GuardedRoute, PredictAnyKey, ReadProjectKey, WriteProjectKey
from control_plane.routing.repository import get_project
from control_plane.slots.schemas import SlotRead

router = APIRouter(tags=["a/b testing"], route_class=GuardedRoute)


async def _record(
    events: list[ConversionEventIn], key: PredictAnyKey, session: SessionDep
) -> ConversionEventsAccepted:
    for project_id in {e.project for e in events}:
        ensure_project(key, project_id)
    created = await service.record_events(session, events)
    return ConversionEventsAccepted(
        received=len(events), created=created, duplicates=len(events) - created
    )


@router.post(
    "/conversion_event/", status_code=status.HTTP_201_CREATED, responses=error_responses(400, 404)
)
async def record_event(
    body: ConversionEventIn, key: PredictAnyKey, session: SessionDep
) -> ConversionEventsAccepted:
    return await _record([body], key, session)


@router.post(
    "/conversion_event/batch/",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400, 404),
)
async def record_events(
    body: Annotated[list[ConversionEventIn], Body(min_length=1, max_length=MAX_EVENTS_PER_BATCH)],
    key: PredictAnyKey,
    session: SessionDep,
) -> ConversionEventsAccepted:
    return await _record(body, key, session)


@router.get("/projects/{project_id}/ab_results")
async def ab_results(
    project_id: ProjectIdPath,
    _: ReadProjectKey,
    session: SessionDep,
    alpha: Annotated[float, Query(gt=0, lt=1)] = 0.05,
    min_impressions: Annotated[int, Query(ge=1)] = 100,
) -> ABResults:
    await get_project(session, project_id)
    return await service.ab_results(
        session, project_id, alpha=alpha, min_impressions=min_impressions
    )


@router.post("/projects/{project_id}/promote", responses=error_responses(400, 409))
async def promote(
    project_id: ProjectIdPath,
    key: WriteProjectKey,
    session: SessionDep,
    body: PromoteRequest | None = None,
) -> list[SlotRead]:
    await get_project(session, project_id)
    slot_id = body.slot_id if body else None
    if slot_id is None:
        results = await service.ab_results(session, project_id)
        if results.winner_slot_id is None:
            raise ConflictError(
                "no slot beats the control significantly yet; pass slot_id to promote anyway",
                project_id=project_id,
            )
        slot_id = results.winner_slot_id
    slots = await service.promote(session, project_id, slot_id)
    audit(session, key.key_id, "project.promote", "project", project_id, slot_id=slot_id)
    return [SlotRead.model_validate(s) for s in slots]
