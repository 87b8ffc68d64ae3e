"""What operators read of the queue (`conch jobs`, `GET .../async/queues`, listings):
entries running per level, the group's consumers, the newest tasks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from control_plane.jobs.queue import GROUP, LEVELS, TaskQueue, text


@dataclass(frozen=True, slots=True)
class Consumer:
    """A worker of the group, over every level: entries it holds, time since it last read."""

    name: str
    pending: int
    idle_ms: int


async def running(queue: TaskQueue) -> dict[str, int]:
    """Entries taken and not yet finished per level (XPENDING): running, or held by a
    replica that stopped until another takes them over."""
    counts: dict[str, int] = {}
    for level in LEVELS:
        try:
            pending = await queue.redis.xpending(queue.keys.stream(level), GROUP)
        except ResponseError:  # no stream or group yet
            pending = {"pending": 0}
        counts[level] = int(pending["pending"])
    return counts


async def consumers(queue: TaskQueue) -> list[Consumer]:
    """Every consumer the group has seen, live ones (least idle) first. A worker blocks
    on every level at once, so its idle time is its least on any stream."""
    found: dict[str, Consumer] = {}
    for level in LEVELS:
        try:
            answer: Any = await queue.redis.xinfo_consumers(queue.keys.stream(level), GROUP)
        except ResponseError:  # no stream or group yet
            continue
        for row in answer:
            name, pending, idle = text(row["name"]), int(row["pending"]), int(row["idle"])
            seen = found.get(name)
            if seen is not None:
                pending, idle = pending + seen.pending, min(idle, seen.idle_ms)
            found[name] = Consumer(name, pending, idle)
    return sorted(found.values(), key=lambda consumer: (consumer.idle_ms, consumer.name))


async def recent_from(queue: TaskQueue, start: int, count: int) -> list[dict[str, str]]:
    """Up to `count` tasks from the `start`-th newest on, newest first (expired ones left
    out), their hashes read in one round trip."""
    ids = await queue.redis.zrevrange(queue.keys.index(), start, start + count - 1)
    if not ids:
        return []
    async with queue.redis.pipeline(transaction=False) as pipe:
        for task_id in ids:
            pipe.hgetall(queue.keys.task(text(task_id)))
        answers = await pipe.execute()
    return [{text(k): text(v) for k, v in raw.items()} for raw in answers if raw]
