"""An app served by uvicorn on a real port, in the test's event loop (for clients
that speak plain HTTP: tritonclient, the CLI, WebSockets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from conch_embedded.process import free_port
from tests.control_plane.waiting import until


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """The app (its lifespan already running) at http://127.0.0.1:<port>."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())

    async def started() -> bool:
        assert not serving.done(), "uvicorn stopped"
        return server.started

    await until(started, "uvicorn did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving
