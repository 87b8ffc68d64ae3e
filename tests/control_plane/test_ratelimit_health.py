"""/inference/health says whether rate limits are shared now; a bad REDIS_URL stops startup."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from conch_embedded.process import free_port
from conch_embedded.redis_server import EmbeddedRedis
from control_plane.app import create_app
from control_plane.core.settings import Settings
from control_plane.ratelimit.endpoint import UnsupportedRedisURL


async def _health(app: FastAPI) -> dict[str, Any]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://conch") as client:
        response = await client.get("/inference/health")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_health_reports_the_limiter_in_fallback_while_its_redis_is_stopped(
    settings: Settings,
) -> None:
    server = EmbeddedRedis().start()
    port = server.port
    # Events stay on the session's Redis: only the limiter's Redis goes away.
    own = create_app(settings.model_copy(update={"redis_url": server.url}), migrate=False)
    try:
        async with own.router.lifespan_context(own):
            assert (await _health(own))["components"]["rate_limiter"] == "ok"
            server.stop()
            body = await _health(own)
            assert body["components"]["rate_limiter"] == "fallback"
            assert body["status"] == "degraded"
            server = EmbeddedRedis(port=port).start()
            assert (await _health(own))["components"]["rate_limiter"] == "ok"
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("update", "reported"),
    [({"redis_url": None}, "not_configured"), ({"rate_limit_enabled": False}, "disabled")],
)
async def test_health_says_when_limits_are_not_shared_by_design(
    settings: Settings, update: dict[str, Any], reported: str
) -> None:
    own = create_app(settings.model_copy(update=update), migrate=False)
    async with own.router.lifespan_context(own):
        assert (await _health(own))["components"]["rate_limiter"] == reported


async def test_a_redis_url_the_limiter_cannot_follow_stops_the_app_starting(
    settings: Settings,
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0?no_such_option=1"
    own = create_app(settings.model_copy(update={"redis_url": url}), migrate=False)
    with pytest.raises(UnsupportedRedisURL, match="no_such_option"):
        async with own.router.lifespan_context(own):
            pass
