"""Streams at their limits: idle expiry (every key of a session), the bounds on
streams per key and rows pending per stream, and the results a stream keeps."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from control_plane.core.settings import Settings
from control_plane.jobs.streams import StreamStore, stream_sid
from tests.control_plane.conftest import make_key
from tests.control_plane.jobs.stream_helpers import (
    NEVER_MS,
    ROWS,
    STREAM,
    key_id_of,
    read_until,
    replica,
    send,
    start,
)
from tests.control_plane.waiting import until


@pytest.fixture(scope="module")
async def tight_replica(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """A replica whose streams expire after 1 s idle, with small bounds."""
    async with replica(
        settings,
        stream_idle_ttl_s=1,
        stream_max_per_key=2,
        stream_max_pending_rows=3,
        stream_max_results=4,
    ) as tight:
        yield tight


async def test_an_idle_stream_expires_with_every_key_it_had(
    app: FastAPI, tight_replica: tuple[FastAPI, httpx.AsyncClient], model_id: int
) -> None:
    tight_app, tight = tight_replica
    key = await make_key(app, ["predict"])
    stream_id = await start(tight, key, model_id, buffer_size=3, batch_timeout_ms=NEVER_MS)
    assert (await send(tight, key, stream_id, ROWS[:2], 0)).status_code == 202
    store = tight_app.state.components.get(StreamStore)
    sid = stream_sid(await key_id_of(app, key), stream_id)
    names = [store.keys.session(sid), store.keys.rows(sid), store.keys.seqs(sid)]
    assert await store.redis.exists(*names) == 3

    async def expired() -> bool:
        response = await tight.get(f"{STREAM}/{stream_id}/results", headers={"X-API-Key": key})
        if response.status_code == 200:
            return False
        assert response.status_code == 404, response.text
        return True

    # Each read refreshes an open stream: the waiting reads are spaced past the TTL.
    async def unread_for_a_while() -> bool:
        return await store.redis.exists(store.keys.session(sid)) == 0

    await until(unread_for_a_while, "the stream did not expire")
    assert await expired()
    assert await store.redis.exists(*names) == 0
    owned = await store.redis.zrange(store.keys.owned(await key_id_of(app, key)), 0, -1)
    assert stream_id.encode() not in owned


async def test_bounds_per_key_and_per_stream_answer_429(
    app: FastAPI, tight_replica: tuple[FastAPI, httpx.AsyncClient], model_id: int
) -> None:
    _, tight = tight_replica
    key = await make_key(app, ["predict"])
    headers = {"X-API-Key": key}
    first = await start(tight, key, model_id, buffer_size=3, batch_timeout_ms=NEVER_MS)
    too_big = await tight.post(
        f"{STREAM}/start", json={"model_id": model_id, "buffer_size": 4}, headers=headers
    )
    assert too_big.status_code == 400 and too_big.json()["details"]["limit"] == 3
    await start(tight, key, model_id, buffer_size=3)
    small = {"model_id": model_id, "buffer_size": 3}
    third = await tight.post(f"{STREAM}/start", json=small, headers=headers)
    assert third.status_code == 429 and "Retry-After" in third.headers
    assert third.json()["details"]["limit"] == 2
    assert (await send(tight, key, first, ROWS[:2], 0)).status_code == 202
    over = await send(tight, key, first, ROWS[2:4], 2)
    assert over.status_code == 429 and "Retry-After" in over.headers
    assert over.json()["details"]["pending"] == 2
    never = await send(tight, key, first, ROWS[2:6], 2)
    assert never.status_code == 400 and never.json()["details"]["limit"] == 3
    # A closed stream no longer counts against its key.
    assert (await tight.delete(f"{STREAM}/{first}", headers=headers)).status_code == 200
    assert (await tight.post(f"{STREAM}/start", json=small, headers=headers)).is_success


async def test_a_stream_keeps_its_newest_results(
    app: FastAPI, tight_replica: tuple[FastAPI, httpx.AsyncClient], model_id: int
) -> None:
    _, tight = tight_replica
    key = await make_key(app, ["predict"])
    stream_id = await start(tight, key, model_id, buffer_size=3, batch_timeout_ms=NEVER_MS)
    assert (await send(tight, key, stream_id, ROWS[:3], 0)).json()["flushed"] is True
    await read_until([tight], key, stream_id, 3)
    assert (await send(tight, key, stream_id, ROWS[3:6], 3)).json()["flushed"] is True

    async def flushed() -> bool:
        response = await tight.get(
            f"{STREAM}/{stream_id}/results", params={"cursor": 3}, headers={"X-API-Key": key}
        )
        return len(response.json()["results"]) == 3

    await until(flushed, "the second batch was not flushed")
    kept = await tight.get(f"{STREAM}/{stream_id}/results", headers={"X-API-Key": key})
    assert [r["sequence_id"] for r in kept.json()["results"]] == [2, 3, 4, 5]  # at most 4
