"""With the development SECRET_KEY, only loopback is answered (issue 9, item 4).

Settings cannot see where a hand-started uvicorn listens, so the app itself
checks the address each request arrived on.
"""

from __future__ import annotations

import httpx
import pytest

from control_plane.app import create_app
from control_plane.core.settings import DEVELOPMENT_SECRET_KEY, Settings
from tests.control_plane.secret_key import TEST_SECRET_KEY


def _app(secret: str) -> httpx.AsyncClient:
    settings = Settings(environment="development", secret_key=secret)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(settings)), base_url="http://10.1.2.3"
    )


async def test_the_development_key_answers_no_other_host() -> None:
    assert Settings(environment="development").uses_development_secret
    async with _app(DEVELOPMENT_SECRET_KEY) as client:
        # Any path, before routing or state: the public key serves nobody remote.
        response = await client.get("/metrics")
    assert response.status_code == 503
    assert "development SECRET_KEY" in response.json()["message"]


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "localhost"])
async def test_the_development_key_answers_loopback(host: str) -> None:
    settings = Settings(environment="development")
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as client:
        assert (await client.get("/metrics")).status_code == 200


async def test_a_real_key_answers_every_host() -> None:
    async with _app(TEST_SECRET_KEY) as client:
        assert (await client.get("/metrics")).status_code == 200
