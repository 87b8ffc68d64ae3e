"""Listing tasks and reading the queues, through the Python client: who sees which
task, the filters, the bounds, and the queues' figures while a worker holds a task."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from conch.client import AsyncClient, ConchError
from control_plane.core.settings import Settings
from tests.control_plane.conftest import make_key, make_project
from tests.control_plane.jobs.queue_helpers import Recorder, worker_on
from tests.control_plane.jobs.replica_helpers import queue_of, replica_without_workers
from tests.control_plane.recommender_model import write_recommender
from tests.control_plane.waiting import until

ERROR_FIELDS = {"error", "message", "details", "timestamp", "request_id"}


@pytest.fixture(scope="module")
async def idle(settings: Settings) -> AsyncIterator[FastAPI]:
    async with replica_without_workers(settings) as replica:
        yield replica


def _conch(app: FastAPI, key: str) -> AsyncClient:
    return AsyncClient("http://conch", key, transport=httpx.ASGITransport(app=app))


async def _submit(app: FastAPI, key: str, model_id: int, **options: Any) -> str:
    async with _conch(app, key) as conch:
        answer = await conch.submit_async([[1.0]], model_id, **options)
    assert answer["status"] == "queued", answer
    task_id: str = answer["task_id"]
    return task_id


async def _listed(app: FastAPI, key: str, **filters: Any) -> list[str]:
    async with _conch(app, key) as conch:
        answer = await conch.list_tasks(**filters)
    assert answer["total"] == len(answer["tasks"])
    return [task["task_id"] for task in answer["tasks"]]


async def test_a_key_lists_its_own_tasks_and_an_admin_its_projects(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin_key: str,
    idle: FastAPI,
    model_repository: Path,
) -> None:
    project = await make_project(client, admin_key, [])
    other_project = await make_project(client, admin_key, [])
    triton_name = f"cptest_tasklist_{uuid.uuid4().hex[:6]}"
    write_recommender(model_repository, triton_name, seed=61)
    registered = await client.post(
        "/api/v1/models",
        json={"triton_name": triton_name, "project_id": project.id},
        headers={"X-API-Key": admin_key},
    )
    assert registered.status_code == 201, registered.text
    model_id = registered.json()["id"]
    in_project = await make_key(app, ["predict"], project_id=project.id)
    unrestricted = await make_key(app, ["predict"])
    ours = await _submit(idle, in_project, model_id, priority="high")
    theirs = await _submit(idle, unrestricted, model_id)

    assert await _listed(idle, in_project) == [ours]
    assert await _listed(idle, unrestricted) == [theirs]
    assert await _listed(idle, await make_key(app, ["predict"])) == []
    assert await _listed(idle, admin_key) == [theirs, ours]  # newest first
    assert await _listed(idle, await make_key(app, ["admin"], project_id=project.id)) == [ours]
    assert await _listed(idle, await make_key(app, ["admin"], project_id=other_project.id)) == []

    assert await _listed(idle, admin_key, limit=1) == [theirs]
    assert await _listed(idle, admin_key, status="cancelled") == []
    async with _conch(idle, in_project) as conch:
        cancelled = await conch.cancel_task(ours)
        assert cancelled["status"] == "cancelled"
        assert (await conch.get_task(ours))["status"] == "cancelled"
    assert await _listed(idle, admin_key, status="cancelled") == [ours]
    assert await _listed(idle, admin_key, status="queued") == [theirs]


async def test_listing_refuses_bad_filters_with_the_error_body(app: FastAPI, idle: FastAPI) -> None:
    key = await make_key(app, ["predict"])
    for params in ({"limit": 0}, {"limit": 501}, {"status": "done"}, {"limit": "many"}):
        async with _conch(idle, key) as conch:
            with pytest.raises(ConchError) as refused:
                await conch.request("GET", "/api/inference/predict/async", params=params)
        assert refused.value.status == 422, params
    async with _conch(idle, await make_key(app, ["read"])) as conch:
        with pytest.raises(ConchError) as refused:
            await conch.list_tasks()
    assert refused.value.status == 403  # a read key submits nothing, so it lists nothing


async def test_the_queues_show_waiting_running_and_the_worker_holding_a_task(
    app: FastAPI, idle: FastAPI, model_ids: dict[str, int]
) -> None:
    key = await make_key(app, ["predict"])
    reader = await make_key(app, ["read"])
    queue = queue_of(idle)
    async with _conch(idle, reader) as conch:
        empty = await conch.task_queues()
    waiting_before = empty["depths"]
    urgent = [await _submit(idle, key, model_ids["a"], priority="urgent") for _ in range(3)]
    low = await _submit(idle, key, model_ids["a"], priority="low")
    holding = Recorder()
    holding.gate.clear()  # the model call never returns while the test looks
    worker = worker_on(queue, holding, concurrency=1)
    worker.start()
    started: list[str] = []

    async def one_running() -> bool:
        nonlocal started
        statuses = {t: (await queue.get(t) or {}).get("status") for t in [*urgent, low]}
        started = [t for t, status in statuses.items() if status == "running"]
        return len(started) == 1

    try:
        await until(one_running, "the worker did not start a task")
        async with _conch(idle, reader) as conch:
            queues = await conch.task_queues()
    finally:
        holding.gate.set()
        await worker.stop()
    assert started[0] in urgent  # the highest level first
    assert queues["depths"] == {
        **waiting_before,
        "urgent": waiting_before["urgent"] + 2,
        "low": waiting_before["low"] + 1,
    }
    assert queues["running"] == 1
    workers = {w["name"]: w for w in queues["workers"]}
    assert workers[worker.consumer]["pending"] == 1
    assert workers[worker.consumer]["idle_ms"] >= 0
    assert queues["completion_rate_per_s"] >= 0


async def test_the_queues_need_a_read_key_of_no_project(
    app: FastAPI, client: httpx.AsyncClient, admin_key: str, idle: FastAPI
) -> None:
    project = await make_project(client, admin_key, [])
    for key, status in (
        (await make_key(app, ["predict"]), 403),
        (await make_key(app, ["read"], project_id=project.id), 403),
    ):
        async with _conch(idle, key) as conch:
            with pytest.raises(ConchError) as refused:
                await conch.task_queues()
        assert refused.value.status == status
        transport = httpx.ASGITransport(app=idle)
        async with httpx.AsyncClient(transport=transport, base_url="http://conch") as http:
            response = await http.get(
                "/api/inference/predict/async/queues", headers={"X-API-Key": key}
            )
        assert set(response.json()) == ERROR_FIELDS
