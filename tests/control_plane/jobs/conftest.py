"""Registered models the job tests name: one shared by the session's async-task tests,
one per stream test module, and the app served over a real port (WebSockets)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tests.control_plane.jobs.stream_helpers import register_regressor, served


@pytest.fixture(scope="session")
async def regressor_id(
    client: httpx.AsyncClient,
    admin_key: str,
    model_repository: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> int:
    """A Ridge regressor over `tabular_model.ROW`'s ten features, loaded."""
    workdir = tmp_path_factory.mktemp("regressor")
    return await register_regressor(client, admin_key, model_repository, workdir)


@pytest.fixture(scope="module")
async def model_id(
    request: pytest.FixtureRequest,
    client: httpx.AsyncClient,
    admin_key: str,
    model_repository: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> int:
    """A regressor of the module's own (the stream tests'), registered and loaded; a
    module that defines its own `model_id` uses that one."""
    workdir = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    return await register_regressor(client, admin_key, model_repository, workdir)


@pytest.fixture(scope="module")
async def ws_url(app: FastAPI) -> AsyncIterator[str]:
    async with served(app) as url:
        yield url
