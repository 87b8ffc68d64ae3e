"""Per-key limits shared by replicas through Redis, and the fallback without Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from control_plane.app import create_app
from control_plane.core import metrics
from control_plane.core.process import free_port
from control_plane.core.settings import Settings
from control_plane.ratelimit.limiter import FALLBACK_METRIC, RateLimiter
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
