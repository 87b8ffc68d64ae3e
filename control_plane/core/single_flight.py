"""Concurrent loads of one key share one call.

The replica's caches (verified keys, model handles, project routes) expire after
a TTL. Under load, every request that arrives while the first miss is being read
from SQL misses too: at concurrency 64 that was 64 SQL sessions for one row, and
every request in flight waited for the pool (a stall of 150-500 ms at each
expiry, and on the first burst after an idle spell). With a flight per key the
first miss reads SQL and the others await its answer.

An invalidation (a revocation, a deletion) calls `detach`: loads already running
finish for the callers that joined them, as a load that started before the event
would have, but a caller that arrives after it starts a fresh load.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._running: dict[K, asyncio.Task[V]] = {}

    async def load(self, key: K, loader: Callable[[], Coroutine[Any, Any, V]]) -> V:
        task = self._running.get(key)
        if task is None:
            task = asyncio.create_task(loader())
            self._running[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        # Shielded: one caller cancelled (its client left) must not fail the others.
        return await asyncio.shield(task)

    def _finished(self, key: K, task: asyncio.Task[V]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # retrieved: every caller may have left before it ended

    def detach(self, key: K | None = None) -> None:
        """Later callers of `key` (of every key when None) start a fresh load."""
        if key is None:
            self._running.clear()
        else:
            self._running.pop(key, None)

    def __len__(self) -> int:
        return len(self._running)
