"""The async-task machinery of one replica, started and stopped by the app's lifespan."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from redis.asyncio import Redis

from control_plane.core.components import Components
from control_plane.core.redis_clients import listening_redis
from control_plane.core.settings import Settings
from control_plane.jobs import service, task_metrics
from control_plane.jobs.callbacks import Delivery, deliver
from control_plane.jobs.queue import TaskQueue
from control_plane.jobs.stream_flush import StreamFlusher
from control_plane.jobs.streams import StreamStore
from control_plane.jobs.waiting import TaskWaiters
from control_plane.jobs.worker import TaskWorker
from control_plane.keys.webhooks import webhook_secret


def _queue(redis: Redis, settings: Settings) -> TaskQueue:
    return TaskQueue(
        redis,
        settings.deployment_id,
        max_per_key=settings.task_max_per_key,
        max_queued=settings.task_max_queued,
        result_ttl_s=settings.task_result_ttl_s,
    )


@dataclass
class Jobs:
    worker: TaskWorker
    redis: Redis  # the worker's own connections: its reads block
    callbacks: httpx.AsyncClient
    flusher: StreamFlusher
    waiters: TaskWaiters

    async def stop(self) -> None:
        await self.flusher.stop()
        await self.worker.stop()
        await self.waiters.stop()
        await self.callbacks.aclose()
        await self.redis.aclose()


def _callback_sender(
    queue: TaskQueue, settings: Settings, client: httpx.AsyncClient
) -> Callable[[Mapping[str, str], str, dict[str, Any]], Coroutine[Any, Any, None]]:
    """POSTs a finished task to its callback_url, signed with its key's webhook secret,
    and shows every attempt on the task. (A replica that stops while retrying leaves
    the delivery "retrying": the result itself is on the task for polling.)"""
    server_secret = settings.secret_key.get_secret_value().encode()

    async def send(task: Mapping[str, str], _status: str, _value: dict[str, Any]) -> None:
        url = task.get("callback_url")
        finished = await queue.get(task["task_id"]) if url else None
        if not url or finished is None:
            return
        body = orjson.dumps(
            service.task_view(finished).model_dump(mode="json", exclude={"callback"})
        )

        counter = task_metrics.CallbackCounter()

        async def show(delivery: Delivery) -> None:
            counter.saw(delivery)
            await queue.record(task["task_id"], "callback", delivery.model_dump(mode="json"))

        delivery = await deliver(
            client,
            url,
            body,
            webhook_secret(server_secret, int(task["key_id"])),
            allowed=settings.callback_allow_list,
            retry_for_s=settings.callback_retry_for_s,
            timeout_s=settings.callback_timeout_s,
            on_attempt=show,
        )
        await show(delivery)

    return send


def start_jobs(components: Components, settings: Settings, redis: Redis | None) -> Jobs | None:
    """Adds the queue to `components` (the doors submit and poll through it) and
    starts this replica's worker. Without Redis there is neither: the async doors
    answer 503."""
    if redis is None or settings.redis_url is None:
        return None
    queue = _queue(redis, settings)
    components.add(TaskQueue, queue)
    # The worker's reads block on an empty queue by design.
    worker_redis = listening_redis(
        settings.redis_url,
        connect_timeout_s=settings.redis_connect_timeout_s,
        health_check_interval_s=settings.redis_health_check_interval_s,
    )
    # Polls that wait for a task, woken through one subscription (on the worker's pool).
    waiters = TaskWaiters(worker_redis, queue.keys.finished())
    components.add(TaskWaiters, waiters)
    waiters.start()

    async def run(task: Mapping[str, str]) -> dict[str, Any]:
        return await service.run_task(components, task)

    worker_queue = _queue(worker_redis, settings)
    # No proxies from the environment: a callback goes to the address just checked.
    callbacks = httpx.AsyncClient(trust_env=False)
    worker = TaskWorker(
        worker_queue,
        run,
        concurrency=settings.task_workers,
        claim_after_s=settings.task_claim_after_s,
        starvation_every=settings.task_starvation_every,
        after_finish=_callback_sender(worker_queue, settings, callbacks),
    )
    worker.start()
    # Streams: calls on the request connections; Pub/Sub waits on the worker's.
    streams = StreamStore(
        redis,
        settings.deployment_id,
        idle_ttl_s=settings.stream_idle_ttl_s,
        max_per_key=settings.stream_max_per_key,
        max_pending=settings.stream_max_pending_rows,
        max_results=settings.stream_max_results,
        claim_after_s=settings.stream_flush_claim_after_s,
        listen_redis=worker_redis,
    )
    components.add(StreamStore, streams)
    flusher = StreamFlusher(streams, components, poll_s=settings.stream_flush_poll_s)
    components.add(StreamFlusher, flusher)
    flusher.start()
    return Jobs(worker, worker_redis, callbacks, flusher, waiters)
