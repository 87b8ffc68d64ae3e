"""`GET .../async/{task_id}?wait_ms=N`: answered when the task finishes on any replica,
or with its state at the deadline; woken through one subscription per replica.

Replica A serves the polls (no worker); the worker that finishes the task stands for
replica B: its own Redis client on A's queue. The subscribed waiters' safety re-read
is pushed beyond every wait here, so a poll that answers `completed` (or `cancelled`)
before its deadline was woken by B's FINISH (or CANCEL) message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from control_plane.core.settings import Settings
from control_plane.jobs import waiting
from control_plane.jobs.queue import TaskQueue
from control_plane.jobs.waiting import TaskWaiters
from tests.control_plane.conftest import make_key
from tests.control_plane.engine_api.tabular_model import ROW
from tests.control_plane.jobs.queue_helpers import Recorder, fresh_queue, worker_on
from tests.control_plane.jobs.replica_helpers import queue_of, replica_without_workers
from tests.control_plane.waiting import until

ASYNC = "/api/inference/predict/async"
LONG_WAIT_MS = 30_000


@dataclass
class Replica:
    client: httpx.AsyncClient
    waiters: TaskWaiters
    queue: TaskQueue


@pytest.fixture
async def replica_a(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Replica]:
    monkeypatch.setattr(waiting, "SUBSCRIBED_RECHECK_S", 3600.0)
    async with replica_without_workers(settings) as replica:
        waiters = replica.state.components.get(TaskWaiters)

        async def subscribed() -> bool:
            return waiters.subscribed

        await until(subscribed, "replica A's waiters did not subscribe")
        transport = httpx.ASGITransport(app=replica)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica-a") as client:
            yield Replica(client, waiters, queue_of(replica))


@pytest.fixture
async def replica_b_queue(settings: Settings, replica_a: Replica) -> AsyncIterator[TaskQueue]:
    """Replica A's queue through a Redis connection of its own."""
    redis = Redis.from_url(settings.redis_url or "")
    yield fresh_queue(redis, namespace=replica_a.queue.keys.namespace)
    await redis.aclose()


async def _submit(client: httpx.AsyncClient, key: str, model_id: int) -> str:
    submitted = await client.post(
        ASYNC, json={"data": ROW, "model_id": model_id}, headers={"X-API-Key": key}
    )
    assert submitted.status_code == 202, submitted.text
    task_id: str = submitted.json()["task_id"]
    return task_id


async def _waiting_poll(replica: Replica, task_id: str, key: str) -> asyncio.Task[httpx.Response]:
    """A poll that waits, once it is waiting on the replica."""
    poll = asyncio.create_task(
        replica.client.get(
            f"{ASYNC}/{task_id}",
            params={"wait_ms": LONG_WAIT_MS},
            headers={"X-API-Key": key},
            timeout=LONG_WAIT_MS / 1000 + 30,
        )
    )

    async def registered() -> bool:
        return replica.waiters.waiting(task_id) == 1

    await until(registered, "the poll did not wait")
    return poll


async def test_a_waiting_poll_answers_when_another_replica_finishes_the_task(
    app: FastAPI, replica_a: Replica, replica_b_queue: TaskQueue, regressor_id: int
) -> None:
    key = await make_key(app, ["predict"])
    task_id = await _submit(replica_a.client, key, regressor_id)
    poll = await _waiting_poll(replica_a, task_id, key)
    job = Recorder()
    worker = worker_on(replica_b_queue, job)
    worker.start()
    try:
        answer = await poll
    finally:
        await worker.stop()
    assert answer.status_code == 200, answer.text
    task: dict[str, Any] = answer.json()
    assert task["status"] == "completed" and task["result"] == {"predictions": [task_id]}
    assert job.ran == [task_id] and replica_a.waiters.waiting(task_id) == 0


async def test_a_waiting_poll_wakes_on_a_cancel_from_another_replica(
    app: FastAPI, replica_a: Replica, replica_b_queue: TaskQueue, regressor_id: int
) -> None:
    key = await make_key(app, ["predict"])
    task_id = await _submit(replica_a.client, key, regressor_id)
    poll = await _waiting_poll(replica_a, task_id, key)
    task = await replica_b_queue.get(task_id)
    assert task is not None and await replica_b_queue.cancel(task) == "cancelled"
    assert (await poll).json()["status"] == "cancelled"


async def test_at_its_deadline_a_poll_answers_the_state_the_task_is_in(
    app: FastAPI, replica_a: Replica, regressor_id: int
) -> None:
    key = await make_key(app, ["predict"])
    task_id = await _submit(replica_a.client, key, regressor_id)
    headers = {"X-API-Key": key}
    answer = await replica_a.client.get(f"{ASYNC}/{task_id}?wait_ms=100", headers=headers)
    assert answer.status_code == 200 and answer.json()["status"] == "queued"  # no worker here
    unknown = await replica_a.client.get(f"{ASYNC}/task_{'0' * 24}?wait_ms=100", headers=headers)
    assert unknown.status_code == 404  # at once, not after the wait


@pytest.mark.parametrize("wait_ms", ["-1", "30001", "abc", "1.5", ""])
async def test_a_wait_outside_its_bounds_is_a_422(
    client: httpx.AsyncClient, predict_key: str, wait_ms: str
) -> None:
    answer = await client.get(
        f"{ASYNC}/task_{'0' * 24}?wait_ms={wait_ms}", headers={"X-API-Key": predict_key}
    )
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert set(body) >= {"error", "message", "details", "timestamp", "request_id"}
    assert body["error"] == "ValidationError"
    assert [e["loc"] for e in body["details"]["errors"]] == [["query", "wait_ms"]]


async def test_without_a_subscription_a_waiting_poll_reads_the_task_again(
    app: FastAPI, settings: Settings, regressor_id: int
) -> None:
    """Redis Pub/Sub away (here: never subscribed): the waiters fall back to re-reading."""
    key = await make_key(app, ["predict"])
    async with replica_without_workers(settings) as replica:
        components = replica.state.components
        components.add(TaskWaiters, TaskWaiters(components.get(Redis), "never-subscribed"))
        transport = httpx.ASGITransport(app=replica)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
            task_id = await _submit(client, key, regressor_id)
            worker = worker_on(queue_of(replica), Recorder())
            worker.start()
            try:
                answer = await client.get(
                    f"{ASYNC}/{task_id}?wait_ms={LONG_WAIT_MS}", headers={"X-API-Key": key}
                )
            finally:
                await worker.stop()
    assert answer.json()["status"] == "completed"
