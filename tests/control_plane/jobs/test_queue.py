"""The task queue on a real Redis: priorities, the starvation guard, bounds,
idempotency, cancellation, positions, and takeover that completes a task once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from control_plane.jobs.queue import MAX_DELIVERIES, TakenTask, TaskQueue
from tests.control_plane.jobs.queue_helpers import Recorder, fresh_queue, submit, worker_on
from tests.control_plane.waiting import until


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def queue(redis: Redis) -> TaskQueue:
    return fresh_queue(redis)


async def _status(queue: TaskQueue, task_id: str) -> str | None:
    task = await queue.get(task_id)
    return None if task is None else task["status"]


async def _all_done(queue: TaskQueue, task_ids: list[str]) -> None:
    async def done() -> bool:
        return all([await _status(queue, t) == "completed" for t in task_ids])

    await until(done, "the tasks did not complete")


async def test_the_highest_level_is_taken_first(queue: TaskQueue) -> None:
    low = [await submit(queue, "low") for _ in range(3)]
    normal = [await submit(queue, "normal") for _ in range(3)]
    urgent = [await submit(queue, "urgent") for _ in range(3)]
    recorder = Recorder()
    worker = worker_on(queue, recorder, starvation_every=1000)
    worker.start()
    try:
        await _all_done(queue, low + normal + urgent)
    finally:
        await worker.stop()
    assert recorder.ran == urgent + normal + low


async def test_low_still_moves_under_constant_high_load(queue: TaskQueue) -> None:
    high = [await submit(queue, "high") for _ in range(20)]
    low = [await submit(queue, "low") for _ in range(2)]
    recorder = Recorder()
    worker = worker_on(queue, recorder, starvation_every=5)
    worker.start()
    try:
        await _all_done(queue, high + low)
    finally:
        await worker.stop()
    # Every fifth take starts from the lowest level: the 5th and the 10th.
    assert [recorder.ran.index(task) for task in low] == [4, 9]


async def test_positions_count_the_tasks_ahead(queue: TaskQueue) -> None:
    for _ in range(2):
        await submit(queue, "urgent")
    for _ in range(2):
        await submit(queue, "low")
    submitted = await queue.submit(
        {"model_ref": "m", "model_id": "1", "request": "{}"}, key_id=1, priority="low"
    )
    assert submitted.ahead == 4  # two urgent, two low before it
    task = await queue.get(submitted.task_id)
    assert task is not None and await queue.position(task) == 5
    urgent = await queue.submit(
        {"model_ref": "m", "model_id": "1", "request": "{}"}, key_id=1, priority="urgent"
    )
    assert urgent.ahead == 2
    assert await queue.position(task) == 6  # the new urgent task went ahead of it
    assert await queue.depths() == {"urgent": 3, "high": 0, "normal": 0, "low": 3}


async def test_bounds_per_key_and_in_total(redis: Redis) -> None:
    queue = fresh_queue(redis, max_per_key=2, max_queued=3)
    first = await submit(queue, key_id=1)
    await submit(queue, key_id=1)
    fields = {"model_ref": "m", "model_id": "1", "request": "{}"}
    assert (await queue.submit(fields, key_id=1, priority="normal")).outcome == "key_full"
    await submit(queue, key_id=2)  # another key's tasks keep flowing
    assert (await queue.submit(fields, key_id=3, priority="normal")).outcome == "full"
    task = await queue.get(first)
    assert task is not None and await queue.cancel(task) == "cancelled"
    await submit(queue, key_id=1)  # the cancelled task freed its key's place


async def test_an_idempotency_key_returns_the_first_task(queue: TaskQueue) -> None:
    fields = {"model_ref": "m", "model_id": "1", "request": "{}"}
    first = await queue.submit(
        fields, key_id=1, priority="normal", idempotency_key="order-7", request_digest="d1"
    )
    again = await queue.submit(
        fields, key_id=1, priority="normal", idempotency_key="order-7", request_digest="d2"
    )
    assert again.outcome == "existing"
    assert (again.task_id, again.request_digest) == (first.task_id, "d1")
    other_key = await queue.submit(
        fields, key_id=2, priority="normal", idempotency_key="order-7", request_digest="d1"
    )
    assert other_key.outcome == "queued" and other_key.task_id != first.task_id
    assert await queue.depths() == {"urgent": 0, "high": 0, "normal": 2, "low": 0}


async def test_a_cancelled_task_never_runs(queue: TaskQueue, redis: Redis) -> None:
    cancelled = await submit(queue)
    kept = await submit(queue)
    task = await queue.get(cancelled)
    assert task is not None and await queue.cancel(task) == "cancelled"
    assert 0 < await redis.ttl(queue.keys.task(cancelled)) <= 600
    recorder = Recorder()
    worker = worker_on(queue, recorder)
    worker.start()
    try:
        await _all_done(queue, [kept])
    finally:
        await worker.stop()
    assert recorder.ran == [kept]
    done = await queue.get(kept)
    assert done is not None and await queue.cancel(done) == "completed"
    assert await redis.ttl(queue.keys.task(kept)) > 0  # a finished task expires
    assert orjson.loads(done["result"]) == {"predictions": [kept]}


async def test_a_task_its_replica_abandoned_is_taken_over_and_completes_once(
    queue: TaskQueue,
) -> None:
    finished: list[tuple[str, str]] = []

    async def after_finish(task: Mapping[str, str], status: str, _: dict[str, Any]) -> None:
        finished.append((task["task_id"], status))

    stalled = Recorder()
    stalled.gate.clear()  # replica A takes the task and hangs in the model call
    first = worker_on(queue, stalled, claim_after_s=600)  # renews every 200 s: never, here
    first._after_finish = after_finish
    second_job = Recorder()
    second = worker_on(queue, second_job, claim_after_s=0.3)
    second._after_finish = after_finish
    task_id = await submit(queue)
    first.start()

    async def taken() -> bool:
        return first.running == 1

    await until(taken, "replica A did not take the task")
    second.start()
    try:
        await _all_done(queue, [task_id])
        stalled.gate.set()  # A's model call returns after B completed the task

        async def a_finished() -> bool:
            return first.running == 0

        await until(a_finished, "replica A did not finish")
    finally:
        await first.stop()
        await second.stop()
    task = await queue.get(task_id)
    assert task is not None and task["attempts"] == "2"
    assert orjson.loads(task["result"]) == {"predictions": [task_id]}
    assert second_job.ran == [task_id] and stalled.ran == [task_id]
    assert finished == [(task_id, "completed")]  # reported by one replica only


async def test_a_task_taken_too_often_fails(queue: TaskQueue) -> None:
    task_id = await submit(queue)
    task = await queue.get(task_id)
    assert task is not None
    taken = TakenTask("normal", task["entry"], task_id)
    for attempt in range(MAX_DELIVERIES):
        assert await queue.start(f"replica-{attempt}", taken) == "run"
    assert await queue.start("replica-last", taken) == "exhausted"
