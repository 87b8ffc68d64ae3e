"""The fast lane in front of the middleware stack (inference/front.py): a prediction
passes through none of the middlewares, and still gets exactly once what they
give every request: its request id, its rate-limit headers, one count in the
request histogram, the in-flight gauge back where it was, one access line, the
body cap and the one error body, a 500's included."""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from pydantic import SecretStr
from starlette.types import Receive, Scope, Send

from control_plane.app import create_app
from control_plane.core import access_log
from control_plane.core.settings import DEVELOPMENT_SECRET_KEY, Settings
from control_plane.inference import lane
from control_plane.inference.front import LaneInFront
from tests.control_plane.conftest import make_key, state_of
from tests.control_plane.waiting import until, until_served

ROUTE = "/inference/predict/{model_id}"
BODY = {"user_id": "u1"}


def _count(status: int) -> float:
    labels = {"route": ROUTE, "method": "POST", "status": str(status)}
    value = REGISTRY.get_sample_value("conch_http_request_duration_seconds_count", labels)
    return value or 0.0


def _in_flight() -> float:
    return REGISTRY.get_sample_value("conch_http_requests_in_flight") or 0.0


@pytest.fixture
def captured(settings: Settings) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    access_log.configure_logging("INFO", "json", stream=stream)
    yield stream
    access_log.configure_logging(
        settings.log_level, settings.log_output, access_log=settings.access_log
    )


async def _lines_of(stream: io.StringIO, client: httpx.AsyncClient, request_id: str) -> list[str]:
    """The access lines naming `request_id`, all of them: a later request's line is
    written after them by the one writing thread."""
    marker = f"marker-{uuid.uuid4().hex}"
    await client.get("/inference/health", headers={"X-Request-ID": marker})

    async def written() -> bool:
        return marker in stream.getvalue()

    await until(written, "the marker's access line was not written")
    return [line for line in stream.getvalue().splitlines() if f'"{request_id}"' in line]


class _Counting:
    """Counts the requests that reach the middleware stack."""

    def __init__(self, app: Any) -> None:
        self.app, self.paths = app, list[str]()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)


async def test_a_prediction_passes_no_middleware_and_is_recorded_once(
    app: FastAPI, client: httpx.AsyncClient, model_ids: Mapping[str, int], captured: io.StringIO
) -> None:
    assert isinstance(app, LaneInFront) and app.lane is not None  # tracing is off here
    key = await make_key(app, ["predict"], rate_limit="1000/minute")
    await until_served(client, model_ids["a"], key)
    path = f"/inference/predict/{model_ids['a']}"
    assert (await client.get("/inference/health")).status_code == 200
    assert app.middleware_stack is not None  # Starlette builds it for the first request
    stack = app.middleware_stack = _Counting(app.middleware_stack)
    try:
        before, in_flight = _count(200), _in_flight()
        fresh = await client.post(path, json=BODY, headers={"X-API-Key": key})
        assert fresh.status_code == 200, fresh.text
        assert stack.paths == []  # the lane answered it in front of every middleware
        assert _count(200) == before + 1
        assert _in_flight() == in_flight
        request_id = fresh.headers["X-Request-ID"]
        assert uuid.UUID(request_id).version == 4 and str(uuid.UUID(request_id)) == request_id
        assert fresh.json()["request_id"] == request_id
        assert fresh.headers["X-RateLimit-Limit"] == "1000"
        assert [h for h, _ in fresh.headers.raw].count(b"x-request-id") == 1
        supplied = await client.post(
            path, json=BODY, headers={"X-API-Key": key, "X-Request-ID": "front-supplied-1"}
        )
        assert supplied.headers["X-Request-ID"] == supplied.json()["request_id"]
        assert supplied.json()["request_id"] == "front-supplied-1"
        assert len(await _lines_of(captured, client, request_id)) == 1
        assert len(await _lines_of(captured, client, "front-supplied-1")) == 1
        assert stack.paths == ["/inference/health"] * 2  # FastAPI's routes still go there
    finally:
        app.middleware_stack = stack.app


async def test_errors_in_front_carry_the_id_and_one_body(
    app: FastAPI,
    client: httpx.AsyncClient,
    model_ids: Mapping[str, int],
    captured: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = await make_key(app, ["predict"], rate_limit="1000/minute")
    path = f"/inference/predict/{model_ids['a']}"
    cap = state_of(app).settings.max_body_bytes
    huge = b'{"user_id": "' + b"u" * cap + b'"}'
    headers = {"X-API-Key": key, "content-type": "application/json"}
    refusals = [(401, {}, b"{}"), (413, headers, huge), (422, headers, b"{not json")]
    for status, sent, body in refusals:
        before = _count(status)
        response = await client.post(path, content=body, headers=sent)
        assert response.status_code == status, response.text
        assert response.json()["request_id"] == response.headers["X-Request-ID"]
        assert _count(status) == before + 1
    limited = await client.post(path, content=b"{}", headers=headers)
    assert limited.headers["X-RateLimit-Limit"] == "1000"  # a 422 has the limit's headers too

    def broken(*_: Any) -> None:
        raise RuntimeError("a bug in the lane")

    monkeypatch.setattr(lane, "_validated", broken)
    before = _count(500)
    failed = await client.post(path, json=BODY, headers=headers)
    assert failed.status_code == 500
    body = failed.json()
    assert body["error"] == "InternalServerError"
    assert body["request_id"] == failed.headers["X-Request-ID"]
    assert _count(500) == before + 1
    lines = await _lines_of(captured, client, body["request_id"])
    # The access line and the error's own record, with its traceback: each once.
    assert len([line for line in lines if '"conch.access"' in line]) == 1
    assert len([line for line in lines if "a bug in the lane" in line]) == 1


@pytest.fixture(scope="module")
async def development(settings: Settings, model_ids: dict[str, int]) -> AsyncIterator[FastAPI]:
    """A replica with the public development key (only loopback may be answered)."""
    public = settings.model_copy(
        update={"environment": "development", "secret_key": SecretStr(DEVELOPMENT_SECRET_KEY)}
    )
    replica = create_app(public, migrate=False)
    async with replica.router.lifespan_context(replica):
        yield replica


@pytest.mark.parametrize(("host", "status"), [("10.1.2.3", 503), ("127.0.0.1", 401)])
async def test_the_lane_in_front_keeps_the_loopback_guard(
    development: FastAPI, model_ids: dict[str, int], host: str, status: int
) -> None:
    transport = httpx.ASGITransport(app=development)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as client:
        response = await client.post(f"/inference/predict/{model_ids['a']}", json=BODY)
    assert response.status_code == status, response.text
    assert response.json()["request_id"] == response.headers["X-Request-ID"]
