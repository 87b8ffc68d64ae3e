"""A queue on the test Redis under a namespace of its own, and workers with a stub job.

The stub stands for the prediction (the app's worker runs the model core); the
queue, its scripts and the worker's taking, renewing and takeover are the real ones.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from redis.asyncio import Redis

from control_plane.jobs.queue import TaskQueue
from control_plane.jobs.worker import TaskWorker


def fresh_queue(redis: Redis, *, namespace: str | None = None, **bounds: int) -> TaskQueue:
    return TaskQueue(
        redis,
        namespace or f"test-{uuid.uuid4().hex[:8]}",
        max_per_key=bounds.get("max_per_key", 1000),
        max_queued=bounds.get("max_queued", 10_000),
        result_ttl_s=bounds.get("result_ttl_s", 600),
    )


def worker_on(
    queue: TaskQueue,
    job: Callable[[Mapping[str, str]], Awaitable[dict[str, Any]]],
    *,
    concurrency: int = 1,
    claim_after_s: float = 30.0,
    starvation_every: int = 10,
) -> TaskWorker:
    return TaskWorker(
        queue,
        job,
        concurrency=concurrency,
        claim_after_s=claim_after_s,
        starvation_every=starvation_every,
    )


async def submit(queue: TaskQueue, priority: str = "normal", key_id: int = 1, **fields: str) -> str:
    submitted = await queue.submit(
        {"model_ref": "m", "model_id": "1", "request": "{}", **fields},
        key_id=key_id,
        priority=priority,  # type: ignore[arg-type]
    )
    assert submitted.outcome == "queued", submitted
    return submitted.task_id


class Recorder:
    """A job that records the order tasks ran in; `gate` holds them until set."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, task: Mapping[str, str]) -> dict[str, Any]:
        await self.gate.wait()
        self.ran.append(task["task_id"])
        return {"predictions": [task["task_id"]]}
