"""Request bodies: capped, read only after the key, JSON only (issue 9, items 3 and 11).

Called as raw ASGI so the test sees exactly how much of a body the app pulled:
a caller without a valid key must get its answer without one chunk read.
"""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import orjson
import pytest
from fastapi import FastAPI

from control_plane.core.settings import Settings
from tests.control_plane.asgi_body import CHUNK, Body
from tests.control_plane.conftest import make_key
from tests.control_plane.replicas import uvicorn_replica


async def _asgi(
    app: FastAPI, path: str, headers: dict[str, str], body: Body, method: str = "POST"
) -> tuple[int, dict[str, object]]:
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "server": ("conch", 80), "client": ("127.0.0.1", 1),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "app": app,
    }  # fmt: skip
    await app(scope, body, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")  # type: ignore[misc]
    assert isinstance(status, int)
    return status, orjson.loads(content)


# One path of each door: the prediction fast lane and a FastAPI route.
PATHS = ["/inference/predict/1", "/api/v1/projects"]


@pytest.mark.parametrize("path", PATHS)
async def test_a_huge_body_without_a_valid_key_is_401_unread(app: FastAPI, path: str) -> None:
    for headers in ({}, {"X-API-Key": "conch_" + "A" * 38}):
        body = Body([CHUNK] * 1600)  # 100 MiB
        status, error = await _asgi(
            app,
            path,
            {**headers, "content-type": "application/json", "content-length": str(100 << 20)},
            body,
        )
        assert status == 401 and error["error"] == "AuthenticationError"
        assert body.taken == 0


@pytest.mark.parametrize("path", PATHS)
async def test_malformed_json_is_401_or_403_before_it_is_a_422(app: FastAPI, path: str) -> None:
    garbage = {"content-type": "application/json", "content-length": "9"}
    status, _ = await _asgi(app, path, garbage, Body([b"{not json"]))
    assert status == 401
    lacking = await make_key(app, ["read"])  # neither predict nor write
    status, _ = await _asgi(app, path, {**garbage, "X-API-Key": lacking}, Body([b"{not json"]))
    assert status == 403
    allowed = await make_key(app, ["admin"])
    status, error = await _asgi(app, path, {**garbage, "X-API-Key": allowed}, Body([b"{not json"]))
    assert status == 422 and error["error"] == "ValidationError"


@pytest.mark.parametrize("path", PATHS)
async def test_a_declared_length_over_the_cap_is_413_unread(
    app: FastAPI, settings: Settings, path: str
) -> None:
    key = await make_key(app, ["admin"])
    body = Body([CHUNK])
    headers = {
        "X-API-Key": key,
        "content-type": "application/json",
        "content-length": str(settings.max_body_bytes + 1),
    }
    status, error = await _asgi(app, path, headers, body)
    assert status == 413 and error["error"] == "PayloadTooLargeError"
    assert error["details"] == {"max_bytes": settings.max_body_bytes}
    assert body.taken == 0


@pytest.mark.parametrize("path", PATHS)
async def test_a_streamed_body_stops_being_read_at_the_cap(
    app: FastAPI, settings: Settings, path: str
) -> None:
    key = await make_key(app, ["admin"])
    chunks = settings.max_body_bytes // len(CHUNK) + 1
    body = Body([CHUNK] * (chunks + 100))
    headers = {"X-API-Key": key, "content-type": "application/json", "transfer-encoding": "chunked"}
    status, error = await _asgi(app, path, headers, body)
    assert status == 413 and error["error"] == "PayloadTooLargeError"
    assert body.taken == chunks  # the first chunk beyond the cap, not one more


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_a_body_that_is_not_json_is_415(
    app: FastAPI, path: str, content_type: str | None
) -> None:
    key = await make_key(app, ["admin"])
    payload = b'{"user_id": "u1", "name": "x"}'
    headers = {"X-API-Key": key, "content-length": str(len(payload))}
    if content_type is not None:
        headers["content-type"] = content_type
    status, error = await _asgi(app, path, headers, Body([payload]))
    assert status == 415 and error["error"] == "UnsupportedMediaTypeError"


async def test_a_real_server_answers_401_before_the_client_sent_its_body(
    settings: Settings, tmp_path: Path
) -> None:
    """Over a socket: the 401 arrives while 99 of the declared 100 MiB are still unsent."""
    with uvicorn_replica(settings, tmp_path) as url:
        host, port = httpx.URL(url).host, httpx.URL(url).port
        assert port is not None
        with socket.create_connection((host, port), timeout=30) as connection:
            connection.sendall(
                b"POST /api/v1/projects HTTP/1.1\r\nHost: conch\r\n"
                b"Content-Type: application/json\r\nContent-Length: 104857600\r\n\r\n"
            )
            connection.sendall(CHUNK * 16)  # 1 MiB of the 100
            head = connection.recv(65536).split(b"\r\n", 1)[0]
        assert head == b"HTTP/1.1 401 Unauthorized"
