"""The load generator: N client processes, each one asyncio loop, merged percentiles.

Closed loop keeps `concurrency` requests in flight (split over the processes).
Open loop sends at a fixed total `rate` and measures each latency from the
*scheduled* send time, so a stalled server is charged for the requests it delayed
(no coordinated omission). Processes start together on a shared wall-clock
instant; requests sent during the warm-up are discarded. Each process reports
its CPU use during the window: one near 1.0 (a full core) means the client, not
the server, may be the limit, so add processes.

Client processes are spawned (not forked: gRPC's threads do not survive a fork),
so a script calling `run_load` needs the usual `if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import queue
import time
import traceback
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from multiprocessing.synchronize import Event as EventType
from typing import Any, Literal

import numpy as np

from conch_bench.doors import Door, open_door
from conch_bench.stats import RunSummary, WorkerResult, summarize
from conch_bench.targets import Target

Mode = Literal["closed", "open"]
_MAX_ERROR_MESSAGES = 5


@dataclass(frozen=True)
class LoadSpec:
    mode: Mode = "closed"
    concurrency: int = 1  # closed loop: requests in flight, all processes together
    rate: float = 0.0  # open loop: requests per second, all processes together
    duration_s: float = 10.0
    warmup_s: float = 2.0
    processes: int = 1
    max_in_flight: int = 2048  # open loop, per process: beyond it sends are dropped
    poisson: bool = False  # open loop: exponential gaps instead of a fixed interval
    drain_s: float = 10.0  # open loop: wait this long for late answers after the window


@dataclass(frozen=True)
class _Share:
    index: int
    concurrency: int
    rate: float


class LoadError(RuntimeError):
    """The load generator itself failed (not the server under test)."""


def split(total: int, parts: int) -> list[int]:
    """Spread `total` over `parts` as evenly as possible, dropping empty parts."""
    parts = max(1, min(parts, total)) if total > 0 else 1
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


class _Recorder:
    """Per-process measurements; only requests sent inside the window count."""

    def __init__(self, t_measure: float, t_end: float) -> None:
        self.t_measure = t_measure
        self.t_end = t_end
        self.latencies: list[float] = []
        self.errors = 0
        self.messages: list[str] = []
        self.max_lag = 0.0
        self.dropped = 0
        self.late: list[float] = []
        self.last_done = t_end

    def error(self, sent: float, exc: BaseException) -> None:
        if sent < self.t_measure:
            return
        self.errors += 1
        if len(self.messages) < _MAX_ERROR_MESSAGES:
            self.messages.append(f"{type(exc).__name__}: {exc}"[:300])


async def _sleep_until(t: float) -> None:
    delay = t - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)
    # asyncio may wake a timer up to its clock resolution early; a request sent
    # before the window opens would then be dropped from the count.
    rest = t - time.perf_counter()
    if rest > 0:
        await asyncio.sleep(rest)


async def _closed_user(door: Door, rec: _Recorder, t_start: float) -> None:
    await _sleep_until(t_start)
    while (sent := time.perf_counter()) < rec.t_end:
        try:
            await door.call()
        except Exception as exc:  # every failure is a measured error, never a crash
            rec.error(sent, exc)
            continue
        done = time.perf_counter()
        if sent < rec.t_measure:
            continue
        if done <= rec.t_end:
            rec.latencies.append(done - sent)
        else:
            rec.late.append(done - sent)  # answered after the cut: in the tail, not the rate


async def _open_sender(
    door: Door, rec: _Recorder, spec: LoadSpec, rate: float, t_start: float
) -> None:
    rng = np.random.default_rng()
    in_flight: set[asyncio.Task[None]] = set()

    async def one(scheduled: float) -> None:
        try:
            await door.call()
        except Exception as exc:
            rec.error(scheduled, exc)
            return
        done = time.perf_counter()
        if scheduled >= rec.t_measure:
            # Measured from the schedule, not from when the send actually happened.
            rec.latencies.append(done - scheduled)
            rec.last_done = max(rec.last_done, done)

    scheduled = t_start
    behind = 0
    while scheduled < rec.t_end:
        await _sleep_until(scheduled)
        lag = time.perf_counter() - scheduled
        if scheduled >= rec.t_measure:
            rec.max_lag = max(rec.max_lag, lag)
        if len(in_flight) >= spec.max_in_flight:
            rec.dropped += scheduled >= rec.t_measure
        else:
            task = asyncio.create_task(one(scheduled))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        scheduled += rng.exponential(1.0 / rate) if spec.poisson else 1.0 / rate
        # Behind schedule, the loop would never yield: let the requests run.
        behind = behind + 1 if lag > 0 else 0
        if behind and behind % 32 == 0:
            await asyncio.sleep(0)
    if in_flight:
        _, pending = await asyncio.wait(in_flight, timeout=spec.drain_s)
        for task in pending:
            task.cancel()
            rec.error(rec.t_measure, TimeoutError(f"no answer {spec.drain_s:.0f}s after the run"))


async def _run_share(
    target: Target, spec: LoadSpec, share: _Share, ready: Any, go: EventType, start_at: Any
) -> WorkerResult:
    # Open loop: connections are capped at 256 per process; beyond that requests
    # queue in the client, and the wait is still charged to their latency.
    door = open_door(target, max(share.concurrency, 1) if spec.mode == "closed" else 256)
    try:
        ready.put(("ready", share.index, ""))
        await asyncio.to_thread(go.wait)
        # Shared wall-clock start, mapped onto this process's monotonic clock.
        t_start = time.perf_counter() + (start_at.value - time.time())
        rec = _Recorder(t_start + spec.warmup_s, t_start + spec.warmup_s + spec.duration_s)
        cpu: list[float] = []

        async def cpu_probe() -> None:
            await _sleep_until(rec.t_measure)
            cpu.append(time.process_time())
            await _sleep_until(rec.t_end)
            cpu.append(time.process_time())

        probe = asyncio.create_task(cpu_probe())
        if spec.mode == "closed":
            users = [_closed_user(door, rec, t_start) for _ in range(share.concurrency)]
            await asyncio.gather(*users)
        else:
            await _open_sender(door, rec, spec, share.rate, t_start)
        await probe
    finally:
        await door.close()
    window = spec.duration_s
    if spec.mode == "open":
        window = max(window, rec.last_done - rec.t_measure)
    return WorkerResult(
        latencies_s=np.asarray(rec.latencies, dtype=np.float64),
        errors=rec.errors,
        error_messages=rec.messages,
        window_s=window,
        cpu_s=cpu[1] - cpu[0],
        max_send_lag_s=rec.max_lag,
        dropped=rec.dropped,
        late_s=np.asarray(rec.late, dtype=np.float64),
    )


def run_client(index: int, ready: Any, work: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    """The body of a spawned client process: `work()` on one event loop (uvloop's where
    installed), its result or its traceback sent on `ready` as client `index`'s."""
    try:
        try:
            import uvloop

            runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        except ImportError:
            runner = asyncio.Runner()
        with runner:
            result = runner.run(work())
        ready.put(("result", index, result))
    except BaseException:
        ready.put(("failed", index, traceback.format_exc(limit=8)))


def _worker_main(
    target: Target, spec: LoadSpec, share: _Share, ready: Any, go: EventType, start_at: Any
) -> None:
    """Entry point of one spawned client process."""
    run_client(share.index, ready, lambda: _run_share(target, spec, share, ready, go, start_at))


def run_load(target: Target, spec: LoadSpec, *, label: str = "", batch_size: int = 1) -> RunSummary:
    """Run one measurement and merge the processes' samples."""
    if spec.mode == "closed":
        counts = split(spec.concurrency, spec.processes)
        shares = [_Share(i, c, 0.0) for i, c in enumerate(counts)]
    else:
        if spec.rate <= 0:
            raise ValueError("open loop needs a rate > 0")
        n = max(1, spec.processes)
        shares = [_Share(i, 0, spec.rate / n) for i in range(n)]
    ctx = mp.get_context("spawn")
    messages: Any = ctx.Queue()
    go = ctx.Event()
    start_at: Any = ctx.Value("d", 0.0)
    procs = [
        ctx.Process(
            target=_worker_main, args=(target, spec, s, messages, go, start_at), daemon=True
        )
        for s in shares
    ]
    for proc in procs:
        proc.start()
    try:
        collect_messages(messages, "ready", len(procs), timeout_s=120.0)
        start_at.value = time.time() + 0.2
        go.set()
        budget = spec.warmup_s + spec.duration_s + spec.drain_s + 60.0
        results = collect_messages(messages, "result", len(procs), timeout_s=budget)
    finally:
        go.set()
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    return summarize(
        label or getattr(target, "door", "target"),
        results,
        mode=spec.mode,
        concurrency=spec.concurrency if spec.mode == "closed" else 0,
        rate=spec.rate if spec.mode == "open" else None,
        batch_size=batch_size,
    )


def collect_messages(messages: Any, kind: str, count: int, *, timeout_s: float) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    items: list[Any] = []
    while len(items) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LoadError(f"client processes sent {len(items)}/{count} {kind!r} in time")
        with contextlib.suppress(queue.Empty):
            tag, index, payload = messages.get(timeout=min(remaining, 1.0))
            if tag == "failed":
                raise LoadError(f"client process {index} failed:\n{payload}")
            if tag == kind:
                items.append(payload)
    return items
