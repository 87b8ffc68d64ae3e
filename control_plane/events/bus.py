"""Publish events after commit; listen on every replica and dispatch by event type."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, get_args

import pydantic
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.core import metrics
from control_plane.core.settings import default
from control_plane.core.tasks import cancel_and_wait
from control_plane.events.schemas import BaseEvent, Event, EventAdapter

logger = logging.getLogger(__name__)

# How long one wait for a Pub/Sub message lasts: the longest a stop can wait for the
# listener when redis-py loses its cancellation.
_LISTEN_POLL_S = 1.0

# Every event type's series exists from the start (at 0): dashboards and alerts see it.
for _type in (member.model_fields["type"].default for member in get_args(get_args(Event)[0])):
    metrics.EVENTS_PUBLISHED.labels(_type)
    metrics.EVENTS_RECEIVED.labels(_type)

Handler = Callable[[Any], Awaitable[None]]

# Events queued on a session are published by the session dependency after commit.
_PENDING = "conch_pending_events"


def publish_after_commit(session: AsyncSession, event: BaseEvent) -> None:
    session.info.setdefault(_PENDING, []).append(event)


def take_pending(session: AsyncSession) -> list[BaseEvent]:
    events: list[BaseEvent] = session.info.pop(_PENDING, [])
    return events


class EventBus:
    """One per app: a dispatcher keyed by event type plus the Pub/Sub listener task."""

    def __init__(
        self,
        redis: Redis | None,
        channel: str,
        *,
        publish_timeout_s: float = default("events_publish_timeout_s"),
        reconnect_min_s: float = default("events_reconnect_min_s"),
        reconnect_max_s: float = default("events_reconnect_max_s"),
        dedupe_size: int = default("events_dedupe_size"),
    ) -> None:
        self.redis = redis
        self.channel = channel
        self._publish_timeout = publish_timeout_s
        # The listener's wait after losing Redis doubles from min to max.
        self._reconnect_min = reconnect_min_s
        self._reconnect_max = reconnect_max_s
        # Event ids remembered to drop duplicate deliveries.
        self._dedupe_size = dedupe_size
        self._handlers: dict[str, list[Handler]] = defaultdict(list)
        self._on_subscribe: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._seen: OrderedDict[uuid.UUID, None] = OrderedDict()
        self.subscribed = asyncio.Event()

    def on(self, event_type: str, handler: Handler) -> None:
        self._handlers[event_type].append(handler)

    def is_current(self) -> bool:
        """Whether events from other replicas reach us now. Caches that rely on events
        for freshness stop caching while it is False (Redis down, listener reconnecting)."""
        return self.redis is None or self.subscribed.is_set()

    def on_subscribe(self, callback: Callable[[], None]) -> None:
        """Called on every (re)subscription: events sent while disconnected are lost."""
        self._on_subscribe.append(callback)

    async def dispatch(self, event: Event | BaseEvent) -> None:
        # The publisher dispatches locally and then hears its own event from Redis: once.
        if event.event_id in self._seen:
            metrics.EVENTS_DUPLICATES.inc()
            return
        self._seen[event.event_id] = None
        if len(self._seen) > self._dedupe_size:
            self._seen.popitem(last=False)
        event_type = getattr(event, "type", "")
        for handler in self._handlers.get(event_type, []):
            try:
                await handler(event)
            except Exception:  # one bad handler must not stop the others or the listener
                metrics.EVENTS_HANDLER_ERRORS.inc()
                logger.exception("event handler failed for %s", event)

    async def publish(self, event: BaseEvent) -> None:
        # Local first: this replica must not depend on Redis to see its own change.
        await self.dispatch(event)
        if self.redis is None:
            return
        try:
            await asyncio.wait_for(
                self.redis.publish(self.channel, event.model_dump_json()),
                timeout=self._publish_timeout,
            )
            metrics.EVENTS_PUBLISHED.labels(getattr(event, "type", "")).inc()
        except (RedisError, OSError, TimeoutError) as exc:
            metrics.EVENTS_PUBLISH_ERRORS.inc()
            logger.warning("could not publish %s: %s", getattr(event, "type", "?"), exc)

    def start(self) -> None:
        if self.redis is not None and self._task is None:
            self._task = asyncio.create_task(self._listen(), name="conch-event-listener")

    async def stop(self) -> None:
        task, self._task = self._task, None
        # redis-py can swallow a cancellation that lands in a pending Pub/Sub read (seen
        # at shutdown: the task stays "cancelling" forever); the listener polls, so with
        # `_stopping` set it ends by itself within a poll even then.
        self._stopping = True
        await cancel_and_wait(task)

    async def _listen(self) -> None:
        assert self.redis is not None
        backoff = self._reconnect_min
        while True:
            try:
                async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    for callback in self._on_subscribe:
                        callback()
                    self.subscribed.set()
                    metrics.EVENTS_SUBSCRIPTIONS.inc()
                    logger.info("event listener subscribed to %s", self.channel)
                    backoff = self._reconnect_min
                    while not self._stopping:
                        message = await pubsub.get_message(timeout=_LISTEN_POLL_S)
                        if message is not None:
                            await self._handle(message)
                    return
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self.subscribed.clear()
                metrics.EVENTS_LISTENER_RECONNECTS.inc()
                logger.warning("event listener lost Redis (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._reconnect_max)
                if self._stopping:
                    return

    async def _handle(self, message: dict[str, Any]) -> None:
        if message.get("type") != "message":
            return
        try:
            event = EventAdapter.validate_json(message["data"])
        except pydantic.ValidationError:
            metrics.EVENTS_MALFORMED.inc()
            logger.warning("ignoring malformed or unknown event on %s", self.channel)
            return
        metrics.EVENTS_RECEIVED.labels(event.type).inc()
        logger.debug("event %s %s", event.type, event.event_id)
        await self.dispatch(event)
