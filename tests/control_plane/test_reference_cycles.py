"""A prediction leaves the cyclic garbage collector nothing to find.

A full collection stops the event loop for as long as it takes to walk the heap,
which showed as every request in flight stalling at once under load (issue 14).
Objects freed by reference counting never reach the collector; a reference cycle
created per request (an exception kept with its traceback, a parser pointing back
at its reader, a future and a callback holding each other) does. Requests go
straight into the ASGI app, so nothing of a test client is counted.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from tests.control_plane.conftest import make_key
from tests.control_plane.engine_api.tabular_model import ROW, export_regressor, predict_rows

REQUESTS = 400
# Fewer objects than requests: a cycle per request leaves at least two each. The
# slack is for background work that may leave a cycle meanwhile (measured with
# PostgreSQL and Redis: about 33 objects every half second).
ALLOWED = REQUESTS


async def _post(app: FastAPI, path: str, body: dict[str, Any], key: str) -> int:
    raw = orjson.dumps(body)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"conch"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
            (b"x-api-key", key.encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8081),
        "state": {},
    }
    statuses = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)
    return statuses[0]


@pytest.fixture
def collector_off() -> Iterator[None]:
    """Automatic collections off, and what a collection finds kept in gc.garbage."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


@pytest.fixture(scope="module")
async def tabular(
    client: httpx.AsyncClient,
    admin_key: str,
    model_repository: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> int:
    triton_name = export_regressor(model_repository, tmp_path_factory.mktemp("cycles"))
    response = await client.post(
        "/api/v1/models", json={"triton_name": triton_name}, headers={"X-API-Key": admin_key}
    )
    model_id: int = response.json()["id"]
    assert (await predict_rows(client, model_id, admin_key)).status_code == 200
    return model_id


@pytest.mark.parametrize("door", ["engine", "feature rows"])
async def test_predictions_leave_no_reference_cycles(
    app: FastAPI, tabular: int, door: str, request: pytest.FixtureRequest
) -> None:
    key = await make_key(app, ["predict"], rate_limit="100000/minute")
    path, body = (
        ("/api/inference/predict", {"data": ROW, "model_id": tabular})
        if door == "engine"
        else (f"/api/v1/models/{tabular}/predict", {"data": ROW})
    )
    for _ in range(50):  # warm: caches filled, connections open
        assert await _post(app, path, body, key) == 200
    request.getfixturevalue("collector_off")
    for _ in range(REQUESTS):
        assert await _post(app, path, body, key) == 200
    found = gc.collect()
    kinds = Counter(type(o).__qualname__ for o in gc.garbage).most_common(10)
    assert found <= ALLOWED, f"{found} unreachable objects after {REQUESTS} requests: {kinds}"
