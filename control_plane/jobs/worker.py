"""A replica's share of the async work: take tasks, run them, finish them, take over.

Each replica runs one `TaskWorker` with up to `task_workers` tasks at a time.
It takes the highest level that has work (every `starvation_every`-th take
starts from the lowest, so low still moves under constant high load), starts the
tasks taken together in one round trip (`TaskQueue.start_many`, which answers
their fields too), runs their predictions concurrently through the model core at
each task's Triton priority (the core's coalescer merges their rows into shared
Triton calls), and records the outcomes of tasks that finish together in one
round trip (`_Finisher`). While a task runs its stream entry is renewed every third of
`task_claim_after_s`; an entry not renewed that long belongs to a replica that
died, and any live replica takes it over (`TaskQueue.take_over`). A task's
outcome is recorded by one replica only (`TaskQueue.finish`), which then
delivers its callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from control_plane.core import metrics
from control_plane.core.errors import ServiceUnavailableError, error_body
from control_plane.jobs import task_metrics
from control_plane.jobs.queue import (
    LEVELS,
    MAX_DELIVERIES,
    Outcome,
    Started,
    TakenTask,
    TaskQueue,
)

logger = logging.getLogger(__name__)

# The task's stored fields -> its result (raises a Conch error for a failure).
RunTask = Callable[[Mapping[str, str]], Awaitable[dict[str, Any]]]
# Called once per task, by the replica that recorded its outcome.
AfterFinish = Callable[[Mapping[str, str], str, dict[str, Any]], Coroutine[Any, Any, None]]

_BLOCK_MS = 1000  # a blocked read returns this often, so that stop() is prompt
_RETRY_MIN_S, _RETRY_MAX_S = 0.2, 5.0  # after a Redis failure
_TAKE_SHARE = 4  # while tasks run, take when this share of the slots is free


def consumer_name() -> str:
    """Unique per process start: a restarted replica never owns its old entries."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class TaskWorker:
    def __init__(
        self,
        queue: TaskQueue,
        run_task: RunTask,
        *,
        concurrency: int,
        claim_after_s: float,
        starvation_every: int,
        after_finish: AfterFinish | None = None,
    ) -> None:
        self.queue = queue
        self.consumer = consumer_name()
        self._run_task = run_task
        self._after_finish = after_finish
        self._concurrency = concurrency
        self._claim_after_s = claim_after_s
        self._starvation_every = starvation_every
        self._takes = 0
        self._running: dict[str, tuple[TakenTask, asyncio.Task[None]]] = {}
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._followups: set[asyncio.Task[None]] = set()
        self._finisher = _Finisher(queue, self.consumer)

    def start(self) -> None:
        if self._concurrency > 0 and not self._loops:
            self._loops = [
                asyncio.create_task(self._take_loop(), name="conch-task-take"),
                asyncio.create_task(self._maintain_loop(), name="conch-task-maintain"),
            ]

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop taking; give running tasks `grace_s` to finish. What is cut off stays
        pending in Redis and another replica takes it over.

        The loops are asked to stop and end within a blocked read's time; only then
        cancelled. A cancellation alone can be lost: redis-py wraps reads and writes
        in `asyncio.wait_for`, which on Python 3.11 drops a cancel that arrives as the
        command completes, and the app's shutdown then waited forever."""
        self._stopping.set()
        self._slot_freed.set()
        if self._loops:
            _, stuck = await asyncio.wait(self._loops, timeout=_BLOCK_MS / 1000 + 1.0)
            for loop in stuck:
                loop.cancel()
            if stuck:
                await asyncio.wait(stuck, timeout=1.0)
        self._loops = []
        running = [task for _, task in self._running.values()]
        if running:
            _, late = await asyncio.wait(running, timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        await self._finisher.drain(grace_s)
        if self._followups:
            await asyncio.wait(self._followups, timeout=grace_s)
            for followup in list(self._followups):
                followup.cancel()

    @property
    def running(self) -> int:
        return len(self._running)

    # --- taking ---------------------------------------------------------------

    def _levels(self) -> tuple[str, ...]:
        self._takes += 1
        starving = self._takes % self._starvation_every == 0
        return LEVELS[::-1] if starving else LEVELS

    async def _take_loop(self) -> None:
        await self._retrying(self.queue.ensure_groups)
        delay = _RETRY_MIN_S
        while not self._stopping.is_set():
            free = self._concurrency - len(self._running)
            if free < self._batch_wanted():
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                taken = await self.queue.take(
                    self.consumer, free, self._levels(), block_ms=_BLOCK_MS
                )
            except Exception as exc:  # Redis away: wait and try again
                logger.warning("taking async tasks failed: %s (again in %.1fs)", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
                continue
            delay = _RETRY_MIN_S
            self._launch(taken)

    def _batch_wanted(self) -> int:
        """Free slots to wait for before taking: under load slots free one by one, and
        a take (a read per level) with its START costs the same for one task as for
        several; with nothing running, one."""
        return max(1, self._concurrency // _TAKE_SHARE) if self._running else 1

    async def _maintain_loop(self) -> None:
        """Renew what runs here; take over what a dead replica left."""
        period = self._claim_after_s / 3
        idle_ms = int(self._claim_after_s * 1000)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=period)
            if self._stopping.is_set():
                return
            try:
                running = [taken for taken, _ in self._running.values()]
                if running:
                    await self.queue.renew(self.consumer, running)
                free = self._concurrency - len(self._running)
                if free > 0:
                    taken = await self.queue.take_over(self.consumer, idle_ms, free)
                    for task in taken:
                        if task.entry not in self._running:  # else its own, renewed late
                            metrics.TASK_REDELIVERIES.inc()
                        logger.info("taking over task %s (its replica stopped)", task.task_id)
                    self._launch(taken)
            except Exception as exc:
                logger.warning("renewing or taking over async tasks failed: %s", exc)

    async def _retrying(self, step: Callable[[], Awaitable[None]]) -> None:
        delay = _RETRY_MIN_S
        while not self._stopping.is_set():
            try:
                await step()
                return
            except Exception as exc:
                logger.warning("async task queue not ready: %s (again in %.1fs)", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)

    def _launch(self, taken: list[TakenTask]) -> None:
        """Start the tasks taken together (one round trip), each then run on its own."""
        fresh = [task for task in taken if task.entry not in self._running]
        if not fresh:
            return  # a takeover of entries this replica already runs
        started = asyncio.ensure_future(self.queue.start_many(self.consumer, fresh))
        for index, one in enumerate(fresh):
            task = asyncio.create_task(
                self._run(one, started, index), name=f"conch-task-{one.task_id}"
            )
            self._running[one.entry] = (one, task)
            task.add_done_callback(self._freed(one))

    def _freed(self, taken: TakenTask) -> Callable[[asyncio.Task[None]], None]:
        def done(_: asyncio.Task[None]) -> None:
            self._running.pop(taken.entry, None)
            self._slot_freed.set()

        return done

    # --- running ----------------------------------------------------------------

    async def _run(
        self, taken: TakenTask, started: asyncio.Future[list[Started]], index: int
    ) -> None:
        try:
            # Shielded: a task cancelled while its batch starts must not cancel the others'.
            start = (await asyncio.shield(started))[index]
            if start.outcome not in ("run", "exhausted"):
                return  # cancelled, finished by another replica, or expired
            task = start.task
            status, value = await self._outcome(task, exhausted=start.outcome == "exhausted")
            if await self._finisher.finish(Outcome(taken, task["key_id"], status, value)):
                self._follow_up(task, status, value)
                task_metrics.task_finished(task, status)
        except asyncio.CancelledError:
            raise  # stopping: the entry stays pending for another replica
        except Exception:
            # Redis failed between steps: the entry stays pending and is taken over.
            logger.exception("async task %s interrupted", taken.task_id)

    async def _outcome(
        self, task: Mapping[str, str], *, exhausted: bool
    ) -> tuple[str, dict[str, Any]]:
        if exhausted:
            error = ServiceUnavailableError(
                f"the task was taken {MAX_DELIVERIES} times by replicas that stopped before "
                "finishing it",
                task_id=task["task_id"],
            )
            return "failed", error_body(error)
        try:
            return "completed", await self._run_task(task)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the error body, as the synchronous door answers it
            return "failed", error_body(exc)

    def _follow_up(self, task: Mapping[str, str], status: str, value: dict[str, Any]) -> None:
        if self._after_finish is None:
            return
        followup = asyncio.create_task(self._after_finish(task, status, value))
        self._followups.add(followup)
        followup.add_done_callback(self._followups.discard)
        followup.add_done_callback(_log_failure)


class _Finisher:
    """Outcomes recorded together: the first goes at once, and those that arrive while
    a FINISH call is under way go in the next one (tasks whose rows shared a Triton
    call finish together). Each task is still recorded once, by its own check in the
    script (`TaskQueue.finish_many`)."""

    def __init__(self, queue: TaskQueue, consumer: str) -> None:
        self._queue = queue
        self._consumer = consumer
        self._waiting: list[tuple[Outcome, asyncio.Future[bool]]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def finish(self, outcome: Outcome) -> bool:
        recorded: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((outcome, recorded))
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush(), name="conch-task-finish")
        return await recorded

    async def _flush(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    flags = await self._queue.finish_many(self._consumer, [o for o, _ in batch])
                except Exception as exc:
                    for _, recorded in batch:
                        if not recorded.done():
                            recorded.set_exception(exc)
                    continue
                for (_, recorded), flag in zip(batch, flags, strict=True):
                    if not recorded.done():  # its task may have been cancelled meanwhile
                        recorded.set_result(flag)
        finally:
            self._flushing = None

    async def drain(self, timeout_s: float) -> None:
        if self._flushing is not None:
            await asyncio.wait([self._flushing], timeout=timeout_s)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("after an async task finished", exc_info=task.exception())
