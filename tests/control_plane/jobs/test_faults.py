"""Async tasks through the real stack when things break: a replica SIGKILLed mid-task,
Redis restarted under a full queue, one key flooding, a callback receiver failing.

Every replica here belongs to a deployment of this module's own (`fault_stack.py`),
so the session app's worker never takes these tasks. The model sleeps a row's first
feature in seconds: [[0.0, x]] answers x at once, [[RUN_S, x]] runs RUN_S seconds.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from conch_embedded.redis_server import EmbeddedRedis
from conch_embedded.triton_server import EmbeddedTriton
from control_plane.core.settings import Settings
from control_plane.jobs.queue import TaskQueue
from tests.control_plane.conftest import make_key
from tests.control_plane.jobs.callback_helpers import Receiver
from tests.control_plane.jobs.fault_stack import (
    ASYNC,
    FINISHED,
    MAX_PER_KEY,
    InProcess,
    completions,
    deployment_settings,
    process_replica,
    replica,
    until_called_back,
    until_status,
)
from tests.control_plane.triton.slow_model import write_slow_model
from tests.control_plane.waiting import until

# Long enough to see the task running on replica A and kill A before it finishes.
RUN_S = 3.0
ERROR_FIELDS = {"error", "message", "details", "timestamp", "request_id"}


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory,
    redis_url: str,
    triton: EmbeddedTriton,
    model_repository: Path,
) -> Settings:
    return deployment_settings(
        tmp_path_factory.mktemp("faults"), redis_url, triton, model_repository
    )


@pytest.fixture(scope="module")
async def front(deployment: Settings) -> AsyncIterator[InProcess]:
    """A replica that accepts and answers but runs no task (task_workers=0)."""
    async with replica(deployment) as running:
        yield running


@pytest.fixture(scope="module")
async def model_id(front: InProcess, model_repository: Path) -> int:
    triton_name = f"faults_slow_{uuid.uuid4().hex[:8]}"
    write_slow_model(model_repository, triton_name)
    admin = {"X-API-Key": await make_key(front.app, ["admin"])}
    registered = await front.client.post(
        "/api/v1/models", json={"triton_name": triton_name}, headers=admin
    )
    assert registered.status_code == 201, registered.text
    registered_id: int = registered.json()["id"]

    async def served() -> bool:
        response = await front.client.post(
            "/api/inference/predict",
            json={"data": [[0.0, 1.0]], "model_id": registered_id},
            headers=admin,
        )
        assert response.status_code in (200, 503), response.text  # 503: still loading
        return response.status_code == 200

    await until(served, "the slow model was not served")
    return registered_id


async def test_a_task_whose_replica_is_killed_completes_on_another_once(
    deployment: Settings, front: InProcess, model_id: int, tmp_path: Path
) -> None:
    key = await make_key(front.app, ["predict"])
    queue = front.app.state.components.get(TaskQueue)
    done_before = await completions(queue.redis, deployment.deployment_id)
    async with Receiver(statuses=[200]) as receiver:
        body = {
            "data": [[RUN_S, 4.0]],
            "model_id": model_id,
            "callback_url": f"http://127.0.0.1:{receiver.port}/hooks",
        }
        async with process_replica(deployment, tmp_path, task_workers=1) as replica_a:
            submitted = await front.client.post(ASYNC, json=body, headers={"X-API-Key": key})
            assert submitted.status_code == 202, submitted.text
            task_id = submitted.json()["task_id"]
            task = await until_status(front.client, task_id, key, {"running", *FINISHED})
            assert task["status"] == "running" and task["attempts"] == 1, task
            stored = await queue.get(task_id)
            assert stored is not None and f"-{replica_a.pid}-" in stored["consumer"]
            await replica_a.kill()
        # Replica B starts only now: it cannot have taken the task before A died.
        async with replica(deployment, task_workers=1) as replica_b:
            task = await until_called_back(replica_b.client, task_id, key)
            stored = await queue.get(task_id)
    assert task["status"] == "completed", task
    assert task["attempts"] == 2
    assert task["result"]["predictions"] == [RUN_S + 4.0]
    assert stored is not None and f"-{replica_a.pid}-" not in stored["consumer"]
    assert len(receiver.received) == 1
    assert await completions(queue.redis, deployment.deployment_id) == done_before + 1


async def test_tasks_queued_across_a_redis_restart_all_complete(
    deployment: Settings, model_id: int, tmp_path: Path
) -> None:
    count = 12
    with EmbeddedRedis(data_dir=tmp_path / "redis") as redis_server:
        on_it = deployment.model_copy(
            update={"redis_url": redis_server.url, "model_events_redis_url": redis_server.url}
        )
        async with replica(on_it) as submitter:
            key = await make_key(submitter.app, ["predict"])
            task_ids = []
            for value in range(count):
                body = {"data": [[0.0, float(value)]], "model_id": model_id}
                response = await submitter.client.post(ASYNC, json=body, headers={"X-API-Key": key})
                assert response.status_code == 202, response.text
                task_ids.append(response.json()["task_id"])
            redis_server.stop()  # a clean stop: SIGTERM, the append-only file flushed
            redis_server.start()  # the same port and data directory
            # Polled through this replica: the submitter's pooled connections died with
            # the server, and a request on a dead one fails once.
            async with replica(on_it, task_workers=4) as worker:
                tasks = [
                    await until_status(worker.client, task_id, key, FINISHED)
                    for task_id in task_ids
                ]
        redis = Redis.from_url(redis_server.url)
        try:
            done = await completions(redis, deployment.deployment_id)
        finally:
            await redis.aclose()
    assert [task["status"] for task in tasks] == ["completed"] * count
    assert [task["attempts"] for task in tasks] == [1] * count
    assert [task["result"]["predictions"] for task in tasks] == [[float(v)] for v in range(count)]
    assert done == count


async def test_a_flooding_key_is_bounded_while_another_keys_tasks_flow(
    deployment: Settings, front: InProcess, model_id: int
) -> None:
    flooder = {"X-API-Key": await make_key(front.app, ["predict"])}
    other_key = await make_key(front.app, ["predict"])
    body = {"data": [[0.0, 1.0]], "model_id": model_id}

    async def submit(headers: dict[str, str]) -> httpx.Response:
        return await front.client.post(ASYNC, json=body, headers=headers)

    # Nothing runs on `front`: the flood holds its whole share of the queue.
    flood = await asyncio.gather(*(submit(flooder) for _ in range(MAX_PER_KEY + 10)))
    accepted = [r for r in flood if r.status_code == 202]
    refused = [r for r in flood if r.status_code != 202]
    assert len(accepted) == MAX_PER_KEY
    assert {r.status_code for r in refused} == {429}
    for response in refused:
        assert int(response.headers["Retry-After"]) >= 1
        assert set(response.json()) == ERROR_FIELDS
        assert response.json()["details"]["limit"] == MAX_PER_KEY
    others = await asyncio.gather(*(submit({"X-API-Key": other_key}) for _ in range(5)))
    assert [r.status_code for r in others] == [202] * 5, [r.text for r in others]
    # Queued behind the flood's bounded share, never behind what it was refused.
    assert max(r.json()["queue_position"] for r in others) <= MAX_PER_KEY + 5
    async with replica(deployment, task_workers=2):
        finished = [
            await until_status(front.client, r.json()["task_id"], other_key, FINISHED)
            for r in others
        ]
        assert [task["status"] for task in finished] == ["completed"] * 5
        for response in accepted:
            await until_status(
                front.client, response.json()["task_id"], flooder["X-API-Key"], FINISHED
            )
    # Its tasks done, the flooding key may submit again.
    assert (await submit(flooder)).status_code == 202


async def test_a_callback_failing_three_times_is_delivered_once_with_every_attempt(
    deployment: Settings, front: InProcess, model_id: int
) -> None:
    key = await make_key(front.app, ["predict"])
    async with (
        Receiver(statuses=[500, 500, 500, 200]) as receiver,
        replica(deployment, task_workers=1) as worker,
    ):
        body = {
            "data": [[0.0, 2.0]],
            "model_id": model_id,
            "callback_url": f"http://127.0.0.1:{receiver.port}/hooks",
        }
        submitted = await worker.client.post(ASYNC, json=body, headers={"X-API-Key": key})
        assert submitted.status_code == 202, submitted.text
        task = await until_called_back(front.client, submitted.json()["task_id"], key)
    callback = task["callback"]
    assert callback["status"] == "delivered" and callback["delivered_at"]
    assert [a["status_code"] for a in callback["attempts"]] == [500, 500, 500, 200]
    assert [a["number"] for a in callback["attempts"]] == [1, 2, 3, 4]
    numbers = [r.headers["x-conch-delivery-attempt"] for r in receiver.received]
    assert numbers == ["1", "2", "3", "4"]  # and no POST after the one it took
    assert len({r.body for r in receiver.received}) == 1  # the same result each time
