"""Waiting polls woken by real workers: the model core runs the task, on the replica
that serves the poll or on another app sharing its Redis queue.

Each replica's queue has no worker of its own (`replica_without_workers`); the test
starts a real one (the model core on the session's Triton, as `runtime.start_jobs`
runs it) only once the poll waits, so the poll is always under way before the task
finishes. The subscribed waiters' safety re-read is pushed beyond every wait and the
guard ends before the poll's own deadline: a poll that answers `completed` in time was
woken by the FINISH message. The bounds (422, 404, the state at the deadline) are in
test_waiting_poll.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from control_plane.core.components import Components
from control_plane.core.settings import Settings
from control_plane.jobs import service, waiting
from control_plane.jobs.queue import TaskQueue
from control_plane.jobs.waiting import TaskWaiters
from control_plane.jobs.worker import TaskWorker
from tests.control_plane.conftest import make_key
from tests.control_plane.engine_api.tabular_model import ROW
from tests.control_plane.jobs.queue_helpers import fresh_queue
from tests.control_plane.jobs.replica_helpers import queue_of, replica_without_workers
from tests.control_plane.waiting import until

ASYNC = "/api/inference/predict/async"
WAIT_MS = 30_000
# Shorter than the poll's wait: a poll answered only at its deadline fails the test.
GUARD_S = WAIT_MS / 1000 - 5


@pytest.fixture(autouse=True)
def _no_safety_reread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waiting, "SUBSCRIBED_RECHECK_S", 3600.0)


@pytest.fixture
async def replica_a(settings: Settings) -> AsyncIterator[FastAPI]:
    async with replica_without_workers(settings) as replica:
        waiters: TaskWaiters = replica.state.components.get(TaskWaiters)

        async def subscribed() -> bool:
            return waiters.subscribed

        await until(subscribed, "replica A's waiters did not subscribe")
        yield replica


def _client(replica: FastAPI, name: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=replica), base_url=f"http://{name}")


def _model_core_worker(components: Components, queue: TaskQueue) -> TaskWorker:
    """The worker `start_jobs` runs: the task's prediction through `components`."""

    async def run(task: Mapping[str, str]) -> dict[str, Any]:
        return await service.run_task(components, task)

    return TaskWorker(queue, run, concurrency=4, claim_after_s=30.0, starvation_every=10)


async def _submit_and_wait(
    client: httpx.AsyncClient, waiters: TaskWaiters, key: str, model_id: int
) -> tuple[str, asyncio.Task[httpx.Response]]:
    """A task submitted, and its waiting poll once the replica holds it."""
    headers = {"X-API-Key": key}
    submitted = await client.post(ASYNC, json={"data": ROW, "model_id": model_id}, headers=headers)
    assert submitted.status_code == 202, submitted.text
    task_id: str = submitted.json()["task_id"]
    poll = asyncio.create_task(
        client.get(
            f"{ASYNC}/{task_id}", params={"wait_ms": WAIT_MS}, headers=headers, timeout=WAIT_MS
        )
    )

    async def waiting_now() -> bool:
        return waiters.waiting(task_id) == 1

    await until(waiting_now, "the poll did not wait")
    return task_id, poll


async def _answered(poll: asyncio.Task[httpx.Response], worker: TaskWorker) -> dict[str, Any]:
    worker.start()
    try:
        async with asyncio.timeout(GUARD_S):
            answer = await poll
    finally:
        await worker.stop()
    assert answer.status_code == 200, answer.text
    task: dict[str, Any] = answer.json()
    return task


async def _sync_predictions(client: httpx.AsyncClient, key: str, model_id: int) -> Any:
    answer = await client.post(
        "/api/inference/predict",
        json={"data": ROW, "model_id": model_id},
        headers={"X-API-Key": key},
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["predictions"]


async def test_a_waiting_poll_answers_the_result_its_replicas_worker_computed(
    app: FastAPI, replica_a: FastAPI, regressor_id: int
) -> None:
    key = await make_key(app, ["predict"])
    components = replica_a.state.components
    async with _client(replica_a, "replica-a") as client:
        task_id, poll = await _submit_and_wait(
            client, components.get(TaskWaiters), key, regressor_id
        )
        assert not poll.done()  # no worker yet: the poll waits
        task = await _answered(poll, _model_core_worker(components, queue_of(replica_a)))
        expected = await _sync_predictions(client, key, regressor_id)
    assert task["task_id"] == task_id and task["status"] == "completed", task
    assert task["result"]["predictions"] == expected
    assert task["result"]["resolved_model_id"] == regressor_id
    assert components.get(TaskWaiters).waiting(task_id) == 0


async def test_a_waiting_poll_wakes_when_another_app_runs_the_task(
    app: FastAPI, settings: Settings, replica_a: FastAPI, regressor_id: int
) -> None:
    """Replica B: an app of its own on the same Redis queue (its own connections), whose
    worker runs the task through B's model core; A only serves the poll."""
    key = await make_key(app, ["predict"])
    namespace = queue_of(replica_a).keys.namespace
    async with (
        replica_without_workers(settings, namespace=namespace) as replica_b,
        _client(replica_a, "replica-a") as client_a,
    ):
        worker_redis = Redis.from_url(settings.redis_url or "")
        try:
            task_id, poll = await _submit_and_wait(
                client_a, replica_a.state.components.get(TaskWaiters), key, regressor_id
            )
            worker = _model_core_worker(
                replica_b.state.components, fresh_queue(worker_redis, namespace=namespace)
            )
            task = await _answered(poll, worker)
            stored = await queue_of(replica_a).get(task_id)
        finally:
            await worker_redis.aclose()
        assert task["status"] == "completed", task
        assert task["result"]["predictions"] == await _sync_predictions(client_a, key, regressor_id)
    assert stored is not None and stored["consumer"] == worker.consumer  # B's worker ran it
