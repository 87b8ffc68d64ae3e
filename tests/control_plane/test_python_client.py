"""conch.client against the real app (async, through ASGI) and against small peers
that answer the failure paths a real server cannot produce on demand (sync)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from fastapi import FastAPI

from conch.client import AsyncClient, Client, ConchError, RetryPolicy
from conch_embedded.process import free_port
from tests.control_plane.conftest import make_key, make_project


@pytest.fixture
def recorded_sleeps() -> list[float]:
    return []


def _async_client(app: FastAPI, key: str, sleeps: list[float], **kwargs: object) -> AsyncClient:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    return AsyncClient(
        "http://conch",
        key,
        transport=httpx.ASGITransport(app=app),
        sleep=sleep,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_recommendations_through_the_client(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin_key: str,
    model_ids: dict[str, int],
    recorded_sleeps: list[float],
) -> None:
    a = model_ids["a"]
    project = await make_project(client, admin_key, [("Control", a, 100)])
    async with _async_client(app, admin_key, recorded_sleeps) as conch:
        one = await conch.recommend(a, "u1", cutoff=3)
        direct = await client.post(
            f"/inference/predict/{a}",
            json={"user_id": "u1", "cutoff": 3},
            headers={"X-API-Key": admin_key},
        )
        assert one["items"] == direct.json()["items"] and len(one["items"]) == 3
        batch = await conch.recommend_batch(a, ["u1", "nobody"], cutoff=3)
        assert [len(result["items"]) for result in batch["results"]] == [3, 0]
        routed = await conch.recommend_for_project(project.id, "u1")
        assert routed["slot_id"] == project.slots["Control"] and routed["model_id"] == a
        registered = await conch.registered_model(a)
        assert registered["id"] == a
    assert recorded_sleeps == []


async def test_a_refusal_raises_the_error_body(
    app: FastAPI, model_ids: dict[str, int], recorded_sleeps: list[float]
) -> None:
    key = await make_key(app, ["predict"])
    async with _async_client(app, key, recorded_sleeps) as conch:
        with pytest.raises(ConchError) as refused:
            await conch.recommend(2_000_000_000, "u1")
    error = refused.value
    assert error.status == 404
    assert error.error == "ModelNotFoundError"
    assert error.details["model_id"] == 2_000_000_000
    assert error.request_id
    assert recorded_sleeps == []  # a 404 is never retried


async def test_rate_limited_calls_wait_for_retry_after(
    app: FastAPI, model_ids: dict[str, int], recorded_sleeps: list[float]
) -> None:
    key = await make_key(app, ["predict"], rate_limit="1/minute")
    policy = RetryPolicy(max_retries=2, max_retry_wait_s=120)
    async with _async_client(app, key, recorded_sleeps, retry=policy) as conch:
        await conch.recommend(model_ids["a"], "u1")
        with pytest.raises(ConchError) as refused:
            await conch.recommend(model_ids["a"], "u1")
    assert refused.value.status == 429
    assert refused.value.retry_after_s is not None and refused.value.retry_after_s > 0
    # Each retry waited what the server asked (the real limiter's Retry-After).
    assert len(recorded_sleeps) == 2
    assert all(0 < wait <= 60 for wait in recorded_sleeps)


class _BusyOnce(BaseHTTPRequestHandler):
    """503 with Retry-After on the first request, then 200: an overloaded server."""

    protocol_version = "HTTP/1.1"
    calls = 0

    def do_GET(self) -> None:
        type(self).calls += 1
        busy = type(self).calls == 1
        body = (
            b'{"error": "ServiceUnavailableError", "message": "busy", "details": {}}'
            if busy
            else b'{"status": "healthy"}'
        )
        self.send_response(503 if busy else 200)
        if busy:
            self.send_header("Retry-After", "2")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def busy_once_server() -> Iterator[str]:
    _BusyOnce.calls = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BusyOnce)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_sync_client_retries_after_503(busy_once_server: str) -> None:
    sleeps: list[float] = []
    with Client(busy_once_server, "key", sleep=sleeps.append) as conch:
        assert conch.health() == {"status": "healthy"}
    assert sleeps == [2.0]
    assert _BusyOnce.calls == 2


def test_sync_client_gives_up_after_its_retries_when_nothing_listens() -> None:
    sleeps: list[float] = []
    policy = RetryPolicy(max_retries=3, backoff_s=0.1)
    nowhere = f"http://127.0.0.1:{free_port()}"
    with (
        Client(nowhere, "key", retry=policy, sleep=sleeps.append) as conch,
        pytest.raises(httpx.ConnectError),
    ):
        conch.health()
    assert sleeps == [0.1, 0.2, 0.4]
