"""Seed 002's streaming sessions through the app: sends and reads spread over two
replicas, flushes by size and by timeout, rows of a stopped replica flushed again,
results in order, closing, visibility, refusals."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from control_plane.core.settings import Settings
from control_plane.jobs.streams import StreamStore, stream_sid
from tests.control_plane.conftest import make_key
from tests.control_plane.jobs.stream_helpers import (
    ERROR_FIELDS,
    NEVER_MS,
    ROWS,
    STREAM,
    key_id_of,
    predictions,
    read_until,
    replica,
    send,
    start,
)
from tests.control_plane.waiting import until


@pytest.fixture(scope="module")
async def other_replica(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with replica(settings) as (_, client):
        yield client


async def test_a_stream_spread_over_two_replicas_answers_as_predict_does(
    app: FastAPI, client: httpx.AsyncClient, other_replica: httpx.AsyncClient, model_id: int
) -> None:
    key = await make_key(app, ["predict"])
    stream_id = await start(
        client, key, model_id, stream_id="sensor-7.a", buffer_size=4, batch_timeout_ms=NEVER_MS
    )
    replicas = [client, other_replica]
    # One row, then three rows at once (ids 1..3), then single rows, on both replicas.
    sends = [(ROWS[0], 0), (ROWS[1:4], 1), *((ROWS[i], i) for i in range(4, 10))]
    for index, (data, sequence_id) in enumerate(sends):
        response = await send(replicas[index % 2], key, stream_id, data, sequence_id)
        assert response.status_code == 202, response.text
        assert response.json()["sequence_id"] == sequence_id
    closed = await other_replica.delete(f"{STREAM}/{stream_id}", headers={"X-API-Key": key})
    assert closed.status_code == 200, closed.text
    assert closed.json()["flushed"] == 2 and closed.json()["pending"] == 0  # 8 went by size
    results = await read_until(replicas, key, stream_id, len(ROWS))
    assert [r["sequence_id"] for r in results] == list(range(len(ROWS)))  # in order, once each
    expected = await predictions(client, key, model_id, ROWS)
    assert [r["prediction"] for r in results] == pytest.approx(expected, rel=1e-5)
    assert {r["batch_rows"] for r in results} == {4, 2}
    again = await client.get(
        f"{STREAM}/{stream_id}/results", params={"cursor": 10}, headers={"X-API-Key": key}
    )
    assert again.json() == {
        "stream_id": stream_id, "results": [], "next_cursor": 10, "pending": 0, "closed": True
    }  # fmt: skip


async def test_a_full_buffer_flushes_at_once_and_a_partial_one_waits(
    app: FastAPI, client: httpx.AsyncClient, model_id: int
) -> None:
    key = await make_key(app, ["predict"])
    stream_id = await start(client, key, model_id, buffer_size=3, batch_timeout_ms=NEVER_MS)
    first = await send(client, key, stream_id, ROWS[:2], 0)
    assert first.json() | {"stream_id": None} == {
        "stream_id": None, "sequence_id": 0, "rows": 2, "pending": 2, "flushed": False
    }  # fmt: skip
    waiting = await client.get(f"{STREAM}/{stream_id}/results", headers={"X-API-Key": key})
    assert waiting.json()["results"] == [] and waiting.json()["pending"] == 2
    filling = await send(client, key, stream_id, ROWS[2], 2)
    assert filling.json()["flushed"] is True and filling.json()["pending"] == 3
    results = await read_until([client], key, stream_id, 3)
    assert [r["batch_rows"] for r in results] == [3, 3, 3]


async def test_rows_waiting_past_batch_timeout_are_flushed_by_a_replica(
    app: FastAPI, client: httpx.AsyncClient, other_replica: httpx.AsyncClient, model_id: int
) -> None:
    key = await make_key(app, ["predict"])
    stream_id = await start(client, key, model_id, buffer_size=100, batch_timeout_ms=30)
    sent = await send(client, key, stream_id, ROWS[:2], 0)
    assert sent.json()["flushed"] is False
    results = await read_until([other_replica], key, stream_id, 2)
    assert [r["batch_rows"] for r in results] == [2, 2]
    expected = await predictions(client, key, model_id, ROWS[:2])
    assert [r["prediction"] for r in results] == pytest.approx(expected, rel=1e-5)


async def test_rows_a_stopped_replica_took_are_flushed_again_by_another(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings, model_id: int
) -> None:
    key = await make_key(app, ["predict"])
    stream_id = await start(client, key, model_id, buffer_size=2, batch_timeout_ms=NEVER_MS)
    serving = app.state.components.get(StreamStore)
    # A replica that takes the rows and stops before answering: its claim lapses at once.
    stopped = StreamStore(
        serving.redis,
        settings.deployment_id,
        idle_ttl_s=60,
        max_per_key=10,
        max_pending=10,
        max_results=10,
        claim_after_s=0.001,
    )
    session = await serving.get(stream_sid(await key_id_of(app, key), stream_id))
    assert session is not None
    sent = await stopped.send(session, 0, ROWS[:2])
    assert sent.outcome == "taken" and sent.batch is not None  # and never stored
    results = await read_until([client], key, stream_id, 2)
    expected = await predictions(client, key, model_id, ROWS[:2])
    assert [r["prediction"] for r in results] == pytest.approx(expected, rel=1e-5)
    assert not await stopped.store(sent.batch, {0: {"late": True}})  # too late: ignored


async def test_results_stop_before_the_first_row_still_being_predicted(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings, model_id: int
) -> None:
    key = await make_key(app, ["predict"])
    headers = {"X-API-Key": key}
    stream_id = await start(client, key, model_id, buffer_size=1, batch_timeout_ms=NEVER_MS)
    serving = app.state.components.get(StreamStore)
    slow = StreamStore(
        serving.redis,
        settings.deployment_id,
        idle_ttl_s=60,
        max_per_key=10,
        max_pending=10,
        max_results=10,
        claim_after_s=60,
    )
    sid = stream_sid(await key_id_of(app, key), stream_id)
    session = await serving.get(sid)
    assert session is not None
    taken = await slow.send(session, 0, [ROWS[0]])  # row 0: taken by a slow replica
    assert taken.batch is not None
    assert (await send(client, key, stream_id, ROWS[1], 1)).json()["flushed"] is True

    async def row_1_done() -> bool:
        return bool(await serving.redis.hexists(serving.keys.results(sid), "1"))  # type: ignore[misc]

    await until(row_1_done, "row 1 was not predicted")
    blocked = await client.get(f"{STREAM}/{stream_id}/results", headers=headers)
    assert blocked.json()["results"] == [] and blocked.json()["pending"] == 1
    assert blocked.json()["next_cursor"] == 0
    assert await slow.store(taken.batch, {0: {"sequence_id": 0, "prediction": 1.5}})
    read = await client.get(f"{STREAM}/{stream_id}/results", headers=headers)
    assert [r["sequence_id"] for r in read.json()["results"]] == [0, 1]
    assert read.json()["results"][0]["prediction"] == 1.5 and read.json()["next_cursor"] == 2


async def test_bad_sends_are_refused_and_nothing_is_buffered(
    app: FastAPI, client: httpx.AsyncClient, model_id: int
) -> None:
    key = await make_key(app, ["predict"])
    stream_id = await start(client, key, model_id, buffer_size=100, batch_timeout_ms=NEVER_MS)
    assert (await send(client, key, stream_id, ROWS[:3], 5)).status_code == 202  # ids 5..7
    cases: list[tuple[object, object, int]] = [
        (ROWS[0], 6, 409),  # already sent
        (ROWS[:2], 4, 409),  # 4 is new, 5 is not
        ([[1.0, 2.0]], 9, 400),  # two features where the model takes ten
        ([1.0] * 9 + [float("nan")], 9, 400),
        ([1.0] * 9 + ["x"], 9, 400),
        ([], 9, 400),
        (ROWS[0], -1, 422),
        (ROWS[0], "9", 422),
        (ROWS[0], True, 422),
    ]
    for data, sequence_id, status in cases:
        response = await client.post(
            f"{STREAM}/{stream_id}/send",
            content=_json(data, sequence_id),
            headers={"X-API-Key": key, "Content-Type": "application/json"},
        )
        assert response.status_code == status, (data, sequence_id, response.text)
        assert set(response.json()) == ERROR_FIELDS
    duplicate = await send(client, key, stream_id, ROWS[0], 6)
    assert duplicate.json()["details"] == {"stream_id": stream_id, "sequence_id": 6}
    narrow = await send(client, key, stream_id, [ROWS[0], [1.0, 2.0]], 8)
    assert narrow.json()["details"] | {"input": None} == {
        "input": None, "row": 1, "sequence_id": 9, "expected_features": 10, "found": 2
    }  # fmt: skip
    text = await send(client, key, stream_id, [1.0] * 9 + ["x"], 9)
    assert text.json()["details"]["feature"] and text.json()["details"]["sequence_id"] == 9
    read = await client.get(f"{STREAM}/{stream_id}/results", headers={"X-API-Key": key})
    assert read.json()["pending"] == 3


def _json(data: object, sequence_id: object) -> bytes:
    return json.dumps({"data": data, "sequence_id": sequence_id}).encode()


async def test_a_stream_is_its_keys_and_its_admins_only(
    app: FastAPI, client: httpx.AsyncClient, admin_key: str, model_id: int
) -> None:
    owner = await make_key(app, ["predict"])
    stranger = await make_key(app, ["predict"])
    stream_id = await start(client, owner, model_id, stream_id="shared-name")
    owner_id = await key_id_of(app, owner)
    hidden = await client.get(f"{STREAM}/{stream_id}/results", headers={"X-API-Key": stranger})
    unknown = await client.get(f"{STREAM}/nothing-here/results", headers={"X-API-Key": stranger})
    assert hidden.status_code == unknown.status_code == 404
    assert hidden.json()["error"] == unknown.json()["error"] == "NotFoundError"
    peeking = await client.get(
        f"{STREAM}/{stream_id}/results",
        params={"owner_key_id": owner_id},
        headers={"X-API-Key": stranger},
    )
    assert peeking.status_code == 404
    for method in ("POST", "DELETE"):
        refused = await client.request(
            method,
            f"{STREAM}/{stream_id}" + ("/send" if method == "POST" else ""),
            json={"data": ROWS[0], "sequence_id": 0} if method == "POST" else None,
            headers={"X-API-Key": stranger},
        )
        assert refused.status_code == 404, refused.text
    # The same name under another key is another stream.
    assert await start(client, stranger, model_id, stream_id="shared-name") == "shared-name"
    assert (await send(client, stranger, stream_id, ROWS[0], 0)).status_code == 202
    assert (await send(client, owner, stream_id, ROWS[0], 0)).status_code == 202
    admin = await client.get(
        f"{STREAM}/{stream_id}/results",
        params={"owner_key_id": owner_id},
        headers={"X-API-Key": admin_key},
    )
    assert admin.status_code == 200 and admin.json()["pending"] == 1
    again = await client.post(
        f"{STREAM}/start",
        json={"model_id": model_id, "stream_id": "shared-name"},
        headers={"X-API-Key": owner},
    )
    assert again.status_code == 409
    for bad in ("with space", "a" * 101, "x/y", ""):
        response = await client.post(
            f"{STREAM}/start",
            json={"model_id": model_id, "stream_id": bad},
            headers={"X-API-Key": owner},
        )
        assert response.status_code == 422, bad
    generated = await client.post(
        f"{STREAM}/start", json={"model_id": "no-such-model"}, headers={"X-API-Key": owner}
    )
    assert generated.status_code == 404


async def test_delete_flushes_then_closes_and_is_idempotent(
    app: FastAPI, client: httpx.AsyncClient, other_replica: httpx.AsyncClient, model_id: int
) -> None:
    key = await make_key(app, ["predict"])
    headers = {"X-API-Key": key}
    stream_id = await start(client, key, model_id, buffer_size=100, batch_timeout_ms=NEVER_MS)
    assert (await send(client, key, stream_id, ROWS[:3], 0)).status_code == 202
    closed = await other_replica.delete(f"{STREAM}/{stream_id}", headers=headers)
    assert closed.json() == {"stream_id": stream_id, "closed": True, "flushed": 3, "pending": 0}
    read = await client.get(f"{STREAM}/{stream_id}/results", headers=headers)
    assert [r["sequence_id"] for r in read.json()["results"]] == [0, 1, 2]
    assert read.json()["closed"] is True and read.json()["pending"] == 0
    late = await send(client, key, stream_id, ROWS[3], 3)
    assert late.status_code == 409 and set(late.json()) == ERROR_FIELDS
    twice = await client.delete(f"{STREAM}/{stream_id}", headers=headers)
    assert twice.json() == {"stream_id": stream_id, "closed": True, "flushed": 0, "pending": 0}
