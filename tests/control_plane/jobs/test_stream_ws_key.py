"""A stream's WebSocket ends with its key: revoked through the API (on this replica
or another), the socket closes with 4401 and pushes nothing more; the same when
the key expires while connected."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from websockets.asyncio.client import connect

from control_plane.core.settings import Settings
from control_plane.keys.watch import KeyWatch
from tests.control_plane.conftest import make_key
from tests.control_plane.jobs.stream_helpers import (
    NEVER_MS,
    ROWS,
    STREAM,
    key_id_of,
    replica,
    send,
    served,
    start,
    until_closed,
)
from tests.control_plane.waiting import until


async def _held(app: FastAPI, key_id: int) -> None:
    watch = app.state.components.get(KeyWatch)

    async def holding() -> bool:
        return bool(watch.holding(key_id) == 1)

    await until(holding, "the socket did not hold its key")


@pytest.mark.parametrize("where", ["this replica", "another replica"])
async def test_a_revoked_key_closes_its_socket_and_nothing_is_pushed_after(
    app: FastAPI,
    client: httpx.AsyncClient,
    settings: Settings,
    admin_key: str,
    ws_url: str,
    model_id: int,
    where: str,
) -> None:
    key = await make_key(app, ["predict"])
    key_id = await key_id_of(app, key)
    stream_id = await start(client, key, model_id, buffer_size=2, batch_timeout_ms=NEVER_MS)
    admin = {"X-API-Key": admin_key}
    async with replica(settings) as (other_app, _):
        here = where == "this replica"
        socket_app = app if here else other_app
        async with (
            contextlib.nullcontext(ws_url) if here else served(other_app) as base,
            connect(
                f"{base}{STREAM}/{stream_id}/ws", additional_headers={"X-API-Key": key}
            ) as socket,
        ):
            assert (await send(client, key, stream_id, ROWS[:2], 0)).status_code == 202
            pushed = [orjson.loads(await socket.recv()) for _ in range(2)]
            assert [m["sequence_id"] for m in pushed] == [0, 1]  # pushes work
            await _held(socket_app, key_id)
            revoked = await client.delete(f"/api/v1/keys/{key_id}", headers=admin)
            assert revoked.status_code == 200, revoked.text
            if not here:  # the event reaches the other replica through Redis: wait for it
                messages, code, reason = await until_closed(socket)
            # More results after the revocation (an admin sends on the owner's stream).
            owner = {"owner_key_id": key_id}
            more = await client.post(
                f"{STREAM}/{stream_id}/send",
                params=owner,
                json={"data": ROWS[2:4], "sequence_id": 2},
                headers=admin,
            )
            assert more.status_code == 202, more.text
            stored = await _read_as_admin(client, admin_key, stream_id, key_id)
            assert [r["sequence_id"] for r in stored] == [0, 1, 2, 3]
            if here:  # revoked here: closed as the revocation was answered
                messages, code, reason = await until_closed(socket)
    assert (code, reason) == (4401, "API key revoked")
    assert messages == []  # rows 2 and 3 were stored, never pushed
    assert app.state.components.get(KeyWatch).holding(key_id) == 0


async def _read_as_admin(
    client: httpx.AsyncClient, admin_key: str, stream_id: str, key_id: int
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []

    async def four() -> bool:
        response = await client.get(
            f"{STREAM}/{stream_id}/results",
            params={"owner_key_id": key_id},
            headers={"X-API-Key": admin_key},
        )
        assert response.status_code == 200, response.text
        results[:] = response.json()["results"]
        return len(results) == 4

    await until(four, "rows 2 and 3 got no results")
    return results


async def test_a_key_expiring_while_connected_closes_its_socket(
    app: FastAPI, client: httpx.AsyncClient, admin_key: str, ws_url: str, model_id: int
) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=5)
    created = await client.post(
        "/api/v1/keys",
        json={"scopes": ["predict"], "name": "short-lived", "expires_at": expires.isoformat()},
        headers={"X-API-Key": admin_key},
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    stream_id = await start(client, key, model_id, buffer_size=1, batch_timeout_ms=NEVER_MS)
    async with connect(
        f"{ws_url}{STREAM}/{stream_id}/ws", additional_headers={"X-API-Key": key}
    ) as socket:
        await _held(app, created.json()["id"])  # admitted before it expired
        messages, code, reason = await until_closed(socket)
    assert (messages, code, reason) == ([], 4401, "API key expired")
    assert datetime.now(UTC) >= expires
