"""One endpoint table, two doors: the FastAPI routes and the fast lane are both built
from `inference/endpoints.py`, and answer every error, database errors included,
through the same conversion (`core/errors.py`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, NoReturn

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from control_plane.app import create_app
from control_plane.core.settings import Settings
from control_plane.inference.endpoints import ENDPOINTS
from control_plane.inference.lane import match
from control_plane.inference.routes import router as inference_router
from control_plane.inference.tabular import router as tabular_router
from control_plane.keys.access import Policy
from control_plane.keys.deps import declared_policy
from tests.control_plane.conftest import make_key, make_project, state_of


@pytest.fixture(scope="module")
async def fastapi_only(settings: Settings, model_ids: dict[str, int]) -> AsyncIterator[FastAPI]:
    """A second replica with the lane off: FastAPI routes every prediction."""
    replica = create_app(settings.model_copy(update={"fast_lane": False}), migrate=False)
    async with replica.router.lifespan_context(replica):
        yield replica


def test_each_endpoint_is_one_fastapi_route_and_one_lane_route(app: FastAPI) -> None:
    routes = [
        r for r in (*inference_router.routes, *tabular_router.routes) if isinstance(r, APIRoute)
    ]
    documented = app.openapi()["paths"]
    for endpoint in ENDPOINTS:
        found = [r for r in routes if r.path == endpoint.path and endpoint.method in r.methods]
        assert len(found) == 1, endpoint.path
        route = found[0]
        assert declared_policy(route) is endpoint.policy
        assert route.body_field is not None
        assert route.body_field.field_info.annotation is endpoint.body
        assert route.response_model is endpoint.response_model
        assert route.name == endpoint.name
        operation = documented[endpoint.path][endpoint.method.lower()]
        assert operation["summary"] == endpoint.summary
        assert {"400", "401", "403", "404", "413", "415", "422", "502"} <= set(
            operation["responses"]
        )
        sample = endpoint.path.replace(f"{{{endpoint.policy.resource}}}", "7")
        assert match(endpoint.method, sample) == (endpoint, 7)
    # No prediction route that only FastAPI serves: each one with the table's policies is in it.
    policies = {id(endpoint.policy) for endpoint in ENDPOINTS}
    predicting = {
        (route.path, method)
        for route in routes
        if id(declared_policy(route)) in policies
        for method in route.methods
    }
    assert predicting == {(endpoint.path, endpoint.method) for endpoint in ENDPOINTS}


def test_an_endpoint_must_name_its_policys_resource_in_its_path() -> None:
    endpoint = ENDPOINTS[0]
    with pytest.raises(ValueError, match="project_id"):
        type(endpoint)(**{**vars(endpoint), "policy": Policy("predict", "project_id")})


def _comparable(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    body.pop("request_id", None)
    body.pop("timestamp", None)
    headers = {
        name: response.headers.get(name)
        for name in ("content-type", "www-authenticate", "retry-after", "x-ratelimit-limit")
    }
    return {"status": response.status_code, "body": body, "headers": headers}


DATABASE_ERRORS = [
    (OperationalError("SELECT models", {}, Exception("database is locked")), 503),
    (DataError("SELECT models", {}, Exception("integer out of range")), 422),
    (IntegrityError("INSERT", {}, Exception("duplicate key")), 409),
]


@pytest.mark.parametrize(("error", "status"), DATABASE_ERRORS, ids=lambda v: type(v).__name__)
async def test_a_database_error_is_answered_alike_by_both_doors(
    app: FastAPI,
    fastapi_only: FastAPI,
    client: httpx.AsyncClient,
    admin_key: str,
    model_ids: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    status: int,
) -> None:
    """The runtime cache's SQL fails (a fault SQLite cannot be made to produce on
    demand): the lane answers with FastAPI's handlers, status, body and headers."""

    async def failing_sql(*_: object) -> NoReturn:
        raise error

    for door in (app, fastapi_only):
        monkeypatch.setattr(state_of(door).models, "get", failing_sql)
    a = model_ids["a"]
    project = await make_project(client, admin_key, [("Control", a, 1)])
    headers = {"X-API-Key": await make_key(app, ["predict"])}
    cases = [
        (f"/inference/predict/{a}", {"user_id": "u1"}),
        (f"/inference/predict/{a}/batch", {"user_ids": ["u1"]}),
        (f"/inference/predict/project/{project.id}", {"user_id": "u1"}),
        (f"/api/v1/models/{a}/predict", {"data": [[1.0, 2.0]]}),
    ]
    other = httpx.AsyncClient(transport=httpx.ASGITransport(app=fastapi_only), base_url="http://b")
    async with other:
        for path, body in cases:
            assert match("POST", path) is not None
            lane = await client.post(path, json=body, headers=headers)
            fastapi = await other.post(path, json=body, headers=headers)
            assert lane.status_code == status, (path, lane.text)
            assert _comparable(lane) == _comparable(fastapi), path
            if status == 503:  # a passing outage: the client is told when to retry
                assert lane.headers["retry-after"] == fastapi.headers["retry-after"] == "5"
