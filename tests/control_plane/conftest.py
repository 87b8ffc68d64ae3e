"""Control-plane fixtures: one app (lifespan run once) over the session's real servers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from conch_embedded.triton_server import EmbeddedTriton
from control_plane.app import create_app
from control_plane.core.settings import Settings
from control_plane.db import upgrade
from control_plane.keys.service import create_key
from control_plane.state import AppState
from tests.control_plane.recommender_model import write_recommender
from tests.control_plane.secret_key import TEST_SECRET_KEY

# High enough that functional tests never meet the limiter; the rate-limit tests
# create keys with the default (100/minute) instead.
UNLIMITED = "1000000/minute"


@pytest.fixture(scope="session")
def recommenders(model_repository: Path) -> dict[str, str]:
    names = {"a": "cptest_rec_a", "b": "cptest_rec_b"}
    for seed, name in enumerate(names.values(), start=1):
        write_recommender(model_repository, name, seed)
    return names


@pytest.fixture(scope="session")
def settings(
    database_url: str,
    redis_url: str,
    triton: EmbeddedTriton,
    model_repository: Path,
    recommenders: dict[str, str],
) -> Settings:
    return stack_settings(database_url, redis_url, triton, model_repository)


def stack_settings(
    database_url: str, redis_url: str, triton: EmbeddedTriton, model_repository: Path
) -> Settings:
    """Settings for a control plane on the session's SQL (migrated), Redis and Triton."""
    upgrade(database_url)
    return Settings(
        environment="test",
        secret_key=TEST_SECRET_KEY,
        database_url=database_url,
        redis_url=redis_url,
        model_events_redis_url=redis_url,
        triton_grpc_url=triton.grpc_url,
        triton_http_url=triton.http_url,
        model_repository=model_repository,
        callback_allowed_hosts="127.0.0.1",  # the tests' callback receivers listen there
    )


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings, migrate=False)
    async with application.router.lifespan_context(application):
        yield application


def state_of(app: FastAPI) -> AppState:
    state: AppState = app.state.conch
    return state


@pytest.fixture(scope="session")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://conch") as http:
        yield http


async def make_key(
    app: FastAPI,
    scopes: Sequence[str],
    *,
    project_id: int | None = None,
    rate_limit: str | None = UNLIMITED,
    name: str = "test",
) -> str:
    """A key created straight in SQL, as `conch keys create` does; returns the plaintext."""
    state = state_of(app)
    async with state.sessionmaker() as session, session.begin():
        _, token = await create_key(
            session,
            state.settings.secret_key.get_secret_value(),
            scopes=scopes,
            project_id=project_id,
            rate_limit=rate_limit,
            name=name,
        )
    return token


async def register_model(client: httpx.AsyncClient, admin_key: str, triton_name: str) -> int:
    """`triton_name` registered through the API; its id."""
    response = await client.post(
        "/api/v1/models", json={"triton_name": triton_name}, headers={"X-API-Key": admin_key}
    )
    assert response.status_code == 201, response.text
    model_id: int = response.json()["id"]
    return model_id


@pytest.fixture(scope="session")
async def admin_key(app: FastAPI) -> str:
    return await make_key(app, ["admin"], name="admin")


@pytest.fixture(scope="session")
async def predict_key(app: FastAPI) -> str:
    return await make_key(app, ["predict"], name="predict")


@pytest.fixture(scope="session")
async def model_ids(
    client: httpx.AsyncClient, admin_key: str, recommenders: dict[str, str]
) -> dict[str, int]:
    ids = {}
    for label, triton_name in recommenders.items():
        response = await client.post(
            "/api/v1/models", json={"triton_name": triton_name}, headers={"X-API-Key": admin_key}
        )
        assert response.status_code == 201, response.text
        ids[label] = response.json()["id"]
    return ids


@dataclass
class ProjectSetup:
    id: int
    slots: dict[str, int]  # slot name -> id


async def make_project(
    client: httpx.AsyncClient,
    admin_key: str,
    slots: Sequence[tuple[str, int, int]],
    *,
    sticky: bool = False,
) -> ProjectSetup:
    """A project with uniquely named (name, model_id, weight) slots."""
    headers = {"X-API-Key": admin_key}
    response = await client.post(
        "/api/v1/projects",
        json={"name": f"test-{uuid.uuid4().hex[:10]}", "sticky": sticky},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    project_id = response.json()["id"]
    slot_ids = {}
    for name, model_id, weight in slots:
        response = await client.post(
            f"/api/v1/projects/{project_id}/slots",
            json={"name": name, "model_id": model_id, "weight": weight},
            headers=headers,
        )
        assert response.status_code == 201, response.text
        slot_ids[name] = response.json()["id"]
    return ProjectSetup(project_id, slot_ids)
