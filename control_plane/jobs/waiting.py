"""Polls that wait for a task to finish: `GET .../async/{task_id}?wait_ms=N`.

One Pub/Sub subscription per replica, to the queue's `finished` channel: the
FINISH and CANCEL scripts publish the ids of the tasks they end, whichever
replica ran them, and every waiting request of this replica for one of them is
woken. A waiting request holds an asyncio event, not a Redis connection; it
reads the task when woken, at its deadline, and every `SUBSCRIBED_RECHECK_S`
in case a message was lost. While the subscription is down (Redis restarting)
waiters re-read the task every `UNSUBSCRIBED_RECHECK_S` instead, and every one
re-reads when the subscription is made again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from redis.asyncio import Redis

from control_plane.jobs.queue import text

logger = logging.getLogger(__name__)

MAX_WAIT_MS = 30_000  # the longest wait a poll may ask for
SUBSCRIBED_RECHECK_S = 1.0  # a message lost (or a replica that does not publish) costs this
UNSUBSCRIBED_RECHECK_S = 0.05
_READ_S = 1.0  # a listen returns this often, so that stop() is prompt
_RETRY_MIN_S, _RETRY_MAX_S = 0.2, 5.0


class TaskWaiters:
    def __init__(self, redis: Redis, channel: str) -> None:
        """`redis`: a client without a read timeout (the subscription idles by design)."""
        self._redis = redis
        self._channel = channel
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self._subscribed = False
        self._stopping = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None

    @property
    def subscribed(self) -> bool:
        return self._subscribed

    def waiting(self, task_id: str) -> int:
        """Requests of this replica waiting for `task_id` now."""
        return len(self._waiting.get(task_id, ()))

    @property
    def recheck_s(self) -> float:
        """How long a waiter may wait before reading the task again."""
        return SUBSCRIBED_RECHECK_S if self._subscribed else UNSUBSCRIBED_RECHECK_S

    @contextlib.contextmanager
    def watching(self, task_id: str) -> Iterator[asyncio.Event]:
        """An event set when `task_id` finishes (or when the subscription changes),
        from entering until leaving: enter before reading the task, so that a finish
        right after the read is not missed."""
        event = asyncio.Event()
        self._waiting.setdefault(task_id, set()).add(event)
        try:
            yield event
        finally:
            events = self._waiting.get(task_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._waiting[task_id]

    def start(self) -> None:
        if self._loop is None:
            self._loop = asyncio.create_task(self._listen(), name="conch-task-waiters")

    async def stop(self) -> None:
        self._stopping.set()
        if self._loop is not None:
            _, stuck = await asyncio.wait([self._loop], timeout=_READ_S + 1.0)
            for loop in stuck:  # a read that ignored the timeout: see TaskWorker.stop
                loop.cancel()
            self._loop = None

    def _wake(self, task_id: str) -> None:
        for event in self._waiting.get(task_id, ()):
            event.set()

    def _wake_all(self) -> None:
        for events in self._waiting.values():
            for event in events:
                event.set()

    def _set_subscribed(self, subscribed: bool) -> None:
        if subscribed != self._subscribed:
            self._subscribed = subscribed
            self._wake_all()  # read now; and wait as long as `recheck_s` now says

    async def _listen(self) -> None:
        delay = _RETRY_MIN_S
        while not self._stopping.is_set():
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel)
                    while not self._stopping.is_set():
                        message = await pubsub.get_message(timeout=_READ_S)
                        if message is None:
                            continue
                        if message["type"] == "subscribe":
                            self._set_subscribed(True)
                            delay = _RETRY_MIN_S
                        elif message["type"] == "message":
                            for task_id in text(message["data"]).split():
                                self._wake(task_id)
            except Exception as exc:  # Redis away: poll meanwhile, subscribe again
                logger.warning("task completions unsubscribed: %s (again in %.1fs)", exc, delay)
            finally:
                self._set_subscribed(False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
            delay = min(delay * 2, _RETRY_MAX_S)
