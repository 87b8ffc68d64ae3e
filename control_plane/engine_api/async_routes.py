"""Seed 002's async predictions: `POST /api/inference/predict/async`, then poll or cancel.

Any replica accepts, runs or answers any task: the queue and the tasks live in
Redis (`control_plane/jobs/`). A task is visible to the key that submitted it
and to admin keys of its project; to any other key it reads as unknown (404).
A listing shows the same tasks. The queues' figures span every project: they need
a read key restricted to no project, as the engine's metrics do.

A poll may wait: `?wait_ms=N` (at most 30000) answers as soon as the task is
finished, or its state when N milliseconds have passed (`jobs/waiting.py`), so a
client needs one poll per task instead of polling on a timer.

Submit and poll are also served by the prediction fast lane (`ENDPOINTS`, handed
to `inference/lane.py` by the app), which answers exactly as these FastAPI
routes do (tests/control_plane/jobs/test_async_lane.py) for about half their
CPU. Their key's rate limit is decided before they run, as behind FastAPI: a
refused submission queues nothing.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qsl

import pydantic
from fastapi import APIRouter, Header, Query
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from pydantic import Field
from starlette.routing import Match
from starlette.types import Scope

from control_plane.core.components import Components, ComponentsDep
from control_plane.core.openapi_errors import error_responses
from control_plane.inference.endpoints import Endpoint
from control_plane.inference.handlers import Payload
from control_plane.jobs import listing, service
from control_plane.jobs.schemas import (
    AsyncPredictRequest,
    AsyncSubmitResponse,
    TaskStatus,
    TaskView,
)
from control_plane.jobs.waiting import MAX_WAIT_MS
from control_plane.keys.access import Policy
from control_plane.keys.deps import GuardedRoute, PredictAnyKey, ReadGlobalKey
from control_plane.keys.schemas import Principal
from control_plane.ratelimit.limiter import RateLimitResult

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
WaitMs = Annotated[
    int,
    Query(
        ge=0,
        le=MAX_WAIT_MS,
        description="wait up to this long for the task to finish; then its state as it is",
    ),
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
async def get_async(
    app: ComponentsDep, key: PredictAnyKey, task_id: TaskId, wait_ms: WaitMs = 0
) -> TaskView:
    return service.task_view(await service.awaited_task(app, key, task_id, wait_ms))


@router.delete(
    "/{task_id}",
    response_model=TaskView,
    responses=error_responses(404, 409, 503),
    summary="Cancel a queued task (409 once a worker has started it)",
)
async def cancel_async(app: ComponentsDep, key: PredictAnyKey, task_id: TaskId) -> TaskView:
    return await service.cancel(app, key, task_id)


# --- the same submit and poll in the prediction fast lane -----------------------------


class _LimitFirst(Policy):
    """A policy whose key's rate limit is decided before the handler runs (the lane
    otherwise checks it beside a prediction): a refused submission queues nothing, a
    refused poll does not wait first."""

    async def admit(
        self, components: Components, token: str | None
    ) -> tuple[Principal, asyncio.Future[RateLimitResult] | None]:
        principal, check = await super().admit(components, token)
        if check is not None:
            await asyncio.wait([check])
        return principal, check


_LANE_POLICY = _LimitFirst("predict", "any")
_IDEMPOTENCY_KEY = pydantic.TypeAdapter(Annotated[str, Field(min_length=1, max_length=200)])
_WAIT_MS = pydantic.TypeAdapter(Annotated[int, Field(ge=0, le=MAX_WAIT_MS)])


@dataclass(frozen=True, slots=True)
class _Submission:
    body: AsyncPredictRequest
    idempotency_key: str | None


def _located(exc: pydantic.ValidationError, *where: str) -> list[Any]:
    return [{**error, "loc": (*where, *error["loc"])} for error in exc.errors()]


def _read_submission(scope: Scope, raw_body: bytes) -> _Submission:
    """The header and the body, their problems reported together as FastAPI does."""
    errors: list[Any] = []
    key = next((v.decode("latin-1") for n, v in scope["headers"] if n == b"idempotency-key"), None)
    if key is not None:
        try:
            key = _IDEMPOTENCY_KEY.validate_python(key)
        except pydantic.ValidationError as exc:
            errors += _located(exc, "header", "Idempotency-Key")
    body = None
    if not raw_body:
        errors.append({"type": "missing", "loc": ("body",), "msg": "Field required"})
    else:
        try:
            body = AsyncPredictRequest.model_validate_json(raw_body)
        except pydantic.ValidationError as exc:
            errors += _located(exc, "body")
    if errors or body is None:
        raise RequestValidationError(errors)
    return _Submission(body, key)


def _read_wait(scope: Scope, _: bytes) -> int:
    # As Starlette reads a query parameter given twice: the last one.
    given = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
    if "wait_ms" not in given:
        return 0
    try:
        return _WAIT_MS.validate_python(given["wait_ms"])
    except pydantic.ValidationError as exc:
        raise RequestValidationError(_located(exc, "query", "wait_ms")) from None


async def _submit(components: Components, key: Principal, _: None, request: _Submission) -> Payload:
    answer = await service.submit(components, key, request.body, request.idempotency_key)
    return answer.model_dump(mode="json")


async def _poll(components: Components, key: Principal, task_id: str, wait_ms: int) -> Payload:
    task = await service.awaited_task(components, key, task_id, wait_ms)
    return service.task_view(task).model_dump(mode="json")


ENDPOINTS = (
    Endpoint(
        "submit_async",
        "POST",
        router.prefix,
        AsyncPredictRequest,
        _LANE_POLICY,
        _submit,
        AsyncSubmitResponse,
        "Queue a prediction",
        status_code=202,
        read=_read_submission,
    ),
    Endpoint(
        "get_async",
        "GET",
        router.prefix + "/{task_id}",
        None,
        _LANE_POLICY,
        _poll,
        TaskView,
        "A task's status",
        path_shape=_TASK_ID.pattern,
        read=_read_wait,
    ),
)
