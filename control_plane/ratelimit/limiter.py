"""Sliding-log rate limiter: one atomic Lua call (EVALSHA) per key and event-loop tick.

A sliding log is exact ("the 101st request within any 60 s is refused"),
unlike GCRA or fixed windows, at the cost of one sorted-set member per
admitted request, which is small for per-key limits of this size. Redis's own
clock is used so replicas with skewed clocks agree. When Redis is unreachable
each process falls back to its own in-memory log (a warning, rate-limited, and
a counter); authentication itself never depends on Redis.

Requests of one key that arrive in the same event-loop tick are counted by one
script call that admits as many of them as the window has room for: under load a
busy key costs one Redis round trip per tick instead of one per request, and
each request still gets its exact `X-RateLimit-Remaining`.

A refused key is remembered in-process until its window has room again: the
sliding log frees its first slot only when the oldest counted request leaves
the window, so until then every answer is "no" and needs no round trip (and the
prediction fast lane spends no Triton time on it).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
import uuid
from collections import deque
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from control_plane.core import metrics
from control_plane.core.settings import parse_rate
from control_plane.ratelimit.resp import PipelinedRedis

logger = logging.getLogger(__name__)

FALLBACK_METRIC = "rate_limit_redis_fallback_total"

# ARGV: limit, period in µs, a unique id, how many requests want in.
# Returns {admitted, counted before them, µs until the oldest counted one leaves}.
_SLIDING_LOG = """
local limit = tonumber(ARGV[1])
local period_us = tonumber(ARGV[2])
local wanted = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period_us)
local count = redis.call('ZCARD', KEYS[1])
local admitted = math.max(0, math.min(wanted, limit - count))
for i = 1, admitted do
  redis.call('ZADD', KEYS[1], now, ARGV[3] .. ':' .. i)
end
if admitted > 0 then
  redis.call('PEXPIRE', KEYS[1], math.ceil(period_us / 1000))
end
local reset_us = period_us
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if oldest[2] then reset_us = tonumber(oldest[2]) + period_us - now end
return {admitted, count, reset_us}
"""
_SLIDING_LOG_SHA = hashlib.sha1(_SLIDING_LOG.encode()).hexdigest()


@dataclass(frozen=True)
class RateLimitResult:
    allowed: bool
    limit: int
    remaining: int
    reset_s: float  # until the oldest counted request leaves the window

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.reset_s)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.reset_s)))
        return headers


class LocalSlidingLog:
    """Per-process fallback; only consulted while Redis is unreachable."""

    def __init__(self) -> None:
        self._logs: dict[str, deque[float]] = {}

    def hit(self, key: str, limit: int, period: float) -> RateLimitResult:
        now = time.monotonic()
        log = self._logs.setdefault(key, deque())
        while log and log[0] <= now - period:
            log.popleft()
        reset = (log[0] + period - now) if log else period
        if len(log) >= limit:
            return RateLimitResult(False, limit, 0, reset)
        log.append(now)
        return RateLimitResult(True, limit, limit - len(log), reset)


class RateLimiter:
    def __init__(
        self,
        redis: Redis | None,
        default_rate: str,
        fallback_rate: str,
        *,
        namespace: str = "default",
        retry_redis_after_s: float = 2.0,
        warn_every_s: float = 30.0,
    ) -> None:
        self.redis = redis
        self.default_rate = default_rate
        self.fallback_rate = fallback_rate
        # Key ids are only unique within one database: deployments sharing a Redis
        # must not share counters.
        self._prefix = f"conch:ratelimit:{namespace}:"
        # The hot path uses its own pipelined connection (see resp.py), not redis-py's pool.
        self._connection = PipelinedRedis.like(redis) if redis is not None else None
        self._local = LocalSlidingLog()
        self._refused_until: dict[int, tuple[float, int]] = {}  # key id -> (until, limit)
        # Requests counted together at the end of this tick: key id -> (rate, answers).
        self._waiting: dict[int, tuple[str | None, list[asyncio.Future[RateLimitResult]]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._redis_down_until = 0.0
        self._retry_after = retry_redis_after_s
        self._warn_every = warn_every_s
        self._last_warning = -math.inf

    def refused(self, key_id: int) -> RateLimitResult | None:
        """The answer for a key known to be over its limit, without asking Redis."""
        entry = self._refused_until.get(key_id)
        if entry is None:
            return None
        until, limit = entry
        left = until - time.monotonic()
        if left <= 0:
            del self._refused_until[key_id]
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
            future.set_result(refused)
            return future
        waiting = self._waiting.get(key_id)
        if waiting is None:
            waiting = self._waiting[key_id] = (rate, [])
            asyncio.get_running_loop().call_soon(self._count_waiting, key_id)
        waiting[1].append(future)
        return future

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
        refusal = results[-1]
        if not refusal.allowed:
            self._refused_until[key_id] = (time.monotonic() + refusal.reset_s, refusal.limit)

    async def _count(self, key_id: int, rate: str | None, wanted: int) -> list[RateLimitResult]:
        limit, period = parse_rate(rate or self.default_rate)
        if self._connection is not None and time.monotonic() >= self._redis_down_until:
            try:
                admitted, counted, reset_us = await self._sliding_log(
                    f"{self._prefix}{key_id}", limit, int(period * 1_000_000), wanted
                )
                reset_s = reset_us / 1e6
                return [
                    RateLimitResult(i < admitted, limit, max(0, limit - counted - i - 1), reset_s)
                    for i in range(wanted)
                ]
            except (RedisError, OSError) as exc:
                # Do not pay a connect timeout on every request while Redis is down.
                self._redis_down_until = time.monotonic() + self._retry_after
                self._warn(exc)
        metrics.increment(FALLBACK_METRIC, wanted)
        fallback_limit, fallback_period = parse_rate(rate or self.fallback_rate)
        return [
            self._local.hit(str(key_id), fallback_limit, fallback_period) for _ in range(wanted)
        ]

    async def _sliding_log(self, key: str, limit: int, period_us: int, wanted: int) -> list[int]:
        assert self._connection is not None
        args = (key, limit, period_us, uuid.uuid4().hex, wanted)
        try:
            reply: list[int] = await self._connection.call("EVALSHA", _SLIDING_LOG_SHA, 1, *args)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            # First use on this server (or after SCRIPT FLUSH): send the script itself.
            reply = await self._connection.call("EVAL", _SLIDING_LOG, 1, *args)
        return reply

    async def aclose(self) -> None:
        if self._connection is not None:
            await self._connection.aclose()

    def _warn(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_warning >= self._warn_every:
            self._last_warning = now
            logger.warning("Redis unreachable for rate limiting (%s): per-process fallback", exc)
