"""The queue view's consumers on a real Redis: replicas long gone are not listed; one
that holds nothing is deleted from the group, one holding entries is kept (and
listed) until another replica claims them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from control_plane.jobs import queue_views
from control_plane.jobs.queue import GROUP, LEVELS, TaskQueue, text
from tests.control_plane.jobs.queue_helpers import fresh_queue, submit
from tests.control_plane.waiting import until

LIVE_MS, FORGET_MS = 50, 100  # the view's bounds, small: the test waits past them


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def _in_group(queue: TaskQueue) -> dict[str, int]:
    """Every consumer the normal level's group has, with its pending count."""
    rows = await queue.redis.xinfo_consumers(queue.keys.stream("normal"), GROUP)
    return {text(row["name"]): int(row["pending"]) for row in rows}


async def _took_nothing(queue: TaskQueue, name: str) -> None:
    """A consumer as a worker's blocking read makes it (Redis 7.2 on; older ones only
    on a read that takes something: there, one whose tasks all finished)."""
    for level in LEVELS:
        await queue.redis.xgroup_createconsumer(queue.keys.stream(level), GROUP, name)


async def _idle_past(queue: TaskQueue, names: set[str], ms: int) -> None:
    async def quiet() -> bool:
        rows = await queue.redis.xinfo_consumers(queue.keys.stream("normal"), GROUP)
        return all(int(r["idle"]) > ms for r in rows if text(r["name"]) in names)

    await until(quiet, f"{names} did not stay idle {ms} ms")


async def _view(queue: TaskQueue, live_ms: int = LIVE_MS) -> dict[str, int]:
    found = await queue_views.consumers(queue, live_ms=live_ms, forget_ms=FORGET_MS)
    return {c.name: c.pending for c in found}


async def test_gone_consumers_are_pruned_and_one_holding_entries_waits_for_a_claim(
    redis: Redis,
) -> None:
    queue = fresh_queue(redis)
    await queue.ensure_groups()
    await submit(queue)
    assert len(await queue.take("holder", 1, ("normal",), block_ms=None)) == 1
    await _took_nothing(queue, "empty-handed")
    assert await _in_group(queue) == {"holder": 1, "empty-handed": 0}
    # Both just read (within a minute, the busiest machine included): listed.
    assert await _view(queue, live_ms=60_000) == {"holder": 1, "empty-handed": 0}

    await _idle_past(queue, {"holder", "empty-handed"}, FORGET_MS)
    assert await _view(queue) == {"holder": 1}  # gone, but its task is not lost
    assert await _in_group(queue) == {"holder": 1}  # "empty-handed" deleted; holder kept

    taken = await queue.take_over("heir", 0, 1)
    assert len(taken) == 1
    await _idle_past(queue, {"holder"}, FORGET_MS)
    assert await _view(queue) == {"heir": 1}
    assert await _in_group(queue) == {"heir": 1}


async def test_a_consumer_idle_past_live_but_not_forget_is_hidden_not_deleted(
    redis: Redis,
) -> None:
    queue = fresh_queue(redis)
    await queue.ensure_groups()
    await _took_nothing(queue, "paused")
    await _idle_past(queue, {"paused"}, LIVE_MS)
    found = await queue_views.consumers(queue, live_ms=LIVE_MS, forget_ms=60_000)
    assert found == []
    assert await _in_group(queue) == {"paused": 0}  # reading again would list it again
