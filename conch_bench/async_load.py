"""The async-task client: users that submit a task, wait for it with a waiting poll
(`GET .../{task_id}?wait_ms=`: one poll per task unless it outlasts the wait), repeat.

The async door's counterpart of loadgen.py's closed loop (async_pass.py says
what it measures and why): `in_flight` users split over spawned client
processes, each an asyncio loop with aiohttp keep-alive connections, starting
from a shared wall-clock instant (the users joining over the warm-up). A task
counts when a poll sees it completed inside the window, whenever it was
submitted. After the window each
user still finishes the task it holds, so the next measurement starts on an
empty queue. Each process reports its CPU use over the window.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing as mp
import time
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.synchronize import Event as EventType
from typing import Any

import numpy as np
import orjson

from conch_bench.doors import DoorError
from conch_bench.loadgen import collect_messages, run_client, split
from conch_bench.stats import RunSummary, WorkerResult, summarize
from conch_bench.targets import RestTarget

WAIT_MS = 10_000  # what a poll asks the server to wait for the task, at most
TASK_DEADLINE_S = 60.0  # a task not completed by then is an error
_MAX_ERROR_MESSAGES = 5


@dataclass(frozen=True)
class TaskLoad:
    """One measurement: picklable, it crosses into spawned client processes."""

    submit: RestTarget  # the async door's URL, bodies, key and 202
    in_flight: int
    duration_s: float
    warmup_s: float
    processes: int = 1
    rows: int = 1  # per task, for rows/s


@dataclass
class TaskSamples:
    """What one client process saw of the tasks it saw completed inside the window."""

    seen_s: list[float] = field(default_factory=list)  # submit sent -> completion seen
    queue_s: list[float] = field(default_factory=list)  # the task's created_at -> completed_at
    polls: int = 0  # GETs those tasks took
    errors: int = 0
    messages: list[str] = field(default_factory=list)
    cpu_s: float = 0.0


@dataclass(frozen=True)
class TaskPoint:
    seen: RunSummary
    queue: RunSummary  # the same tasks, by their own timestamps
    polls: int


class TaskFailed(RuntimeError):
    """A task ended `failed` or `cancelled`, or was not completed in time."""


def queue_seconds(task: dict[str, Any]) -> float:
    """created_at -> completed_at, as the server recorded them (milliseconds)."""
    created = datetime.fromisoformat(task["created_at"])
    return (datetime.fromisoformat(task["completed_at"]) - created).total_seconds()


class _Recorder:
    def __init__(self, t_measure: float, t_end: float) -> None:
        self.t_measure, self.t_end = t_measure, t_end
        self.samples = TaskSamples()

    def inside(self, t: float) -> bool:
        return self.t_measure <= t <= self.t_end

    def error(self, exc: BaseException) -> None:
        if not self.inside(time.perf_counter()):
            return
        self.samples.errors += 1
        if len(self.samples.messages) < _MAX_ERROR_MESSAGES:
            self.samples.messages.append(f"{type(exc).__name__}: {exc}"[:300])


async def _sleep_until(t: float) -> None:
    await asyncio.sleep(max(t - time.perf_counter(), 0))
    rest = t - time.perf_counter()  # a timer may wake up to its resolution early
    if rest > 0:
        await asyncio.sleep(rest)


async def _one_task(session: Any, url: str, body: bytes) -> tuple[Any, int, float]:
    """Submit, then poll with `wait_ms` until completed: the task's view, the GETs it
    took and when the submit was answered. The server answers a waiting poll as soon
    as the task finishes, so a second poll is needed only past WAIT_MS."""
    async with session.post(url, data=body) as response:
        payload = await response.read()
        if response.status != 202:
            text = payload[:200].decode(errors="replace")
            raise DoorError(f"submit: HTTP {response.status}: {text}")
    answered = time.perf_counter()
    poll_url = f"{url}/{orjson.loads(payload)['task_id']}?wait_ms={WAIT_MS}"
    polls = 0
    while True:
        async with session.get(poll_url) as response:
            payload = await response.read()
            polls += 1
            if response.status != 200:
                text = payload[:200].decode(errors="replace")
                raise DoorError(f"poll: HTTP {response.status}: {text}")
        task = orjson.loads(payload)
        if task["status"] == "completed":
            return task, polls, answered
        if task["status"] in ("failed", "cancelled"):
            raise TaskFailed(f"task {task['status']}: {task.get('error')}")
        if time.perf_counter() - answered > TASK_DEADLINE_S:
            raise TaskFailed(f"task still {task['status']} after {TASK_DEADLINE_S:.0f}s")


async def _user(session: Any, load: TaskLoad, rec: _Recorder, start: float) -> None:
    await _sleep_until(start)
    bodies = itertools.cycle(load.submit.bodies)
    while (sent := time.perf_counter()) < rec.t_end:
        try:
            task, polls, _ = await _one_task(session, load.submit.url, next(bodies))
        except Exception as exc:  # every failure is a measured error, never a crash
            rec.error(exc)
            continue
        done = time.perf_counter()
        if rec.inside(done):
            rec.samples.seen_s.append(done - sent)
            rec.samples.queue_s.append(queue_seconds(task))
            rec.samples.polls += polls


async def _run_share(
    load: TaskLoad, users: int, ready: Any, go: EventType, start_at: Any
) -> TaskSamples:
    import aiohttp

    headers = {"Content-Type": "application/json", **load.submit.headers}
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=users),
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=60),
    )
    try:
        ready.put(("ready", 0, ""))
        await asyncio.to_thread(go.wait)
        t_start = time.perf_counter() + (start_at.value - time.time())
        rec = _Recorder(t_start + load.warmup_s, t_start + load.warmup_s + load.duration_s)
        cpu: list[float] = []

        async def cpu_probe() -> None:
            for t in (rec.t_measure, rec.t_end):
                await _sleep_until(t)
                cpu.append(time.process_time())

        probe = asyncio.create_task(cpu_probe())
        # Users join one by one over the warm-up: the queue fills gradually.
        starts = (t_start + load.warmup_s * i / users for i in range(users))
        await asyncio.gather(*(_user(session, load, rec, at) for at in starts))
        await probe
    finally:
        await session.close()
    rec.samples.cpu_s = cpu[1] - cpu[0]
    return rec.samples


def _client_main(load: TaskLoad, users: int, ready: Any, go: EventType, start_at: Any) -> None:
    """Entry point of one spawned client process."""
    run_client(0, ready, lambda: _run_share(load, users, ready, go, start_at))


def run_tasks(load: TaskLoad, *, label: str) -> TaskPoint:
    """One measurement over `load.processes` client processes, merged."""
    ctx = mp.get_context("spawn")
    messages: Any = ctx.Queue()
    go = ctx.Event()
    start_at: Any = ctx.Value("d", 0.0)
    shares = split(load.in_flight, load.processes)
    procs = [
        ctx.Process(target=_client_main, args=(load, n, messages, go, start_at), daemon=True)
        for n in shares
    ]
    for proc in procs:
        proc.start()
    try:
        collect_messages(messages, "ready", len(procs), timeout_s=120.0)
        start_at.value = time.time() + 0.2
        go.set()
        budget = load.warmup_s + load.duration_s + TASK_DEADLINE_S + 60.0
        results: list[TaskSamples] = collect_messages(
            messages, "result", len(procs), timeout_s=budget
        )
    finally:
        go.set()
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    return _point(label, load, results)


def _point(label: str, load: TaskLoad, results: list[TaskSamples]) -> TaskPoint:
    def summary(samples: list[list[float]]) -> RunSummary:
        workers = [
            WorkerResult(np.asarray(s, np.float64), r.errors, r.messages, load.duration_s, r.cpu_s)
            for s, r in zip(samples, results, strict=True)
        ]
        return summarize(
            label, workers, mode="closed", concurrency=load.in_flight, batch_size=load.rows
        )

    seen = summary([r.seen_s for r in results])
    queue_summary = summary([r.queue_s for r in results])
    return TaskPoint(seen, queue_summary, sum(r.polls for r in results))
