"""Streams in tests: a regressor to stream to, replicas on the same SQL and Redis,
reading a stream's results to the end, and the app served by a real uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import async_sessionmaker
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from conch_embedded.process import free_port
from control_plane.app import create_app
from control_plane.core.settings import Settings
from control_plane.keys.verifier import KeyVerifier
from tests.control_plane.conftest import register_model
from tests.control_plane.engine_api.tabular_model import export_regressor, predict_rows
from tests.control_plane.waiting import DEADLINE_S, until

STREAM = "/api/inference/stream"
NEVER_MS = 60_000  # a batch_timeout_ms no test waits for: only size or close flushes
ERROR_FIELDS = {"error", "message", "details", "timestamp", "request_id"}
# Ten rows of the regressor's ten features, all different.
ROWS = [[0.01 * (i + j) for i in range(10)] for j in range(10)]


async def register_regressor(
    client: httpx.AsyncClient, admin_key: str, repository: Path, workdir: Path
) -> int:
    """A freshly exported regressor, registered and loaded."""
    triton_name = export_regressor(repository, workdir)
    model_id = await register_model(client, admin_key, triton_name)
    assert (await predict_rows(client, model_id, admin_key)).status_code == 200  # loaded
    return model_id


@contextlib.asynccontextmanager
async def replica(
    settings: Settings, **changes: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """Another replica on the same SQL and Redis, its settings changed by `changes`."""
    app = create_app(settings.model_copy(update=changes), migrate=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
            yield app, client


async def key_id_of(app: FastAPI, key: str) -> int:
    components = app.state.components
    principal = await components.get(KeyVerifier).verify(components.get(async_sessionmaker), key)
    key_id: int = principal.key_id
    return key_id


async def start(client: httpx.AsyncClient, key: str, model_id: int, **body: Any) -> str:
    response = await client.post(
        f"{STREAM}/start", json={"model_id": model_id, **body}, headers={"X-API-Key": key}
    )
    assert response.status_code == 201, response.text
    stream_id: str = response.json()["stream_id"]
    return stream_id


async def send(
    client: httpx.AsyncClient, key: str, stream_id: str, data: Any, sequence_id: int
) -> httpx.Response:
    return await client.post(
        f"{STREAM}/{stream_id}/send",
        json={"data": data, "sequence_id": sequence_id},
        headers={"X-API-Key": key},
    )


async def read_until(
    clients: list[httpx.AsyncClient], key: str, stream_id: str, count: int
) -> list[dict[str, Any]]:
    """Every result up to `count` of them, read with the cursor each answer gives,
    the reads spread over `clients` in turn."""
    results: list[dict[str, Any]] = []
    cursor = 0
    reads = 0

    async def all_read() -> bool:
        nonlocal cursor, reads
        client = clients[reads % len(clients)]
        reads += 1
        response = await client.get(
            f"{STREAM}/{stream_id}/results",
            params={"cursor": cursor, "limit": 3},
            headers={"X-API-Key": key},
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        results.extend(answer["results"])
        cursor = answer["next_cursor"]
        return len(results) >= count

    await until(all_read, f"stream {stream_id}: not {count} results")
    return results


async def predictions(
    client: httpx.AsyncClient, key: str, model_id: int, rows: list[Any]
) -> list[Any]:
    """The synchronous door's predictions of `rows`."""
    response = await client.post(
        "/api/inference/predict",
        json={"data": rows, "model_id": model_id},
        headers={"X-API-Key": key},
    )
    assert response.status_code == 200, response.text
    values: list[Any] = response.json()["predictions"]
    return values


@contextlib.asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """`app` (its lifespan already running) behind a real uvicorn: its ws:// base URL."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="off",
        log_level="warning",
        ws="websockets-sansio",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started

    await until(started, "uvicorn did not start")
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


async def until_closed(socket: ClientConnection) -> tuple[list[dict[str, Any]], int, str]:
    """Every message until the server closes: the messages, the close code and reason."""
    messages = []
    async with asyncio.timeout(DEADLINE_S):  # a guard against a hang, not a bound
        try:
            async for text in socket:
                messages.append(orjson.loads(text))
        except ConnectionClosed:
            pass
    assert socket.close_code is not None
    return messages, socket.close_code, socket.close_reason or ""
