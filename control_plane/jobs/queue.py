"""The task queue, shared by every replica: Redis Streams with one consumer group.

Why Streams rather than a task library (arq, saq, taskiq, Celery): the queue must
survive a replica dying mid-task (a stream entry stays pending in its consumer
group until acknowledged, and `XAUTOCLAIM` hands stale entries to a live
replica), answer any poll from any replica (the task is a hash in the same
Redis), keep four priority levels with a starvation guard, bound the queue per
key, and tell a caller its position. The libraries on Redis either pop from a
list or sorted set (a worker that dies loses what it popped, or re-runs it after
a visibility timeout without consumer ownership), or would need those same
pieces written on top. Here they are four short Lua scripts (`scripts.py`).

Layout, under one hash tag so a Redis Cluster keeps it on one slot:
- `stream:<level>`: one stream per priority; an entry names a task id.
- `task:<id>`: a hash with the request, the status and the result; it expires
  `task_result_ttl_s` after it finished (never while queued or running).
- `active:<key id>`, `active`: tasks queued or running, per key and in all.
- `idem:<key id>:<digest>`: an Idempotency-Key's task, for the same TTL.
- `done:<unix second>`: tasks finished in that second (the completion rate).
- `index`: task ids by submission time (listing; trimmed past the TTL).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from conch_manifest.priorities import PRIORITY_LEVELS, Priority
from control_plane.jobs import scripts

GROUP = "workers"
# Highest first: the order a worker looks for work in.
LEVELS: tuple[Priority, ...] = ("urgent", "high", "normal", "low")
assert sorted(PRIORITY_LEVELS, key=PRIORITY_LEVELS.__getitem__) == list(LEVELS)
# A task taken this many times without finishing (its replicas died running it) fails.
MAX_DELIVERIES = 3
# The window the completion rate is measured over.
RATE_WINDOW_S = 60


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_task_id() -> str:
    return "task_" + secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class TaskKeys:
    """The Redis key names of one deployment's queue."""

    namespace: str

    @property
    def prefix(self) -> str:
        return f"conch:{{{self.namespace}}}:tasks:"

    def stream(self, level: str) -> str:
        return f"{self.prefix}stream:{level}"

    def task(self, task_id: str) -> str:
        return f"{self.prefix}task:{task_id}"

    def active(self, key_id: int | str | None = None) -> str:
        return f"{self.prefix}active" if key_id is None else f"{self.prefix}active:{key_id}"

    def idempotency(self, key_id: int, idempotency_key: str) -> str:
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
        return f"{self.prefix}idem:{key_id}:{digest}"

    def done(self, second: int) -> str:
        return f"{self.prefix}done:{second}"

    def index(self) -> str:
        return f"{self.prefix}index"


@dataclass(frozen=True, slots=True)
class Submitted:
    task_id: str
    # "queued"; "existing" for a retried Idempotency-Key; "full" / "key_full" refused
    outcome: str
    ahead: int = 0
    request_digest: str = ""  # of the first submission, for an "existing" one


@dataclass(frozen=True, slots=True)
class Consumer:
    """A worker of the group, over every level: entries it holds, time since it last read."""

    name: str
    pending: int
    idle_ms: int


@dataclass(frozen=True, slots=True)
class TakenTask:
    level: str
    entry: str
    task_id: str


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _stream_id(entry: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry.partition("-")
    return int(milliseconds), int(sequence or 0)


class TaskQueue:
    """Submit, read and cancel tasks; take, finish and take over stale ones."""

    def __init__(
        self,
        redis: Redis,
        namespace: str,
        *,
        max_per_key: int,
        max_queued: int,
        result_ttl_s: int,
    ) -> None:
        self.redis = redis
        self.keys = TaskKeys(namespace)
        self.max_per_key = max_per_key
        self.max_queued = max_queued
        self.result_ttl_s = result_ttl_s
        self._submit = redis.register_script(scripts.SUBMIT)
        self._start = redis.register_script(scripts.START)
        self._finish = redis.register_script(scripts.FINISH)
        self._cancel = redis.register_script(scripts.CANCEL)
        self._record = redis.register_script(scripts.RECORD)

    # --- callers ---------------------------------------------------------------

    async def submit(
        self,
        fields: Mapping[str, str],
        *,
        key_id: int,
        priority: Priority,
        idempotency_key: str | None = None,
        request_digest: str = "",
    ) -> Submitted:
        """Queue a task (its `fields` as the hash stores them) unless a bound refuses it."""
        task_id = new_task_id()
        keys = self.keys
        idempotency = (
            keys.idempotency(key_id, idempotency_key) if idempotency_key else keys.active()
        )
        record = f"{task_id}|{request_digest}" if idempotency_key else ""
        ahead_levels = LEVELS[: LEVELS.index(priority) + 1]
        stored = {
            **fields,
            "task_id": task_id,
            "status": "queued",
            "key_id": str(key_id),
            "priority": priority,
            "created_at": now_iso(),
            "attempts": "0",
        }
        answer = await self._submit(
            keys=[
                keys.task(task_id),
                keys.stream(priority),
                keys.active(key_id),
                keys.active(),
                idempotency,
                keys.index(),
                *(keys.stream(level) for level in ahead_levels),
            ],
            args=[
                task_id,
                self.max_per_key,
                self.max_queued,
                self.result_ttl_s,
                record,
                GROUP,
                int(time.time() * 1000),
                *(item for pair in stored.items() for item in pair),
            ],
        )
        outcome = _text(answer[0])
        if outcome == "existing":
            existing_id, _, digest = _text(answer[1]).partition("|")
            return Submitted(existing_id, outcome, request_digest=digest)
        if outcome != "queued":
            return Submitted(task_id, outcome)
        return Submitted(task_id, outcome, ahead=int(_text(answer[1])))

    async def recent(self, limit: int) -> list[dict[str, str]]:
        """The newest tasks still kept, newest first (at most `limit`)."""
        ids = await self.redis.zrevrange(self.keys.index(), 0, max(limit, 1) - 1)
        tasks = [await self.get(_text(task_id)) for task_id in ids]
        return [task for task in tasks if task is not None]

    async def get(self, task_id: str) -> dict[str, str] | None:
        raw = await self.redis.hgetall(self.keys.task(task_id))  # type: ignore[misc]
        return {_text(k): _text(v) for k, v in raw.items()} if raw else None

    async def cancel(self, task: Mapping[str, str]) -> str | None:
        """`cancelled`, or the status that forbids it (None: the task is gone)."""
        keys = self.keys
        answer = await self._cancel(
            keys=[
                keys.task(task["task_id"]),
                keys.stream(task["priority"]),
                keys.active(task["key_id"]),
                keys.active(),
            ],
            args=[now_iso(), self.result_ttl_s],
        )
        return None if answer is None else _text(answer)

    async def completion_rate(self) -> float:
        """Tasks finished per second over the last RATE_WINDOW_S, all replicas together."""
        now = int(time.time())
        names = [self.keys.done(second) for second in range(now - RATE_WINDOW_S, now)]
        counts = await self.redis.mget(names)
        return sum(int(count) for count in counts if count is not None) / RATE_WINDOW_S

    async def depths(self) -> dict[str, int]:
        """Tasks waiting (not yet taken) per level."""
        return await self.depths_of(LEVELS)

    async def depths_of(self, levels: Sequence[str]) -> dict[str, int]:
        depths = {}
        for level in levels:
            stream = self.keys.stream(level)
            try:
                pending = await self.redis.xpending(stream, GROUP)
            except ResponseError:  # no stream or group yet: nothing waits there
                depths[level] = 0
                continue
            depths[level] = await self.redis.xlen(stream) - int(pending["pending"])
        return depths

    # --- workers ---------------------------------------------------------------

    async def ensure_groups(self) -> None:
        for level in LEVELS:
            try:
                await self.redis.xgroup_create(self.keys.stream(level), GROUP, "0", mkstream=True)
            except Exception as exc:  # BUSYGROUP: another replica made it first
                if "BUSYGROUP" not in str(exc):
                    raise

    async def take(
        self, consumer: str, count: int, levels: Sequence[str], *, block_ms: int | None
    ) -> list[TakenTask]:
        """Up to `count` new entries of the first level in `levels` that has any;
        with `block_ms`, waits that long for an entry on any level."""
        for level in levels:
            taken = await self._read(consumer, {self.keys.stream(level): ">"}, count, None)
            if taken:
                return taken
        if block_ms is None:
            return []
        streams = {self.keys.stream(level): ">" for level in levels}
        return await self._read(consumer, streams, count, block_ms)

    async def _read(
        self, consumer: str, streams: dict[str, str], count: int, block_ms: int | None
    ) -> list[TakenTask]:
        answer: Any = await self.redis.xreadgroup(
            GROUP,
            consumer,
            streams,  # type: ignore[arg-type]
            count=count,
            block=block_ms,
        )
        taken = []
        for stream, entries in answer or []:
            level = _text(stream).rsplit(":", 1)[1]
            for entry, fields in entries:
                task_id = fields.get(b"task") or fields.get("task")
                if task_id is not None:
                    taken.append(TakenTask(level, _text(entry), _text(task_id)))
        return taken

    async def take_over(self, consumer: str, idle_ms: int, count: int) -> list[TakenTask]:
        """Entries another consumer took and has not renewed for `idle_ms`."""
        taken = []
        for level in LEVELS:
            stream = self.keys.stream(level)
            answer: Any = await self.redis.xautoclaim(
                stream, GROUP, consumer, idle_ms, "0-0", count
            )
            for entry, fields in answer[1]:
                task_id = (fields or {}).get(b"task") or (fields or {}).get("task")
                if task_id is not None:
                    taken.append(TakenTask(level, _text(entry), _text(task_id)))
        return taken

    async def renew(self, consumer: str, running: Sequence[TakenTask]) -> None:
        """Reset the idle time of entries this consumer runs and still owns: one another
        replica took over is left to it (claiming it back would take it from them)."""
        by_level: dict[str, set[str]] = {}
        for task in running:
            by_level.setdefault(task.level, set()).add(task.entry)
        for level, entries in by_level.items():
            stream = self.keys.stream(level)
            owned: Any = await self.redis.xpending_range(
                stream, GROUP, "-", "+", len(entries) + 100, consumername=consumer
            )
            mine = [e["message_id"] for e in owned if _text(e["message_id"]) in entries]
            if mine:
                await self.redis.xclaim(stream, GROUP, consumer, 0, mine, justid=True)

    async def start(self, consumer: str, task: TakenTask) -> str:
        """`run`, `exhausted` (taken too often), or `done`/`gone` (acknowledged here)."""
        answer = await self._start(
            keys=[self.keys.task(task.task_id)], args=[consumer, now_iso(), MAX_DELIVERIES]
        )
        outcome = _text(answer[0])
        if outcome in ("done", "gone"):
            await self.acknowledge(task)
        return outcome

    async def acknowledge(self, task: TakenTask) -> None:
        stream = self.keys.stream(task.level)
        await self.redis.xack(stream, GROUP, task.entry)
        await self.redis.xdel(stream, task.entry)

    async def finish(
        self, consumer: str, task: TakenTask, key_id: str, *, status: str, value: Any
    ) -> bool:
        """Record the outcome; False when the task was no longer this consumer's (it
        was taken over), so that only one replica reports it."""
        keys = self.keys
        field = "result" if status == "completed" else "error"
        finished = await self._finish(
            keys=[
                keys.task(task.task_id),
                keys.stream(task.level),
                keys.active(key_id),
                keys.active(),
                keys.done(int(time.time())),
            ],
            args=[
                consumer,
                status,
                field,
                orjson.dumps(value),
                now_iso(),
                self.result_ttl_s,
                task.entry,
                GROUP,
            ],
        )
        return bool(finished)

    async def record(self, task_id: str, field: str, value: Any) -> None:
        """Set one field of a task that still exists (a callback's delivery, say)."""
        await self._record(keys=[self.keys.task(task_id)], args=[field, orjson.dumps(value)])

    async def position(self, task: Mapping[str, str]) -> int | None:
        """1 for the next task a worker takes (at the levels' usual order); None once
        a worker has taken it."""
        if task.get("status") != "queued":
            return None
        own = task["priority"]
        ahead = 0
        for level in LEVELS[: LEVELS.index(own)]:  # type: ignore[arg-type]
            ahead += (await self.depths_of((level,)))[level]
        stream = self.keys.stream(own)
        groups = await self.redis.xinfo_groups(stream)
        delivered = next(
            (_text(g["last-delivered-id"]) for g in groups if _text(g["name"]) == GROUP), "0-0"
        )
        if _stream_id(task["entry"]) <= _stream_id(delivered):
            return None  # taken, not started yet
        before: Any = await self.redis.xrange(stream, f"({delivered}", f"({task['entry']}")
        return ahead + len(before) + 1

    # --- operators --------------------------------------------------------------

    async def running(self) -> dict[str, int]:
        """Entries taken and not yet finished per level (XPENDING): running, or held by
        a replica that stopped until another takes them over."""
        running: dict[str, int] = {}
        for level in LEVELS:
            try:
                pending = await self.redis.xpending(self.keys.stream(level), GROUP)
            except ResponseError:  # no stream or group yet
                pending = {"pending": 0}
            running[level] = int(pending["pending"])
        return running

    async def consumers(self) -> list[Consumer]:
        """Every consumer the group has seen, live ones (least idle) first. A worker
        blocks on every level at once, so its idle time is its least on any stream."""
        found: dict[str, Consumer] = {}
        for level in LEVELS:
            try:
                answer: Any = await self.redis.xinfo_consumers(self.keys.stream(level), GROUP)
            except ResponseError:  # no stream or group yet
                continue
            for row in answer:
                name, pending, idle = _text(row["name"]), int(row["pending"]), int(row["idle"])
                seen = found.get(name)
                if seen is not None:
                    pending, idle = pending + seen.pending, min(idle, seen.idle_ms)
                found[name] = Consumer(name, pending, idle)
        return sorted(found.values(), key=lambda consumer: (consumer.idle_ms, consumer.name))

    async def recent_from(self, start: int, count: int) -> list[dict[str, str]]:
        """Up to `count` tasks from the `start`-th newest on, newest first (expired ones
        left out), their hashes read in one round trip."""
        ids = await self.redis.zrevrange(self.keys.index(), start, start + count - 1)
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for task_id in ids:
                pipe.hgetall(self.keys.task(_text(task_id)))
            answers = await pipe.execute()
        return [{_text(k): _text(v) for k, v in raw.items()} for raw in answers if raw]
