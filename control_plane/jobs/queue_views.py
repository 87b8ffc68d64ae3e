"""What operators read of the queue (`conch jobs`, `GET .../async/queues`, listings):
entries running per level, the group's consumers, the newest tasks.

The group remembers every consumer that ever read, and each replica start names
a new one (`worker.consumer_name`): without pruning the list fills with replicas
long gone. A live worker reads every second while it has a free slot and renews
what it runs every third of the claim window, so its idle time stays well below
`live_ms` (the window); the view lists those, and any consumer still holding
entries (they wait for a takeover). A consumer idle past `forget_ms` with nothing
pending is deleted from the group; the check and the delete are one script, so
an entry it took meanwhile is never dropped with it (XGROUP DELCONSUMER drops a
consumer's pending entries). A replica that was only paused just reads again:
reading creates its consumer anew.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from control_plane.jobs.queue import GROUP, LEVELS, TaskQueue, text

# KEYS: a level's stream. ARGV: group, consumer, least idle (ms). Deletes the consumer
# only while it holds no entry of that stream and is that idle: -> 1, else 0.
_FORGET = """
for _, row in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local fields = {}
  for i = 1, #row, 2 do fields[row[i]] = row[i + 1] end
  if fields['name'] == ARGV[2] then
    if fields['pending'] ~= 0 or fields['idle'] < tonumber(ARGV[3]) then return 0 end
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
    return 1
  end
end
return 0
"""


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


async def consumers(queue: TaskQueue, *, live_ms: int, forget_ms: int) -> list[Consumer]:
    """The live consumers and those holding entries, least idle first; those idle
    past `forget_ms` holding nothing are deleted. A worker blocks on every level at
    once, so its idle time is its least on any stream."""
    found = await _every_consumer(queue)
    forget = queue.redis.register_script(_FORGET)
    for consumer in found:
        if consumer.pending == 0 and consumer.idle_ms >= forget_ms:
            for level in LEVELS:
                with contextlib.suppress(ResponseError):  # no stream or group yet
                    await forget(
                        keys=[queue.keys.stream(level)], args=[GROUP, consumer.name, forget_ms]
                    )
    shown = [c for c in found if c.idle_ms < live_ms or c.pending > 0]
    return sorted(shown, key=lambda consumer: (consumer.idle_ms, consumer.name))


async def _every_consumer(queue: TaskQueue) -> list[Consumer]:
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
    return list(found.values())


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
