"""Seed 002's async predictions: `POST /api/inference/predict/async`, then poll or cancel.

Any replica accepts, runs or answers any task: the queue and the tasks live in
Redis (`control_plane/jobs/`). A task is visible to the key that submitted it
and to admin keys of its project; to any other key it reads as unknown (404).
A listing shows the same tasks. The queues' figures span every project: they need
a read key restricted to no project, as the engine's metrics do.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi import Path as PathParam
from starlette.routing import Match
from starlette.types import Scope

from control_plane.core.components import ComponentsDep
from control_plane.core.openapi_errors import error_responses
from control_plane.jobs import listing, service
from control_plane.jobs.schemas import (
    AsyncPredictRequest,
    AsyncSubmitResponse,
    TaskStatus,
    TaskView,
)
from control_plane.keys.deps import GuardedRoute, PredictAnyKey, ReadGlobalKey

_TASK_ID = re.compile(r"task_[0-9a-f]{24}")


class _TaskRoute(GuardedRoute):
    """A path whose `{task_id}` is no task id is not this route's: `DELETE .../queues`
    answers 405 (only GET is there), not a 422 about the task id."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        task_id = child.get("path_params", {}).get("task_id") if match is not Match.NONE else None
        if task_id is not None and not _TASK_ID.fullmatch(task_id):
            return Match.NONE, {}
        return match, child


router = APIRouter(
    prefix="/api/inference/predict/async", tags=["inference engine"], route_class=_TaskRoute
)

TaskId = Annotated[
    str, PathParam(pattern=r"^task_[0-9a-f]{24}$", description="as `POST` answered it")
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="a retried submission with the same key and body returns the same task",
    ),
]


@router.post(
    "",
    status_code=202,
    response_model=AsyncSubmitResponse,
    responses=error_responses(400, 404, 409, 503),
    summary="Queue a prediction; poll it, or have it POSTed to callback_url",
)
async def submit_async(
    app: ComponentsDep,
    key: PredictAnyKey,
    body: AsyncPredictRequest,
    idempotency_key: IdempotencyKey = None,
) -> AsyncSubmitResponse:
    return await service.submit(app, key, body, idempotency_key)


# Declared before `/{task_id}` (which, besides, takes only task ids: `_TaskRoute`).
@router.get(
    "",
    response_model=listing.TaskList,
    responses=error_responses(503),
    summary="Recent tasks, newest first: a key's own; an admin key's, its project's",
)
async def list_async(
    app: ComponentsDep,
    key: PredictAnyKey,
    limit: Annotated[int, Query(ge=1, le=listing.MAX_LISTED)] = 50,
    status: Annotated[TaskStatus | None, Query(description="only tasks in this state")] = None,
) -> listing.TaskList:
    return await listing.list_tasks(app, key, limit=limit, status=status)


@router.get(
    "/queues",
    response_model=listing.QueuesView,
    responses=error_responses(503),
    summary="Tasks waiting per priority, running, completed per second, and the workers",
)
async def queues_async(app: ComponentsDep, _: ReadGlobalKey) -> listing.QueuesView:
    return await listing.queues(app)


@router.get(
    "/{task_id}",
    response_model=TaskView,
    responses=error_responses(404, 503),
    summary="A task's status, and its result or error once finished",
)
async def get_async(app: ComponentsDep, key: PredictAnyKey, task_id: TaskId) -> TaskView:
    return service.task_view(await service.visible_task(app, key, task_id))


@router.delete(
    "/{task_id}",
    response_model=TaskView,
    responses=error_responses(404, 409, 503),
    summary="Cancel a queued task (409 once a worker has started it)",
)
async def cancel_async(app: ComponentsDep, key: PredictAnyKey, task_id: TaskId) -> TaskView:
    return await service.cancel(app, key, task_id)
