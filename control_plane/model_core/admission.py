"""At most `limit` predictions inside the model core at once; the most urgent enter first.

A replica at saturation is CPU-bound: requests wait in its event loop, and every
await point of a prediction (the Triton call, the coalescer) puts it back behind
all the others, so an urgent request waits as long as a low one. Admitting a
bounded number at a time, by priority, moves that wait into one queue that an
urgent request jumps: it then shares the loop with `limit` predictions instead
of every one in flight. An idle replica admits at once, so latency at low load
is unchanged.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class PriorityGate:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inside = 0
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()  # FIFO within a level

    @asynccontextmanager
    async def admitted(self, level: int) -> AsyncIterator[None]:
        """Inside the gate for the block; `level` 1 is the most urgent."""
        await self._enter(level)
        try:
            yield
        finally:
            self._leave()

    async def _enter(self, level: int) -> None:
        if self.inside < self.limit and not self._waiting:
            self.inside += 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (level, next(self._order), turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._leave()  # admitted just as the caller gave up: pass the place on
            raise

    def _leave(self) -> None:
        while self._waiting:
            _, _, turn = heapq.heappop(self._waiting)
            if not turn.done():
                turn.set_result(None)  # the place passes on: `inside` is unchanged
                return
        self.inside -= 1
