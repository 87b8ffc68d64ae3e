"""The async tasks on `/metrics`: each counter moves by exactly what a task did.

Counters are per process and earlier tests moved them too: each test compares
two scrapes around its own tasks. The queue depth is read from Redis when scraped,
and left out when Redis does not answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from conch_embedded.process import free_port
from control_plane.core.errors import ValidationError
from control_plane.core.settings import Settings
from control_plane.jobs import task_metrics
from control_plane.jobs.queue import LEVELS
from tests.control_plane.conftest import make_key
from tests.control_plane.jobs.callback_helpers import Receiver
from tests.control_plane.jobs.queue_helpers import Recorder, fresh_queue, submit, worker_on
from tests.control_plane.jobs.replica_helpers import replica_without_workers
from tests.control_plane.waiting import until

ASYNC = "/api/inference/predict/async"
COMPLETED = 'conch_tasks_finished_total{status="completed"}'
FAILED = 'conch_tasks_finished_total{status="failed"}'
LATENCY_SUM, LATENCY_COUNT = "conch_task_latency_seconds_sum", "conch_task_latency_seconds_count"
REDELIVERIES = "conch_task_redeliveries_total"
DELIVERED = 'conch_callback_deliveries_total{outcome="delivered"}'
UNDELIVERED = 'conch_callback_deliveries_total{outcome="failed"}'
ATTEMPTS_FAILED = "conch_callback_attempts_failed_total"
ALL = (COMPLETED, FAILED, LATENCY_COUNT, REDELIVERIES, DELIVERED, UNDELIVERED, ATTEMPTS_FAILED)


def _samples(exposition: str) -> dict[str, float]:
    samples = {}
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


async def _scrape(client: httpx.AsyncClient) -> dict[str, float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return _samples(response.text)


def _moved(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """Each counter's change (a counter never counted yet is absent: 0)."""
    return {name: after.get(name, 0) - before.get(name, 0) for name in ALL}


async def _moved_by(
    client: httpx.AsyncClient, before: Mapping[str, float], expected: Mapping[str, float]
) -> dict[str, float]:
    """The changes once every expected counter moved (a worker counts just after it
    records the outcome a poll sees); then nothing else may have moved."""
    moved: dict[str, float] = {}

    async def counted() -> bool:
        nonlocal moved
        moved = _moved(before, await _scrape(client))
        return all(moved[name] >= count for name, count in expected.items())

    await until(counted, f"the counters did not move by {dict(expected)}")
    return moved


async def _finished_with_callback(
    client: httpx.AsyncClient, key: str, body: dict[str, Any]
) -> dict[str, Any]:
    headers = {"X-API-Key": key}
    submitted = await client.post(ASYNC, json=body, headers=headers)
    assert submitted.status_code == 202, submitted.text
    task: dict[str, Any] = {}

    async def delivered() -> bool:
        nonlocal task
        task = (await client.get(f"{ASYNC}/{submitted.json()['task_id']}", headers=headers)).json()
        return task["callback"]["status"] in ("delivered", "failed")

    await until(delivered, "the callback's delivery did not end")
    return task


async def test_a_completed_task_and_its_callback_count_once(
    app: FastAPI, client: httpx.AsyncClient, model_ids: dict[str, int]
) -> None:
    key = await make_key(app, ["predict"])
    before = await _scrape(client)
    started = time.monotonic()
    async with Receiver(statuses=[500, 200]) as receiver:
        url = f"http://127.0.0.1:{receiver.port}/hooks"
        body = {"data": [[1.0]], "model_id": model_ids["a"], "callback_url": url}
        task = await _finished_with_callback(client, key, body)
    elapsed = time.monotonic() - started
    assert task["status"] == "completed" and task["callback"]["status"] == "delivered"
    expected = {COMPLETED: 1, LATENCY_COUNT: 1, DELIVERED: 1, ATTEMPTS_FAILED: 1}
    moved = await _moved_by(client, before, expected)
    assert moved == {**dict.fromkeys(ALL, 0), **expected}
    latency = (await _scrape(client))[LATENCY_SUM] - before[LATENCY_SUM]
    assert 0 < latency <= elapsed


async def test_a_refused_callback_counts_as_failed(
    app: FastAPI, client: httpx.AsyncClient, model_ids: dict[str, int]
) -> None:
    key = await make_key(app, ["predict"])
    before = await _scrape(client)
    async with Receiver(statuses=[400]) as receiver:  # the receiver's final word
        url = f"http://127.0.0.1:{receiver.port}/hooks"
        body = {"data": [[1.0]], "model_id": model_ids["a"], "callback_url": url}
        task = await _finished_with_callback(client, key, body)
    assert task["callback"]["status"] == "failed"
    expected = {COMPLETED: 1, LATENCY_COUNT: 1, UNDELIVERED: 1, ATTEMPTS_FAILED: 1}
    assert await _moved_by(client, before, expected) == {**dict.fromkeys(ALL, 0), **expected}


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_a_failed_task_counts_as_failed_without_a_latency(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    async def refused(_: Mapping[str, str]) -> dict[str, Any]:
        raise ValidationError("no such feature", feature="f9")

    queue = fresh_queue(redis)
    before = await _scrape(client)
    task_id = await submit(queue)
    worker = worker_on(queue, refused)
    worker.start()
    try:
        moved = await _moved_by(client, before, {FAILED: 1})
    finally:
        await worker.stop()
    assert moved == {**dict.fromkeys(ALL, 0), FAILED: 1}
    assert (await queue.get(task_id) or {})["status"] == "failed"


async def test_a_task_taken_over_from_a_stopped_replica_counts_one_redelivery(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    queue = fresh_queue(redis)
    before = await _scrape(client)
    task_id = await submit(queue)
    # A replica takes the task, starts it and stops before it finishes.
    [taken] = await queue.take("stopped-replica", 1, LEVELS, block_ms=None)
    assert await queue.start("stopped-replica", taken) == "run"
    worker = worker_on(queue, Recorder(), claim_after_s=0.3)
    worker.start()
    try:
        moved = await _moved_by(client, before, {REDELIVERIES: 1, COMPLETED: 1})
    finally:
        await worker.stop()
    assert moved == {**dict.fromkeys(ALL, 0), REDELIVERIES: 1, COMPLETED: 1, LATENCY_COUNT: 1}
    task = await queue.get(task_id)
    assert task is not None and task["status"] == "completed" and task["attempts"] == "2"


async def test_the_queue_depth_per_priority_is_read_when_scraped(
    app: FastAPI, settings: Settings, model_ids: dict[str, int]
) -> None:
    key = await make_key(app, ["predict"])
    async with replica_without_workers(settings) as idle:
        transport = httpx.ASGITransport(app=idle)
        async with httpx.AsyncClient(transport=transport, base_url="http://idle") as replica:
            for priority in ("urgent", "urgent", "low"):
                body = {"data": [[1.0]], "model_id": model_ids["a"], "priority": priority}
                answer = await replica.post(ASYNC, json=body, headers={"X-API-Key": key})
                assert answer.status_code == 202, answer.text
            response = await replica.get("/metrics")
    assert "# TYPE conch_task_queue_depth gauge" in response.text.splitlines()
    depths = {
        level: _samples(response.text)[f'conch_task_queue_depth{{priority="{level}"}}']
        for level in LEVELS
    }
    assert depths == {"urgent": 2, "high": 0, "normal": 0, "low": 1}


async def _unanswered(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # reads the commands, answers none, until the client goes


@pytest.mark.parametrize("peer", ["closed port", "never answers"])
async def test_the_depth_is_left_out_when_redis_does_not_answer(peer: str) -> None:
    server = None
    if peer == "never answers":
        server = await asyncio.start_server(_unanswered, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
    else:
        port = free_port()
    redis = Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    try:
        text = await task_metrics.prometheus_text(fresh_queue(redis))
    finally:
        await redis.aclose()
        if server is not None:
            server.close()
    assert text == ""  # the rest of the scrape goes on without it
