"""Per-key rate limits: one atomic Lua call (EVALSHA) per key and event-loop tick.

What a limit means and how it is counted is window.py's part (a bucketed sliding
window: never more than the limit in any period, constant memory per key).
Redis's own clock is used so replicas with skewed clocks agree. When Redis is
unreachable each process falls back to its own in-memory window (a warning,
rate-limited, a counter, and `fallback` in /inference/health); authentication
itself never depends on Redis.

Requests of one key that arrive in the same event-loop tick are counted by one
script call that admits as many of them as the window has room for: under load a
busy key costs one Redis round trip per tick instead of one per request, and
each request still gets its exact `X-RateLimit-Remaining`.

A refused key is remembered in-process until its window has room again: the
window frees its first slot only when its oldest bucket leaves it, so until
then every answer is "no" and needs no round trip (and the prediction fast lane
spends no Triton time on it).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from control_plane.core import metrics
from control_plane.core.errors import retry_after
from control_plane.core.setting_values import parse_rate
from control_plane.core.settings import default
from control_plane.ratelimit.lru import LRUDict
from control_plane.ratelimit.resp import PipelinedRedis
from control_plane.ratelimit.window import (
    SLIDING_WINDOW_LUA,
    SLIDING_WINDOW_SHA,
    WINDOW_BUCKETS,
    LocalWindows,
    WindowCount,
)

logger = logging.getLogger(__name__)

FALLBACK_METRIC = metrics.RATE_LIMIT_REDIS_FALLBACK

LimiterHealth = Literal["ok", "fallback", "not_configured"]


@dataclass(frozen=True)
class RateLimitResult:
    allowed: bool
    limit: int
    remaining: int
    reset_s: float  # until the oldest counted requests leave the window

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.reset_s)),
        }
        if not self.allowed:
            headers.update(retry_after(self.reset_s))
        return headers


def _answers(limit: int, count: WindowCount, wanted: int) -> list[RateLimitResult]:
    """One answer per request, in arrival order: each sees the ones before it."""
    return [
        RateLimitResult(
            i < count.admitted, limit, max(0, limit - count.counted - i - 1), count.reset_s
        )
        for i in range(wanted)
    ]


class RateLimiter:
    def __init__(
        self,
        redis: Redis | None,
        default_rate: str,
        fallback_rate: str,
        *,
        namespace: str = "default",
        retry_redis_after_s: float = default("rate_limit_redis_retry_s"),
        warn_every_s: float = default("rate_limit_warn_interval_s"),
        max_tracked_keys: int = default("rate_limit_max_tracked_keys"),
        redis_timeout_s: float = default("redis_timeout_s"),
    ) -> None:
        """Raises UnsupportedRedisURL when `redis` is reached in a way the hot path cannot."""
        self.redis = redis
        self.default_rate = default_rate
        self.fallback_rate = fallback_rate
        # Key ids are only unique within one database: deployments sharing a Redis
        # must not share counters.
        self._prefix = f"conch:ratelimit:{namespace}:"
        # The hot path uses its own pipelined connection (see resp.py), not redis-py's pool.
        self._connection = (
            PipelinedRedis.like(redis, timeout_s=redis_timeout_s) if redis is not None else None
        )
        self._local = LocalWindows(max_tracked_keys)
        self._refused_until: LRUDict[int, tuple[float, int]] = LRUDict(max_tracked_keys)
        # Requests counted together at the end of this tick: key id -> (rate, answers).
        self._waiting: dict[int, tuple[str | None, list[asyncio.Future[RateLimitResult]]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._redis_down_until = 0.0
        self._retry_after = retry_redis_after_s
        self._warn_every = warn_every_s
        self._last_warning = -math.inf

    def tracked_keys(self) -> int:
        """Keys this process holds state for (bounded by `max_tracked_keys` each)."""
        return len(self._refused_until) + len(self._local)

    def refused(self, key_id: int) -> RateLimitResult | None:
        """The answer for a key known to be over its limit, without asking Redis."""
        entry = self._refused_until.get(key_id)
        if entry is None:
            return None
        until, limit = entry
        left = until - time.monotonic()
        if left <= 0:
            self._refused_until.pop(key_id)
            return None
        return RateLimitResult(False, limit, 0, left)

    def hit(self, key_id: int, rate: str | None = None) -> asyncio.Future[RateLimitResult]:
        """Count one request; the answer arrives once this tick's requests are counted.

        A future rather than a coroutine: the prediction fast lane starts the check
        and awaits it after the prediction, without a task of its own.
        """
        future: asyncio.Future[RateLimitResult] = asyncio.get_running_loop().create_future()
        refused = self.refused(key_id)
        if refused is not None:
            metrics.RATE_LIMIT_LIMITED.inc()
            future.set_result(refused)
            return future
        waiting = self._waiting.get(key_id)
        if waiting is None:
            waiting = self._waiting[key_id] = (rate, [])
            asyncio.get_running_loop().call_soon(self._count_waiting, key_id)
        waiting[1].append(future)
        return future

    async def health(self) -> LimiterHealth:
        """`ok` when limits are shared through Redis right now, `fallback` when each
        process counts alone. Asked as requests ask it: the counting script over the hot
        path's own connection (a PING would pass where scripting is forbidden), for a
        key id no API key has, wanting nothing, so nothing is counted."""
        if self._connection is None:
            return "not_configured"
        try:
            await self._count_in_redis(0, 1, 1.0, 0)
        except (RedisError, OSError) as exc:
            self._redis_down(exc)
            return "fallback"
        self._redis_down_until = 0.0  # back: the next request counts in Redis again
        return "ok"

    def _count_waiting(self, key_id: int) -> None:
        rate, futures = self._waiting.pop(key_id)
        task = asyncio.create_task(self._answer(key_id, rate, futures))
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    async def _answer(
        self, key_id: int, rate: str | None, futures: list[asyncio.Future[RateLimitResult]]
    ) -> None:
        try:
            results = await self._count(key_id, rate, len(futures))
        except asyncio.CancelledError:  # shutting down: never leave a request waiting
            for future in futures:
                future.cancel()
            raise
        except Exception as exc:
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, result in zip(futures, results, strict=True):
            if not future.done():
                future.set_result(result)
        admitted = sum(result.allowed for result in results)
        metrics.RATE_LIMIT_ALLOWED.inc(admitted)
        metrics.RATE_LIMIT_LIMITED.inc(len(results) - admitted)
        refusal = results[-1]
        if not refusal.allowed:
            self._refused_until[key_id] = (time.monotonic() + refusal.reset_s, refusal.limit)

    async def _count(self, key_id: int, rate: str | None, wanted: int) -> list[RateLimitResult]:
        limit, period = parse_rate(rate or self.default_rate)
        if self._connection is not None and time.monotonic() >= self._redis_down_until:
            try:
                return _answers(
                    limit, await self._count_in_redis(key_id, limit, period, wanted), wanted
                )
            except (RedisError, OSError) as exc:
                self._redis_down(exc)
        FALLBACK_METRIC.inc(wanted)
        fallback_limit, fallback_period = parse_rate(rate or self.fallback_rate)
        count = self._local.count(key_id, fallback_limit, fallback_period, wanted)
        return _answers(fallback_limit, count, wanted)

    async def _count_in_redis(
        self, key_id: int, limit: int, period: float, wanted: int
    ) -> WindowCount:
        assert self._connection is not None
        # The period is part of the name: a key whose rate changes unit starts afresh
        # instead of reading buckets cut for another period.
        window = f"{self._prefix}{key_id}:{int(period)}"
        args = (window, limit, int(period * 1_000_000), WINDOW_BUCKETS, wanted)
        try:
            reply = await self._connection.call("EVALSHA", SLIDING_WINDOW_SHA, 1, *args)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            # First use on this server (or after SCRIPT FLUSH): send the script itself.
            reply = await self._connection.call("EVAL", SLIDING_WINDOW_LUA, 1, *args)
        admitted, counted, reset_us = reply
        return WindowCount(admitted, counted, reset_us / 1e6)

    async def aclose(self) -> None:
        if self._connection is not None:
            await self._connection.aclose()

    def _redis_down(self, exc: BaseException) -> None:
        # Do not pay a connect timeout on every request while Redis is down.
        self._redis_down_until = time.monotonic() + self._retry_after
        now = time.monotonic()
        if now - self._last_warning >= self._warn_every:
            self._last_warning = now
            where = self._connection.endpoint.describe() if self._connection else "Redis"
            logger.warning(
                "%s unreachable for rate limiting (%s): per-process fallback", where, exc
            )
