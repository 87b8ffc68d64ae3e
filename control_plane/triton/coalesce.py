"""Concurrent row requests for one model, merged into fewer Triton calls.

Triton's dynamic batcher merges requests on the server, but each one still costs
the control plane a gRPC call and Triton's frontend and Python backend stub a
request's worth of work. Under load the control plane merges them first: at most
`max_in_flight` calls per model are outstanding, and the rows of requests that
arrive meanwhile go out together in the next call (up to the model's
max_batch_size). An idle model adds nothing: a request that finds no queue and a
free call goes straight through, so latency at low concurrency is unchanged.

One coalescer serves one priority level (the gateway keys them so): an urgent
request never travels with low ones. The coalescers of one model share its
calls (`CallSlots`): a call that ends hands its slot to the most urgent
coalescer with rows waiting, so under load urgent rows overtake the queue of
low ones here, in the control plane, whether or not the model's config declares
Triton's priority levels. Requests with different deadlines (`timeout_s`) are
not merged either, so each Triton call has exactly its requests' deadline; as
before, a deadline counts from the call, not from the wait for a free one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

import numpy as np
import numpy.typing as npt

from control_plane.triton.http_infer import Tensors

# The Triton call: rows and their deadline (None: the gateway's).
Call = Callable[[npt.NDArray[np.generic], float | None], Awaitable[Tensors]]
# Rows, their answer, their deadline.
Waiting = tuple[npt.NDArray[np.generic], "asyncio.Future[Tensors]", float | None]


class CallSlots:
    """The Triton calls one model may have outstanding, shared by its coalescers;
    a freed slot goes to the most urgent of them with rows waiting."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._members: list[RowCoalescer] = []  # most urgent first

    def join(self, coalescer: RowCoalescer) -> None:
        self._members.append(coalescer)
        self._members.sort(key=lambda member: member.urgency)

    def take(self) -> bool:
        if self.used >= self.limit:
            return False
        self.used += 1
        return True

    def put_back(self) -> None:
        """A slot taken and not used: nobody waits who could use it."""
        self.used -= 1

    def release(self) -> None:
        self.used -= 1
        for member in self._members:
            if self.used >= self.limit:
                return
            member.dispatch()


class RowCoalescer:
    def __init__(
        self,
        call: Call,
        *,
        max_rows: int,
        max_in_flight: int = 1,
        slots: CallSlots | None = None,
        urgency: int = 0,
    ) -> None:
        """`slots` shared with the model's other coalescers (else `max_in_flight` of
        its own); `urgency` orders them for a freed slot, smallest first."""
        self._call = call
        self._max_rows = max_rows
        self.urgency = urgency
        self._slots = slots if slots is not None else CallSlots(max_in_flight)
        self._slots.join(self)
        self._queue: deque[Waiting] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls = 0  # Triton calls made (read by the tests)
        self.merged = 0  # requests that shared a call with others (read by the tests)

    async def submit(
        self, rows: npt.NDArray[np.generic], timeout_s: float | None = None
    ) -> Tensors:
        """The outputs for these rows (at most max_rows of them), within `timeout_s`."""
        if not self._queue and self._slots.take():
            self.calls += 1
            try:
                return await self._call(rows, timeout_s)
            finally:
                self._slots.release()
        future: asyncio.Future[Tensors] = asyncio.get_running_loop().create_future()
        self._queue.append((rows, future, timeout_s))
        self.dispatch()
        return await future

    def dispatch(self) -> None:
        while self._queue and self._slots.take():
            batch = self._take()
            if not batch:  # every waiting request was cancelled
                self._slots.put_back()
                return
            task = asyncio.create_task(self._run(batch))
            self._tasks.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[Waiting]:
        batch: list[Waiting] = []
        rows = 0
        while self._queue:
            entry = self._queue[0]
            if entry[1].done():  # its request was cancelled while it waited
                self._queue.popleft()
                continue
            if batch and (rows + len(entry[0]) > self._max_rows or entry[2] != batch[0][2]):
                break  # full, or a different deadline: the next call takes it
            batch.append(self._queue.popleft())
            rows += len(entry[0])
        return batch

    async def _run(self, batch: list[Waiting]) -> None:
        self.calls += 1
        if len(batch) > 1:
            self.merged += len(batch)
        try:
            rows = np.concatenate([entry[0] for entry in batch]) if len(batch) > 1 else batch[0][0]
            outputs = await self._call(rows, batch[0][2])
        except asyncio.CancelledError:  # shutting down: nobody waits forever
            for _, future, _ in batch:
                future.cancel()
            raise
        except Exception as exc:  # every request of the call gets the call's error
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            offset = 0
            for entry_rows, future, _ in batch:
                size = len(entry_rows)
                if not future.done():
                    future.set_result({k: v[offset : offset + size] for k, v in outputs.items()})
                offset += size
        finally:
            self._slots.release()
