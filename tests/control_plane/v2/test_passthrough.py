"""The passthrough's failure paths, against peers that fail on demand."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from conch_embedded.process import free_port
from conch_embedded.triton_server import EmbeddedTriton
from control_plane.core.components import Components
from control_plane.core.errors import (
    BadRequestError,
    NotFoundError,
    ServiceUnavailableError,
    TritonError,
    TritonTimeoutError,
    TritonUnavailableError,
)
from control_plane.triton.passthrough import (
    TritonAnswer,
    TritonPassthrough,
    answer_error,
    forwarded_headers,
)
from control_plane.v2.service import passthrough_of


@pytest.fixture
async def silent_peer() -> AsyncIterator[int]:
    """A port that accepts connections and never answers."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client goes away
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_unreachable_triton_is_503_without_its_address() -> None:
    port = free_port()  # nothing listens there
    passthrough = TritonPassthrough(f"127.0.0.1:{port}", timeout_s=5)
    with pytest.raises(TritonUnavailableError) as raised:
        await passthrough.forward("GET", "/v2/health/live")
    assert str(port) not in raised.value.message and "127.0.0.1" not in raised.value.message


async def test_a_silent_triton_is_504(silent_peer: int) -> None:
    passthrough = TritonPassthrough(f"127.0.0.1:{silent_peer}", timeout_s=0.2)
    with pytest.raises(TritonTimeoutError):
        await passthrough.forward("POST", "/v2/models/m/infer", body=b"{}")
    await passthrough.close()


async def test_connections_are_reused(triton: EmbeddedTriton) -> None:
    passthrough = TritonPassthrough(triton.http_url, timeout_s=5)
    try:
        for _ in range(3):
            assert (await passthrough.forward("GET", "/v2/health/live")).ok
        assert passthrough.idle_connections == 1  # one keep-alive connection served all three
    finally:
        await passthrough.close()


@pytest.mark.parametrize(
    ("status", "reason", "kind", "code"),
    [
        (400, "[request id: <id_unknown>] unexpected shape for input 'x'", BadRequestError, 400),
        (500, "failed to parse the request JSON buffer: Invalid value. at 0", BadRequestError, 400),
        (500, "Unable to parse 'data': attempt to access JSON non-number", BadRequestError, 400),
        (404, "Request for unknown model: 'm' version 3 is not found", NotFoundError, 404),
        (503, "Server not ready", TritonUnavailableError, 503),
        (500, "Failed to process the request(s) for model 'm'", TritonError, 502),
    ],
)
def test_triton_error_answers_map_to_conch_errors(
    status: int, reason: str, kind: type[Exception], code: int
) -> None:
    body = json.dumps({"error": f"{reason} at /opt/models/m/1/model.py:12"}).encode()
    error = answer_error(TritonAnswer(status, body=body), "inference")
    assert type(error) is kind and error.status_code == code
    assert "[request id" not in error.message and "/opt/models" not in error.message


def test_only_the_body_describing_headers_travel() -> None:
    caller = [
        (b"x-api-key", b"secret"),
        (b"authorization", b"Bearer secret"),
        (b"host", b"conch"),
        (b"content-type", b"application/octet-stream"),
        (b"inference-header-content-length", b"42"),
        (b"accept-encoding", b"gzip"),
    ]
    assert forwarded_headers(caller) == [
        (b"content-type", b"application/octet-stream"),
        (b"inference-header-content-length", b"42"),
        (b"accept-encoding", b"gzip"),
    ]


def test_without_triton_http_the_door_is_503() -> None:
    with pytest.raises(ServiceUnavailableError) as raised:
        passthrough_of(Components())
    assert "CONCH_TRITON_HTTP_URL" in raised.value.message
