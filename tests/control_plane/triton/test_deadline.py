"""A prediction whose Triton call outlives CONCH_TRITON_TIMEOUT_S answers 504.

The model really is slow (tests/control_plane/triton/slow_model.py sleeps inside
Triton's Python backend), over both inference protocols.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from conch_embedded.triton_server import EmbeddedTriton
from control_plane.app import create_app
from control_plane.core.settings import Settings
from tests.control_plane.conftest import make_key, state_of
from tests.control_plane.triton.slow_model import write_slow_model

SLOW_MODEL = "cptest_slow"
DEADLINE_S = 2.0
# Far past the deadline, so a loaded machine cannot blur the two outcomes.
SLEEP_S = 8.0
ERROR_FIELDS = {"error", "message", "details", "timestamp", "request_id"}


@pytest.fixture(scope="module")
async def slow_model_id(model_repository: Path, client: httpx.AsyncClient, admin_key: str) -> int:
    write_slow_model(model_repository, SLOW_MODEL)
    response = await client.post(
        "/api/v1/models", json={"triton_name": SLOW_MODEL}, headers={"X-API-Key": admin_key}
    )
    assert response.status_code == 201, response.text
    model_id: int = response.json()["id"]
    return model_id


@pytest.fixture(scope="module", params=["http", "grpc"])
async def impatient(
    request: pytest.FixtureRequest, settings: Settings, slow_model_id: int
) -> AsyncIterator[httpx.AsyncClient]:
    """A replica whose Triton calls give up after DEADLINE_S, over one protocol."""
    protocol = request.param
    replica = create_app(
        settings.model_copy(
            update={"triton_timeout_s": DEADLINE_S, "triton_infer_protocol": protocol}
        ),
        migrate=False,
    )
    async with replica.router.lifespan_context(replica):
        # The setting took: predictions go over the protocol under test.
        assert (state_of(replica).triton._http is None) == (protocol == "grpc")
        transport = httpx.ASGITransport(app=replica)
        async with httpx.AsyncClient(transport=transport, base_url="http://conch") as http:
            yield http


@pytest.fixture(scope="module")
async def key(app: FastAPI) -> str:
    return await make_key(app, ["predict"], name="deadline")


async def _predict(
    client: httpx.AsyncClient, model_id: int, sleep_s: float, key: str
) -> httpx.Response:
    """One row asking the model to sleep; a cold model's 503 is waited out as a client would."""
    for _ in range(60):
        response = await client.post(
            f"/api/v1/models/{model_id}/predict",
            json={"data": [[sleep_s, 1.0]]},
            headers={"X-API-Key": key},
        )
        if response.status_code != 503 or response.json()["error"] != "ModelLoadingError":
            return response
        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
    return response


async def test_triton_past_the_deadline_is_504_with_the_error_body(
    impatient: httpx.AsyncClient,
    slow_model_id: int,
    key: str,
    triton: EmbeddedTriton,
    model_repository: Path,
) -> None:
    # Within the deadline the same model answers: the 504 below is the deadline's.
    quick = await _predict(impatient, slow_model_id, 0.0, key)
    assert quick.status_code == 200, quick.text
    assert quick.json()["predictions"] == [1.0]

    late = await _predict(impatient, slow_model_id, SLEEP_S, key)
    assert late.status_code == 504, late.text
    body = late.json()
    assert set(body) == ERROR_FIELDS
    assert body["error"] == "TritonTimeoutError"
    assert body["message"].startswith("Triton inference failed: ")
    assert body["request_id"] == late.headers["X-Request-ID"]
    assert "DEADLINE_EXCEEDED" in body["details"]["triton_status"]
    # Where Triton listens and where its models live are not the caller's business.
    for internal in (
        triton.http_url,
        triton.grpc_url,
        "127.0.0.1",
        "localhost",
        str(model_repository),
        "/tmp",
    ):
        assert internal not in late.text
