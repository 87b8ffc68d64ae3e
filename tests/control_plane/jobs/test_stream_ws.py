"""`/api/inference/stream/{id}/ws` through a real uvicorn and the `websockets` client:
every result pushed once and in order, the key on the handshake or as the first
message, sends over the socket, and each refusal its own close code."""

from __future__ import annotations

import httpx
import orjson
import pytest
from fastapi import FastAPI
from websockets.asyncio.client import connect

from control_plane.core.settings import Settings
from tests.control_plane.conftest import make_key
from tests.control_plane.jobs.stream_helpers import (
    NEVER_MS,
    ROWS,
    STREAM,
    key_id_of,
    predictions,
    replica,
    send,
    served,
    start,
    until_closed,
)


def _socket(ws_url: str, stream_id: str, key: str | None = None, query: str = "") -> connect:
    headers = {} if key is None else {"X-API-Key": key}
    return connect(f"{ws_url}{STREAM}/{stream_id}/ws{query}", additional_headers=headers)


async def test_every_result_is_pushed_once_in_order_then_the_socket_closes(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings, ws_url: str, model_id: int
) -> None:
    key = await make_key(app, ["predict"])
    stream_id = await start(client, key, model_id, buffer_size=3, batch_timeout_ms=20)
    async with replica(settings) as (_, other), _socket(ws_url, stream_id, key) as socket:
        for sequence_id, row in enumerate(ROWS):
            sender = (client, other)[sequence_id % 2]
            assert (await send(sender, key, stream_id, row, sequence_id)).status_code == 202
        closed = await other.delete(f"{STREAM}/{stream_id}", headers={"X-API-Key": key})
        assert closed.status_code == 200
        messages, code, reason = await until_closed(socket)
    assert (code, reason) == (1000, "stream closed")
    assert [m["type"] for m in messages] == ["result"] * len(ROWS)
    assert [m["sequence_id"] for m in messages] == list(range(len(ROWS)))
    expected = await predictions(client, key, model_id, ROWS)
    assert [m["prediction"] for m in messages] == pytest.approx(expected, rel=1e-5)


async def test_a_browser_sends_its_key_first_and_may_send_rows_over_the_socket(
    app: FastAPI, client: httpx.AsyncClient, ws_url: str, model_id: int
) -> None:
    key = await make_key(app, ["predict"])
    stream_id = await start(client, key, model_id, buffer_size=2, batch_timeout_ms=NEVER_MS)
    assert (await send(client, key, stream_id, ROWS[0], 0)).status_code == 202
    async with _socket(ws_url, stream_id, query="?cursor=1") as socket:
        await socket.send(orjson.dumps({"api_key": key}).decode())
        await socket.send(orjson.dumps({"data": ROWS[1], "sequence_id": 1}).decode())
        sent = orjson.loads(await socket.recv())
        assert sent["type"] == "sent" and sent["flushed"] is True and sent["rows"] == 1
        pushed = orjson.loads(await socket.recv())
        assert pushed["type"] == "result" and pushed["sequence_id"] == 1  # from the cursor on
        await socket.send(orjson.dumps({"data": ROWS[2], "sequence_id": 1}).decode())
        duplicate = orjson.loads(await socket.recv())
        assert duplicate["type"] == "error" and duplicate["error"]["error"] == "ConflictError"
        await socket.send(orjson.dumps({"data": ROWS[2], "sequence_id": "2"}).decode())
        invalid = orjson.loads(await socket.recv())
        assert invalid["type"] == "error" and invalid["error"]["error"] == "ValidationError"
        await socket.send(orjson.dumps({"data": [[1.0, 2.0]], "sequence_id": 2}).decode())
        narrow = orjson.loads(await socket.recv())
        assert narrow["type"] == "error" and narrow["error"]["error"] == "BadRequestError"
        await client.delete(f"{STREAM}/{stream_id}", headers={"X-API-Key": key})
        messages, code, _ = await until_closed(socket)
    assert code == 1000 and messages == []  # row 0 was before the cursor


async def test_each_refusal_is_a_close_code_and_a_strangers_stream_reads_as_unknown(
    app: FastAPI, client: httpx.AsyncClient, ws_url: str, model_id: int
) -> None:
    owner = await make_key(app, ["predict"])
    stranger = await make_key(app, ["predict"])
    read_only = await make_key(app, ["read"])
    stream_id = await start(client, owner, model_id, batch_timeout_ms=NEVER_MS)

    async def refusal(key: str | None, stream: str, query: str = "", first: str = "") -> tuple:
        async with _socket(ws_url, stream, key, query) as socket:
            if first:
                await socket.send(first)
            messages, code, reason = await until_closed(socket)
        assert messages == []
        return code, reason

    hidden = await refusal(stranger, stream_id)
    owner_id = await key_id_of(app, owner)
    peeking = await refusal(stranger, stream_id, f"?owner_key_id={owner_id}")
    assert hidden == peeking == (4404, f"stream {stream_id!r} not found")
    unknown = await refusal(owner, "no-such-stream")
    assert unknown[0] == 4404
    assert (await refusal(owner, "bad:id"))[0] == 4404
    assert (await refusal("conch_not_a_key", stream_id))[0] == 4401
    assert (await refusal(None, stream_id, first='{"key": "x"}'))[0] == 4401
    assert (await refusal(None, stream_id, first="not json"))[0] == 4401
    assert (await refusal(read_only, stream_id))[0] == 4403
    assert (await refusal(owner, stream_id, "?cursor=-1"))[0] == 4400
    bearer = connect(
        f"{ws_url}{STREAM}/{stream_id}/ws",
        additional_headers={"Authorization": f"Bearer {owner}"},
    )
    async with bearer as socket:  # accepted: nothing comes until results do
        await socket.send(orjson.dumps({"data": ROWS[0], "sequence_id": 0}).decode())
        assert orjson.loads(await socket.recv())["type"] == "sent"


async def test_the_socket_closes_when_its_stream_expires(
    app: FastAPI, settings: Settings, model_id: int
) -> None:
    key = await make_key(app, ["predict"])
    async with replica(settings, stream_idle_ttl_s=1) as (tight_app, tight):
        stream_id = await start(tight, key, model_id, batch_timeout_ms=NEVER_MS)
        async with served(tight_app) as url, _socket(url, stream_id, key) as socket:
            messages, code, reason = await until_closed(socket)
    assert (messages, code, reason) == ([], 4410, "stream expired")
