"""Registering into a project from the command line: `conch models register --project`
and the exporters' `--register --project`, against a real replica."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from control_plane.cli import with_commands
from control_plane.core.settings import Settings, get_settings
from exporters.cli import register_with_control_plane
from exporters.errors import ExportError
from tests.control_plane.conftest import make_key, make_project
from tests.control_plane.recommender_model import write_recommender
from tests.control_plane.replicas import replica_env, uvicorn_replica

cli = with_commands()


@pytest.fixture(scope="module")
def server(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with uvicorn_replica(settings, tmp_path_factory.mktemp("cli-projects")) as url:
        yield url


def _export(model_repository: Path, seed: int) -> str:
    name = f"cptest_cliproj_{uuid.uuid4().hex[:8]}"
    write_recommender(model_repository, name, seed)
    return name


async def test_models_register_takes_the_project(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin_key: str,
    settings: Settings,
    server: str,
    model_repository: Path,
) -> None:
    project = await make_project(client, admin_key, [])
    env = {
        **replica_env(settings),
        "CONCH_URL": server,
        "CONCH_API_KEY": await make_key(app, ["write"], project_id=project.id),
    }
    name = _export(model_repository, seed=51)
    get_settings.cache_clear()
    try:
        refused = CliRunner().invoke(cli, ["models", "register", name], env=env)
        registered = CliRunner().invoke(
            cli, ["models", "register", name, "--project", str(project.id)], env=env
        )
    finally:
        get_settings.cache_clear()
    assert refused.exit_code == 1 and "403" in refused.output, refused.output
    assert registered.exit_code == 0, registered.output
    assert json.loads(registered.stdout)["project_id"] == project.id


async def test_the_exporters_register_into_the_project(
    app: FastAPI, client: httpx.AsyncClient, admin_key: str, server: str, model_repository: Path
) -> None:
    project = await make_project(client, admin_key, [])
    key = await make_key(app, ["write"], project_id=project.id)
    name = _export(model_repository, seed=52)
    with pytest.raises(ExportError, match="403"):
        register_with_control_plane(server, key, name)
    model = register_with_control_plane(server, key, name, project.id)
    assert model["project_id"] == project.id and model["triton_name"] == name
