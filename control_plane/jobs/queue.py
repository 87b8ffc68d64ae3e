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
- `finished` (a Pub/Sub channel): ids of tasks just finished or cancelled, which
  wake the polls waiting for them on every replica (`waiting.py`).
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
from control_plane.core.single_flight import SingleFlight
from control_plane.jobs import scripts

GROUP = "workers"
# Highest first: the order a worker looks for work in.
LEVELS: tuple[Priority, ...] = ("urgent", "high", "normal", "low")
assert sorted(PRIORITY_LEVELS, key=PRIORITY_LEVELS.__getitem__) == list(LEVELS)
# A task taken this many times without finishing (its replicas died running it) fails.
MAX_DELIVERIES = 3
# The window the completion rate is measured over.
RATE_WINDOW_S = 60
# A submission's estimate reads a rate this old at most (not 60 keys per submission).
RATE_CACHE_S = 1.0
# The statuses a task does not leave.
FINISHED = frozenset(("completed", "failed", "cancelled"))


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

    def finished(self) -> str:
        return f"{self.prefix}finished"


@dataclass(frozen=True, slots=True)
class Submitted:
    task_id: str
    # "queued"; "existing" for a retried Idempotency-Key; "full" / "key_full" refused
    outcome: str
    ahead: int = 0
    request_digest: str = ""  # of the first submission, for an "existing" one


@dataclass(frozen=True, slots=True)
class TakenTask:
    level: str
    entry: str
    task_id: str


@dataclass(frozen=True, slots=True)
class Started:
    """`run` or `exhausted` (taken too often) with the task's fields; `done` or `gone`
    (acknowledged: nothing to run) without."""

    outcome: str
    task: dict[str, str]


@dataclass(frozen=True, slots=True)
class Outcome:
    """A task's result (`completed`) or error body (`failed`), to record."""

    taken: TakenTask
    key_id: str
    status: str
    value: Any


def text(value: Any) -> str:
    """A Redis reply's bytes as text."""
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
        self._rate: tuple[float, float] | None = None  # (monotonic time read, tasks/s)
        self._rate_read = SingleFlight[None, float]()

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
        outcome = text(answer[0])
        if outcome == "existing":
            existing_id, _, digest = text(answer[1]).partition("|")
            return Submitted(existing_id, outcome, request_digest=digest)
        if outcome != "queued":
            return Submitted(task_id, outcome)
        return Submitted(task_id, outcome, ahead=int(text(answer[1])))

    async def get(self, task_id: str) -> dict[str, str] | None:
        raw = await self.redis.hgetall(self.keys.task(task_id))  # type: ignore[misc]
        return {text(k): text(v) for k, v in raw.items()} if raw else None

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
            args=[now_iso(), self.result_ttl_s, keys.finished()],
        )
        return None if answer is None else text(answer)

    async def completion_rate(self) -> float:
        """Tasks finished per second, all replicas together: over the last RATE_WINDOW_S,
        or since the first completion in it on a queue younger than that."""
        now = time.time()
        first = int(now) - RATE_WINDOW_S
        counts = await self.redis.mget([self.keys.done(s) for s in range(first, int(now) + 1)])
        counted = [(first + i, int(c)) for i, c in enumerate(counts) if c is not None]
        if not counted:
            return 0.0
        # At least a second: a first burst is not extrapolated from a few milliseconds.
        covered = max(now - counted[0][0], 1.0)
        return sum(count for _, count in counted) / covered

    async def recent_completion_rate(self) -> float:
        """`completion_rate` as read at most RATE_CACHE_S ago on this replica; concurrent
        callers share one read."""
        cached = self._rate
        if cached is not None and time.monotonic() - cached[0] < RATE_CACHE_S:
            return cached[1]

        async def read() -> float:
            rate = await self.completion_rate()
            self._rate = (time.monotonic(), rate)
            return rate

        return await self._rate_read.load(None, read)

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
            level = text(stream).rsplit(":", 1)[1]
            for entry, fields in entries:
                task_id = fields.get(b"task") or fields.get("task")
                if task_id is not None:
                    taken.append(TakenTask(level, text(entry), text(task_id)))
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
                    taken.append(TakenTask(level, text(entry), text(task_id)))
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
            mine = [e["message_id"] for e in owned if text(e["message_id"]) in entries]
            if mine:
                await self.redis.xclaim(stream, GROUP, consumer, 0, mine, justid=True)

    async def start(self, consumer: str, task: TakenTask) -> str:
        """One task's `start_many` outcome."""
        return (await self.start_many(consumer, [task]))[0].outcome

    async def start_many(self, consumer: str, tasks: Sequence[TakenTask]) -> list[Started]:
        """Mark taken tasks running, in one round trip; each with its fields."""
        if not tasks:
            return []
        answer: Any = await self._start(
            keys=[
                key for t in tasks for key in (self.keys.task(t.task_id), self.keys.stream(t.level))
            ],
            args=[consumer, now_iso(), MAX_DELIVERIES, GROUP, *(t.entry for t in tasks)],
        )
        started = []
        for item in answer:
            outcome = text(item[0])
            flat = item[1] if outcome in ("run", "exhausted") else []
            fields = {text(flat[i]): text(flat[i + 1]) for i in range(0, len(flat), 2)}
            started.append(Started(outcome, fields))
        return started

    async def finish(
        self, consumer: str, task: TakenTask, key_id: str, *, status: str, value: Any
    ) -> bool:
        """One task's `finish_many`."""
        return (await self.finish_many(consumer, [Outcome(task, key_id, status, value)]))[0]

    async def finish_many(self, consumer: str, outcomes: Sequence[Outcome]) -> list[bool]:
        """Record outcomes in one round trip; per task False when it was no longer this
        consumer's (it was taken over), so that only one replica reports it."""
        if not outcomes:
            return []
        keys = self.keys
        task_keys: list[str] = []
        task_args: list[Any] = []
        for o in outcomes:
            task_keys += [
                keys.task(o.taken.task_id),
                keys.stream(o.taken.level),
                keys.active(o.key_id),
            ]
            field = "result" if o.status == "completed" else "error"
            task_args += [o.taken.entry, o.status, field, orjson.dumps(o.value)]
        finished: Any = await self._finish(
            keys=[keys.active(), keys.done(int(time.time())), *task_keys],
            args=[consumer, now_iso(), self.result_ttl_s, GROUP, keys.finished(), *task_args],
        )
        return [bool(flag) for flag in finished]

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
            (text(g["last-delivered-id"]) for g in groups if text(g["name"]) == GROUP), "0-0"
        )
        if _stream_id(task["entry"]) <= _stream_id(delivered):
            return None  # taken, not started yet
        before: Any = await self.redis.xrange(stream, f"({delivered}", f"({task['entry']}")
        return ahead + len(before) + 1
