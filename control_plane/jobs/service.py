"""Async predictions for the doors: submit, read, cancel, and what a worker runs.

A task is checked as the synchronous `POST /api/inference/predict` checks its
request, before anything is queued: the key may see the model (404 as for an
unknown one), the data fits the model's inputs (400 naming the feature), the
callback's host is allowed (422). What is queued then cannot fail for a reason
the caller could have been told at once, but for the model call itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import async_sessionmaker

from conch_manifest.priorities import Priority
from control_plane.core.components import Components
from control_plane.core.errors import (
    ConflictError,
    NotFoundError,
    RateLimitExceededError,
    ServiceUnavailableError,
    TritonUnavailableError,
    ValidationError,
    retry_after,
)
from control_plane.core.settings import Settings
from control_plane.jobs.callback_urls import check_callback_url
from control_plane.jobs.queue import FINISHED, TaskQueue
from control_plane.jobs.schemas import AsyncPredictRequest, AsyncSubmitResponse, TaskView
from control_plane.jobs.waiting import UNSUBSCRIBED_RECHECK_S, TaskWaiters
from control_plane.keys.access import visible_model
from control_plane.keys.schemas import Principal
from control_plane.model_core.catalog import ModelCatalog
from control_plane.model_core.inputs import MAX_ROWS, input_tensors
from control_plane.model_core.predict import predict
from control_plane.model_core.stats import InferenceStats
from control_plane.triton.client import TritonGateway

# How long a full queue asks a caller to wait before submitting again.
_FULL_RETRY_S = 5


def queue_of(components: Components) -> TaskQueue:
    queue = components.find(TaskQueue)
    if queue is None:
        raise ServiceUnavailableError("async predictions need Redis (REDIS_URL)")
    return queue


def task_not_found(task_id: str) -> NotFoundError:
    # One answer for an unknown, expired or another key's task.
    return NotFoundError(f"task {task_id[:64]!r} not found", task_id=task_id[:64])


def _request_digest(body: AsyncPredictRequest) -> str:
    return hashlib.sha256(orjson.dumps(body.model_dump(mode="json"))).hexdigest()[:32]


async def submit(
    components: Components,
    key: Principal,
    body: AsyncPredictRequest,
    idempotency_key: str | None,
) -> AsyncSubmitResponse:
    queue = queue_of(components)
    handle = await visible_model(components, key, str(body.model_id))
    input_tensors(handle, body.data, max_rows=MAX_ROWS)  # 400 now, not a failed task later
    if body.callback_url is not None:
        await check_callback_url(body.callback_url, components.get(Settings).callback_allow_list)
    request = {
        "data": body.data,
        "return_probabilities": body.return_probabilities,
        "batch_size": body.batch_size,
        "timeout_ms": body.timeout_ms,
    }
    fields = {
        "model_ref": str(body.model_id),
        "model_id": str(handle.model_id),
        "project_id": "" if key.project_id is None else str(key.project_id),
        "request": orjson.dumps(request).decode(),
        "callback_url": body.callback_url or "",
    }
    if body.callback_url is not None:
        fields["callback"] = orjson.dumps({"status": "pending", "attempts": []}).decode()
    digest = _request_digest(body)
    submitted = await queue.submit(
        fields,
        key_id=key.key_id,
        priority=body.priority,
        idempotency_key=idempotency_key,
        request_digest=digest,
    )
    if submitted.outcome == "existing":
        if submitted.request_digest != digest:
            raise ValidationError(
                "this Idempotency-Key was used for a different request",
                task_id=submitted.task_id,
            )
        task = await queue.get(submitted.task_id)
        if task is None:  # finished and expired since: the key's record outlived it
            raise task_not_found(submitted.task_id)
        position = await queue.position(task)
        return await _submit_answer(components, task, position)
    if submitted.outcome == "key_full":
        raise RateLimitExceededError(
            f"this API key already has {queue.max_per_key} async tasks queued or running",
            retry_after(_FULL_RETRY_S),
            limit=queue.max_per_key,
        )
    if submitted.outcome == "full":
        raise ServiceUnavailableError(
            "the async queue is full", retry_after_s=_FULL_RETRY_S, limit=queue.max_queued
        )
    task = {**fields, "task_id": submitted.task_id, "status": "queued", "priority": body.priority}
    return await _submit_answer(components, task, submitted.ahead + 1)


async def _submit_answer(
    components: Components, task: Mapping[str, str], position: int | None
) -> AsyncSubmitResponse:
    estimate = None
    if task["status"] == "queued" and position is not None:
        estimate = await _estimated_completion(components, int(task["model_id"]), position)
    priority: Priority = task["priority"]  # type: ignore[assignment]
    return AsyncSubmitResponse(
        task_id=task["task_id"],
        status=task["status"],  # type: ignore[arg-type]
        queue_position=position or 0,
        estimated_completion=estimate,
        priority=priority,
    )


async def _estimated_completion(components: Components, model_id: int, position: int) -> str | None:
    """From the queue's completion rate (every replica, as this replica read it at most
    a second ago); on an idle queue, from the model's measured inference time; else
    unknown."""
    rate = await queue_of(components).recent_completion_rate()
    if rate > 0:
        seconds = position / rate
    else:
        average = components.get(InferenceStats).model(model_id).average_inference_time_s
        if average is None:
            return None
        seconds = position * average
    finish = datetime.now(UTC) + timedelta(seconds=seconds)
    return finish.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def may_see(key: Principal, task: Mapping[str, str]) -> bool:
    """The key that submitted it, or an admin key of its project (or of none)."""
    if str(key.key_id) == task.get("key_id"):
        return True
    if "admin" not in key.scopes:
        return False
    return key.project_id is None or str(key.project_id) == task.get("project_id")


async def visible_task(components: Components, key: Principal, task_id: str) -> dict[str, str]:
    task = await queue_of(components).get(task_id)
    if task is None or not may_see(key, task):
        raise task_not_found(task_id)
    return task


async def awaited_task(
    components: Components, key: Principal, task_id: str, wait_ms: int
) -> dict[str, str]:
    """The task once it is finished, or as it is when `wait_ms` has passed (at once for
    0). Woken by the replica's completion subscription (`waiting.py`); without one
    (no worker runtime here), the task is read again every few milliseconds."""
    if wait_ms <= 0:
        return await visible_task(components, key, task_id)
    waiters = components.find(TaskWaiters)
    deadline = time.monotonic() + wait_ms / 1000
    with contextlib.ExitStack() as stack:
        woken = (
            asyncio.Event() if waiters is None else stack.enter_context(waiters.watching(task_id))
        )
        task = await visible_task(components, key, task_id)
        while task["status"] not in FINISHED:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            recheck = UNSUBSCRIBED_RECHECK_S if waiters is None else waiters.recheck_s
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, recheck)):
                    await woken.wait()
            woken.clear()
            task = await visible_task(components, key, task_id)
    return task


def task_view(task: Mapping[str, str]) -> TaskView:
    def parsed(field: str) -> Any:
        value = task.get(field)
        return orjson.loads(value) if value else None

    return TaskView(
        task_id=task["task_id"],
        status=task["status"],  # type: ignore[arg-type]
        model_id=task["model_ref"],
        resolved_model_id=int(task["model_id"]),
        priority=task["priority"],  # type: ignore[arg-type]
        created_at=task["created_at"],
        started_at=task.get("started_at"),
        completed_at=task.get("completed_at"),
        attempts=int(task.get("attempts", 0)),
        result=parsed("result"),
        error=parsed("error"),
        callback=parsed("callback"),
    )


async def cancel(components: Components, key: Principal, task_id: str) -> TaskView:
    queue = queue_of(components)
    task = await visible_task(components, key, task_id)
    outcome = await queue.cancel(task)
    if outcome is None:
        raise task_not_found(task_id)
    if outcome != "cancelled":
        raise ConflictError(
            f"task {task_id} is {outcome}: only a queued task can be cancelled",
            task_id=task_id,
            status=outcome,
        )
    return task_view(await visible_task(components, key, task_id))


async def run_task(components: Components, task: Mapping[str, str]) -> dict[str, Any]:
    """The prediction a task asks for, through the model core at its priority."""
    request = orjson.loads(task["request"])
    catalog = components.get(ModelCatalog)
    sessionmaker = components.get(async_sessionmaker)
    handle = await catalog.get(sessionmaker, int(task["model_id"]))
    timeout_s = request["timeout_ms"] / 1000
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            prediction = await predict(
                components.get(TritonGateway),
                handle,
                request["data"],
                priority=task["priority"],
                # The request's own deadline on the first try, as the synchronous door
                # sends it: the coalescer merges only rows of equal deadlines.
                timeout_s=timeout_s,
                stats=components.get(InferenceStats),
                return_probabilities=request["return_probabilities"],
                batch_size=request["batch_size"],
            )
            break
        except (ServiceUnavailableError, TritonUnavailableError) as exc:
            # The model is loading (or Triton restarting): wait as a client would.
            wait = float((exc.headers or {}).get("Retry-After", 1))
            if time.monotonic() + wait >= deadline:
                raise
            await asyncio.sleep(min(wait, 1.0))
            timeout_s = max(deadline - time.monotonic(), 0.001)
    return {
        **prediction.payload,
        "resolved_model_id": handle.model_id,
        "inference_time": prediction.seconds,
    }
