"""A replica whose queue no worker serves, and an app served by uvicorn in this loop.

The replica is a real app on the session's SQL, Redis and Triton; only its task
queue lives under a namespace of its own, with no worker on it, so that what is
submitted to it stays queued until the test takes it (`queue_helpers.worker_on`)
or cancels it. uvicorn serves an in-process app for the command line, whose sync
client needs a port.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from redis.asyncio import Redis

from control_plane.app import create_app
from control_plane.core.settings import Settings
from control_plane.jobs.queue import TaskQueue
from control_plane.jobs.waiting import TaskWaiters
from tests.control_plane.jobs.queue_helpers import fresh_queue


@asynccontextmanager
async def replica_without_workers(
    settings: Settings, *, namespace: str | None = None, **bounds: int
) -> AsyncIterator[FastAPI]:
    """`namespace`: another such replica's (`queue_of(app).keys.namespace`), to share
    its queue; else a fresh one. `bounds`: `fresh_queue`'s."""
    replica = create_app(settings.model_copy(update={"task_workers": 0}), migrate=False)
    async with replica.router.lifespan_context(replica):
        components = replica.state.components
        redis = components.get(Redis)
        queue = fresh_queue(redis, namespace=namespace, **bounds)
        components.add(TaskQueue, queue)
        # Waiting polls wake on this queue's completions, not the deployment's.
        listen = Redis.from_url(settings.redis_url or "")
        waiters = TaskWaiters(listen, queue.keys.finished())
        components.add(TaskWaiters, waiters)
        waiters.start()
        try:
            yield replica
        finally:
            await waiters.stop()
            await listen.aclose()
            # Queued tasks never expire: the namespace goes with the test.
            async for name in redis.scan_iter(match=f"{queue.keys.prefix}*"):
                await redis.delete(name)


def queue_of(app: FastAPI) -> TaskQueue:
    queue: TaskQueue = app.state.components.get(TaskQueue)
    return queue
