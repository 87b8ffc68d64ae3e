"""Per-key limits shared by replicas through Redis, and the fallback without Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from conch_embedded.process import free_port
from control_plane.app import create_app
from control_plane.core import metrics
from control_plane.core.settings import Settings
from control_plane.ratelimit.limiter import FALLBACK_METRIC, RateLimiter
from control_plane.ratelimit.lru import LRUDict
from control_plane.ratelimit.window import WINDOW_BUCKETS
from tests.control_plane.conftest import make_key
from tests.control_plane.replicas import uvicorn_replica


@pytest.fixture(scope="module")
def two_replicas(
    settings: Settings, model_ids: dict[str, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    logs = tmp_path_factory.mktemp("replicas")
    with uvicorn_replica(settings, logs) as first, uvicorn_replica(settings, logs) as second:
        yield first, second


async def test_101st_request_in_a_minute_is_429_across_two_processes(
    app: FastAPI, two_replicas: tuple[str, str], model_ids: dict[str, int]
) -> None:
    limited = await make_key(app, ["predict"], rate_limit=None)  # default 100/minute
    other = await make_key(app, ["predict"], rate_limit=None)
    path = f"/inference/predict/{model_ids['a']}"
    async with httpx.AsyncClient(timeout=30) as http:

        async def call(i: int, key: str) -> httpx.Response:
            url = two_replicas[i % 2] + path
            return await http.post(url, json={"user_id": "u1"}, headers={"X-API-Key": key})

        responses: list[httpx.Response] = []
        for start in range(0, 100, 20):
            responses += await asyncio.gather(*(call(i, limited) for i in range(start, start + 20)))
        assert [r.status_code for r in responses] == [200] * 100
        assert sorted(int(r.headers["X-RateLimit-Remaining"]) for r in responses) == list(
            range(100)
        )
        assert {r.headers["X-RateLimit-Limit"] for r in responses} == {"100"}

        refused = await call(1, limited)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"] == "RateLimitExceededError"
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.headers["X-RateLimit-Remaining"] == "0"
        assert int(refused.headers["X-RateLimit-Reset"]) <= 60
        assert (await call(0, limited)).status_code == 429  # the other process agrees

        assert (await call(0, other)).status_code == 200
        assert (await call(1, other)).status_code == 200


async def test_fallback_limits_per_process_when_redis_is_down() -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    redis = Redis.from_url(dead, socket_connect_timeout=0.2)
    limiter = RateLimiter(redis, "100/minute", "3/minute")
    before = metrics.value(FALLBACK_METRIC)
    results = [await limiter.hit(1) for _ in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]
    assert metrics.value(FALLBACK_METRIC) - before == 4
    await redis.aclose()


async def test_without_redis_auth_still_refuses_and_requests_still_pass(
    settings: Settings, model_ids: dict[str, int], app: FastAPI
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    offline = create_app(
        settings.model_copy(update={"redis_url": dead, "model_events_redis_url": dead}),
        migrate=False,
    )
    token = await make_key(app, ["predict"])
    async with offline.router.lifespan_context(offline):
        transport = httpx.ASGITransport(app=offline)
        async with httpx.AsyncClient(transport=transport, base_url="http://offline") as client:
            path = f"/inference/predict/{model_ids['a']}"
            bad = await client.post(path, json={"user_id": "u1"}, headers={"X-API-Key": "conch_x"})
            assert bad.status_code == 401
            good = await client.post(path, json={"user_id": "u1"}, headers={"X-API-Key": token})
            assert good.status_code == 200


async def _script_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval")
    )


async def test_a_burst_of_one_key_is_counted_by_one_call_with_exact_answers(
    redis_url: str,
) -> None:
    redis = Redis.from_url(redis_url)
    limiter = RateLimiter(redis, "5/minute", "5/minute", namespace=f"burst-{free_port()}")
    try:
        await limiter.hit(99)  # the script is loaded on this server from now on
        before = await _script_calls(redis)
        results = await asyncio.gather(*(limiter.hit(7) for _ in range(8)))
        assert await _script_calls(redis) - before == 1  # the whole tick in one round trip
        assert [r.allowed for r in results] == [True] * 5 + [False] * 3
        assert [r.remaining for r in results] == [4, 3, 2, 1, 0, 0, 0, 0]
        assert all(0 < r.reset_s <= 60 for r in results)
        again = await limiter.hit(7)  # known over its limit: answered without Redis
        assert not again.allowed
        assert await _script_calls(redis) - before == 1
    finally:
        await limiter.aclose()
        await redis.aclose()


async def test_a_refused_key_is_admitted_again_once_its_reset_has_passed(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    limiter = RateLimiter(redis, "3/second", "3/second", namespace=f"reset-{free_port()}")
    try:
        results = await asyncio.gather(*(limiter.hit(4) for _ in range(4)))
        assert [r.remaining for r in results] == [2, 1, 0, 0]
        refused = results[-1]
        assert not refused.allowed and 0 < refused.reset_s <= 1
        assert refused.headers()["Retry-After"] == "1"
        await asyncio.sleep(refused.reset_s + 0.05)  # what Retry-After promises
        again = await limiter.hit(4)
        assert again.allowed and again.remaining == 2  # the whole burst left the window
    finally:
        await limiter.aclose()
        await redis.aclose()


async def test_a_key_s_window_in_redis_stays_small_whatever_its_limit(redis_url: str) -> None:
    """A sliding log held one entry per admitted request; the window holds buckets."""
    redis = Redis.from_url(redis_url)
    namespace = f"memory-{free_port()}"
    limiter = RateLimiter(redis, "10000000/second", "1/second", namespace=namespace)
    try:
        assert (await limiter.hit(5)).allowed
        [window] = await redis.keys(f"conch:ratelimit:{namespace}:*")  # counted in Redis
        sizes, admitted, started = [], 1, time.monotonic()
        # Thousands of requests, over more than one period (so old buckets leave too).
        while admitted < 3000 or time.monotonic() - started < 1.5:
            assert time.monotonic() - started < 120, "the limiter stopped admitting"
            results = await asyncio.gather(*(limiter.hit(5) for _ in range(50)))
            admitted += sum(r.allowed for r in results)
            sizes.append(await redis.memory_usage(window))
        assert max(sizes) < 4096  # bytes, as Redis counts them: a log needs ~100 per request
        assert await redis.type(window) == b"list"
        assert await redis.llen(window) <= WINDOW_BUCKETS + 1
    finally:
        await limiter.aclose()
        await redis.aclose()


async def test_in_process_state_stays_bounded_under_a_flood_of_distinct_keys() -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    redis = Redis.from_url(dead, socket_connect_timeout=0.2)
    limiter = RateLimiter(redis, "100/minute", "1/minute", max_tracked_keys=50)
    for key_id in range(1000):  # each admitted once per process, then refused
        assert (await limiter.hit(key_id)).allowed
        assert not (await limiter.hit(key_id)).allowed
    assert limiter.tracked_keys() <= 2 * 50  # refusals + per-process windows
    assert not (await limiter.hit(999)).allowed  # the most recent keys are still known
    await limiter.aclose()
    await redis.aclose()


def test_the_bounded_dictionary_drops_the_least_recently_used_entry() -> None:
    entries: LRUDict[str, int] = LRUDict(2)
    entries["a"], entries["b"] = 1, 2
    assert entries.get("a") == 1  # now "b" is the least recently used
    entries["c"] = 3
    assert (entries.get("a"), entries.get("b"), entries.get("c"), len(entries)) == (1, None, 3, 2)
