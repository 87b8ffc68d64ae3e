"""The HTTP-to-Triton client (`http_infer.py`) when Triton's answers go wrong.

A real Triton cannot be made to close a connection mid-body or to drop an idle
keep-alive connection on demand, so these run against a small asyncio server
that speaks just enough of KServe v2 over HTTP/1.1, through the real gateway
(`TritonGateway.infer_loaded`: the HTTP client plus the mapping to Conch errors).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import numpy as np
import orjson
import pytest

from conch_embedded.process import free_port
from control_plane.core.errors import TritonError, TritonUnavailableError
from control_plane.triton.client import TritonGateway

MODEL, INPUT, OUTPUT = "fake_model", "INPUT", "OUTPUT"
ROWS = np.asarray([[1.5, 2.5]], dtype=np.float32)
ANSWER = np.asarray([[4.0]], dtype=np.float32)  # what the fake model always answers
# Long enough that a client waiting on a dead connection fails as 504, not as 503.
CLIENT_TIMEOUT_S = 20.0


def ok_response(*, close: bool = False) -> bytes:
    """A successful binary-tensor infer response, as Triton sends it."""
    raw = ANSWER.tobytes()
    header = orjson.dumps(
        {
            "model_name": MODEL,
            "outputs": [
                {
                    "name": OUTPUT,
                    "datatype": "FP32",
                    "shape": list(ANSWER.shape),
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
        }
    )
    return _response(
        200, header + raw, {"Inference-Header-Content-Length": str(len(header))}, close
    )


def error_response(status: int, error: str) -> bytes:
    """Triton's error answer: a JSON body with one `error` string."""
    return _response(status, orjson.dumps({"error": error}), {}, close=False)


def _response(status: int, body: bytes, headers: dict[str, str], close: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {status} Whatever",
        "Content-Type: application/octet-stream",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# What the server does with one request: writes an answer, then maybe hangs up.
@dataclass
class Reply:
    data: bytes
    hang_up: bool = False


@dataclass
class FakeTriton:
    """Serves scripted replies, one per request in arrival order, and records what
    arrived on which connection (index = connection number)."""

    replies: list[Reply] = field(default_factory=list)
    requests_per_connection: list[int] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    hung_up: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = len(self.requests_per_connection)
        self.requests_per_connection.append(0)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode().split("\r\n")
                headers = dict(line.split(": ", 1) for line in header_lines if line)
                await reader.readexactly(int(headers["Content-Length"]))
                self.requests_per_connection[connection] += 1
                self.paths.append(request_line.split()[1])
                reply = self.replies.pop(0)
                writer.write(reply.data)
                await writer.drain()
                if reply.hang_up:
                    break
        except asyncio.IncompleteReadError:
            pass  # the client closed its side
        finally:
            writer.close()
            await writer.wait_closed()
            self.hung_up.set()


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeTriton, TritonGateway]]:
    server_state = FakeTriton()
    server = await asyncio.start_server(server_state.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # The gRPC address is never dialled: infer_loaded goes over HTTP only.
    gateway = TritonGateway(
        f"127.0.0.1:{free_port()}",
        timeout_s=CLIENT_TIMEOUT_S,
        load_timeout_s=CLIENT_TIMEOUT_S,
        http_url=f"127.0.0.1:{port}",
    )
    try:
        yield server_state, gateway
    finally:
        await gateway.close()
        server.close()
        await server.wait_closed()


def idle_connections(gateway: TritonGateway) -> int:
    assert gateway._http is not None
    return gateway._http.idle_connections


async def infer(gateway: TritonGateway) -> np.ndarray:
    answer = await gateway.infer_loaded(MODEL, {INPUT: ROWS}, [OUTPUT])
    return answer[OUTPUT]


async def test_keep_alive_answers_share_one_connection(
    fake: tuple[FakeTriton, TritonGateway],
) -> None:
    """The baseline the failure cases below differ from."""
    server, gateway = fake
    server.replies = [Reply(ok_response()), Reply(ok_response())]
    for _ in range(2):
        np.testing.assert_array_equal(await infer(gateway), ANSWER)
    assert server.requests_per_connection == [2]
    assert server.paths == [f"/v2/models/{MODEL}/infer"] * 2
    assert idle_connections(gateway) == 1


@pytest.mark.parametrize(
    ("status", "error_type", "code"),
    [(400, TritonError, 502), (500, TritonError, 502), (503, TritonUnavailableError, 503)],
)
async def test_non_200_answer_is_a_conch_error_with_tritons_reason(
    fake: tuple[FakeTriton, TritonGateway],
    status: int,
    error_type: type[TritonError],
    code: int,
) -> None:
    server, gateway = fake
    reason = "inference request batch-size must be <= 8 for '/srv/models/fake_model/1/model.onnx'"
    server.replies = [Reply(error_response(status, reason)), Reply(ok_response())]
    with pytest.raises(TritonError) as refused:
        await infer(gateway)
    assert type(refused.value) is error_type
    assert refused.value.status_code == code
    assert refused.value.details["triton_status"] == f"HTTP {status}"
    # Triton's own words, not the raw JSON, and no path of the serving host.
    assert refused.value.message == (
        "Triton inference failed: inference request batch-size must be <= 8 for 'model.onnx'"
    )
    # An error answer is a complete message: the connection stays good for the next call.
    np.testing.assert_array_equal(await infer(gateway), ANSWER)
    assert server.requests_per_connection == [2]


async def test_connection_close_answer_is_not_pooled(
    fake: tuple[FakeTriton, TritonGateway],
) -> None:
    """The server says `Connection: close` but leaves the socket open: only the
    client's reading of the header keeps it from sending the next request there."""
    server, gateway = fake
    server.replies = [Reply(ok_response(close=True)), Reply(ok_response())]
    np.testing.assert_array_equal(await infer(gateway), ANSWER)
    assert idle_connections(gateway) == 0
    np.testing.assert_array_equal(await infer(gateway), ANSWER)
    assert server.requests_per_connection == [1, 1]
    assert idle_connections(gateway) == 1


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(lambda answer: answer[:-3], id="mid-body"),
        pytest.param(lambda answer: answer[: answer.index(b"\r\n") + 2], id="mid-headers"),
        pytest.param(lambda answer: b"", id="before-any-byte"),
    ],
)
# A client that spun on the dead connection would hang the loop: fail, don't wait.
@pytest.mark.timeout(60)
async def test_connection_dropped_mid_answer_is_503_on_a_fresh_connection(
    fake: tuple[FakeTriton, TritonGateway], cut: Callable[[bytes], bytes]
) -> None:
    server, gateway = fake
    server.replies = [Reply(cut(ok_response()), hang_up=True), Reply(ok_response())]
    with pytest.raises(TritonError) as dropped:
        await infer(gateway)
    assert type(dropped.value) is TritonUnavailableError
    assert dropped.value.status_code == 503
    assert dropped.value.message == (
        "Triton inference failed: Triton's HTTP endpoint is unreachable"
    )
    assert "127.0.0.1" not in str(dropped.value.details)
    assert idle_connections(gateway) == 0
    # The next call opens a new connection and succeeds.
    np.testing.assert_array_equal(await infer(gateway), ANSWER)
    assert server.requests_per_connection == [1, 1]


async def test_unparsable_answer_is_502(fake: tuple[FakeTriton, TritonGateway]) -> None:
    server, gateway = fake
    server.replies = [Reply(b"SMTP ready\r\n\r\n"), Reply(ok_response())]
    with pytest.raises(TritonError) as unreadable:
        await infer(gateway)
    assert type(unreadable.value) is TritonError
    assert unreadable.value.status_code == 502
    assert unreadable.value.message.startswith("Triton inference failed: unreadable answer")
    assert idle_connections(gateway) == 0  # a connection in an unknown state is dropped
    np.testing.assert_array_equal(await infer(gateway), ANSWER)
    assert server.requests_per_connection == [1, 1]


async def test_idle_connection_closed_by_the_server_is_retried_once(
    fake: tuple[FakeTriton, TritonGateway],
) -> None:
    server, gateway = fake
    server.replies = [Reply(ok_response(), hang_up=True), Reply(ok_response())]
    np.testing.assert_array_equal(await infer(gateway), ANSWER)
    assert idle_connections(gateway) == 1  # kept: the answer said nothing of closing
    await server.hung_up.wait()  # ...but the server has closed it since
    np.testing.assert_array_equal(await infer(gateway), ANSWER)
    assert server.requests_per_connection == [1, 1]
    assert idle_connections(gateway) == 1


async def test_unreadable_binary_header_length_is_502(
    fake: tuple[FakeTriton, TritonGateway],
) -> None:
    """A 200 whose Inference-Header-Content-Length is no number cannot be split into
    its JSON header and tensors: Triton's failure, never a 500."""
    server, gateway = fake
    bad = ok_response().replace(
        b"Inference-Header-Content-Length: ", b"Inference-Header-Content-Length: x"
    )
    server.replies = [Reply(bad), Reply(ok_response())]
    with pytest.raises(TritonError) as unreadable:
        await infer(gateway)
    assert type(unreadable.value) is TritonError
    assert unreadable.value.status_code == 502
    assert unreadable.value.message.startswith("Triton inference failed: unreadable answer")
    # The answer itself was complete: the connection serves the next call.
    np.testing.assert_array_equal(await infer(gateway), ANSWER)
    assert server.requests_per_connection == [2]
