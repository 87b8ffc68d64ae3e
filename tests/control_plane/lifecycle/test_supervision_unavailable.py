"""Every 503 says when to retry: Triton unreachable (predict, readiness), Redis absent.

A replica whose Triton is a closed port (the failure a real Triton cannot be made
to produce on demand) answers through both prediction paths: the fast lane and
FastAPI's own routing.
"""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from conch_embedded.process import free_port
from control_plane.app import create_app
from control_plane.core.errors import ServiceUnavailableError, conch_error_response
from control_plane.core.settings import Settings
from tests.control_plane.conftest import make_key


def _retry_after_s(response: httpx.Response) -> int:
    assert "Retry-After" in response.headers, response.headers
    return int(response.headers["Retry-After"])


@pytest.mark.parametrize("fast_lane", [True, False], ids=["fast-lane", "fastapi"])
async def test_triton_down_answers_503_with_retry_after(
    app: FastAPI, settings: Settings, model_ids: dict[str, int], fast_lane: bool
) -> None:
    token = await make_key(app, ["predict"])
    closed = f"127.0.0.1:{free_port()}"
    down = create_app(
        settings.model_copy(
            update={"triton_grpc_url": closed, "triton_http_url": closed, "fast_lane": fast_lane}
        ),
        migrate=False,
    )
    async with down.router.lifespan_context(down):
        transport = httpx.ASGITransport(app=down)
        async with httpx.AsyncClient(transport=transport, base_url="http://down") as client:
            predicted = await client.post(
                f"/inference/predict/{model_ids['a']}",
                json={"user_id": "u1"},
                headers={"X-API-Key": token},
            )
            assert predicted.status_code == 503, predicted.text
            assert predicted.json()["error"] == "TritonUnavailableError"
            assert _retry_after_s(predicted) >= 1

            ready = await client.get("/inference/ready")
            assert ready.status_code == 503
            assert ready.json()["ready"] is False
            assert _retry_after_s(ready) >= 1


def test_redis_not_configured_says_when_to_retry() -> None:
    # No route of the app reaches it without Redis configured: the error itself.
    response = conch_error_response(ServiceUnavailableError("Redis is not configured"))
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
