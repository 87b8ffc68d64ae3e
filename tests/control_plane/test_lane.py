"""The prediction fast lane answers exactly as the FastAPI routes do, and spares Triton
the requests of a key that is over its limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from control_plane.app import create_app
from control_plane.core.settings import Settings
from control_plane.inference.lane import match
from tests.control_plane.conftest import make_key, make_project, state_of


@pytest.fixture(scope="module")
async def fastapi_only(settings: Settings, model_ids: dict[str, int]) -> AsyncIterator[FastAPI]:
    """A second replica with the lane off: FastAPI routes every prediction."""
    replica = create_app(settings.model_copy(update={"fast_lane": False}), migrate=False)
    async with replica.router.lifespan_context(replica):
        yield replica


def _comparable(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    body.pop("request_id", None)
    body.pop("timestamp", None)
    for result in body.get("results", []):
        result.pop("request_id")
    details = body.get("details", {})
    for error in details.get("errors", []):
        error.pop("msg")  # wording differs between FastAPI's JSON decoder and pydantic's
    headers = {
        name: response.headers.get(name)
        for name in ("content-type", "www-authenticate", "x-ratelimit-limit")
    }
    return {"status": response.status_code, "body": body, "headers": headers}


async def test_lane_and_fastapi_answer_alike(
    app: FastAPI,
    fastapi_only: FastAPI,
    client: httpx.AsyncClient,
    admin_key: str,
    model_ids: dict[str, int],
) -> None:
    predict = await make_key(app, ["predict"], rate_limit="1000/minute")
    read_only = await make_key(app, ["read"])
    project = await make_project(client, admin_key, [("Control", model_ids["a"], 1)])
    a = model_ids["a"]
    cases: list[tuple[str, Any, str | None]] = [
        (f"/inference/predict/{a}", {"user_id": "u1", "cutoff": 3}, predict),
        (f"/inference/predict/{a}", {"user_id": "nobody"}, predict),
        ("/inference/predict/999999", {"user_id": "u1"}, predict),
        (f"/inference/predict/{a}", {"user_id": "u1", "cutoff": 0}, predict),
        (f"/inference/predict/{a}", {"cutoff": 5}, predict),
        (f"/inference/predict/{a}", {"user_id": "u1"}, None),
        (f"/inference/predict/{a}", {"user_id": "u1"}, "conch_not_a_key"),
        (f"/inference/predict/{a}", {"user_id": "u1"}, read_only),
        (f"/inference/predict/{a}/batch", {"user_ids": ["u1", "nobody"]}, predict),
        (f"/inference/predict/{a}/batch", {"user_ids": []}, predict),
        (f"/inference/predict/project/{project.id}", {"user_id": "u2"}, predict),
        ("/inference/predict/project/999999", {"user_id": "u2"}, predict),
        (f"/api/v1/models/{a}/predict", {"data": [[1.0, 2.0]]}, predict),
        (f"/api/v1/models/{a}/predict", {"data": "rows"}, predict),
    ]
    other = httpx.AsyncClient(transport=httpx.ASGITransport(app=fastapi_only), base_url="http://b")
    async with other:
        for path, body, key in cases:
            assert match("POST", path) is not None, path
            headers = {"X-API-Key": key} if key else {}
            lane = await client.post(path, json=body, headers=headers)
            fastapi = await other.post(path, json=body, headers=headers)
            assert _comparable(lane) == _comparable(fastapi), (path, body)
            assert lane.headers["X-Request-ID"] == lane.json().get(
                "request_id", lane.headers["X-Request-ID"]
            )
        malformed = {"X-API-Key": predict, "content-type": "application/json"}
        path = f"/inference/predict/{a}"
        lane = await client.post(path, content=b"{not json", headers=malformed)
        fastapi = await other.post(path, content=b"{not json", headers=malformed)
        assert lane.status_code == fastapi.status_code == 422
        assert lane.json()["error"] == fastapi.json()["error"] == "ValidationError"


LAX_BODIES = [
    ("/inference/predict/{a}", {"user_id": "u1", "cutoff": "5"}, ("body", "cutoff")),
    ("/inference/predict/{a}", {"user_id": "u1", "cutoff": True}, ("body", "cutoff")),
    ("/inference/predict/{a}", {"user_id": "u1", "cutoff": 5.0}, ("body", "cutoff")),
    ("/inference/predict/{a}", {"user_id": 7}, ("body", "user_id")),
    ("/inference/predict/{a}/batch", {"user_ids": ["u1", 2]}, ("body", "user_ids", 1)),
    ("/api/v1/models/{a}/predict", {"data": [["1.5", 2.0]]}, ("body", "data", 0, 0)),
    ("/api/v1/models/{a}/predict", {"data": [[True, 2.0]]}, ("body", "data", 0, 0)),
]


@pytest.mark.parametrize(("path", "body", "where"), LAX_BODIES)
async def test_prediction_bodies_are_strict_on_both_doors(
    app: FastAPI,
    fastapi_only: FastAPI,
    model_ids: dict[str, int],
    path: str,
    body: Any,
    where: tuple[Any, ...],
) -> None:
    """A string is not a number and true is not 1: 422 naming the field, lane or not."""
    headers = {"X-API-Key": await make_key(app, ["predict"])}
    for door in (app, fastapi_only):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=door), base_url="http://conch"
        ) as client:
            response = await client.post(path.format(a=model_ids["a"]), json=body, headers=headers)
        assert response.status_code == 422, response.text
        assert [tuple(e["loc"]) for e in response.json()["details"]["errors"]] == [where]


def test_only_the_prediction_paths_take_the_lane() -> None:
    assert match("POST", "/inference/predict/12") is not None
    assert match("GET", "/inference/predict/12") is None
    assert match("POST", "/inference/predict/abc") is None  # FastAPI's 422
    assert match("POST", "/inference/predict/12345678901") is None  # beyond the id column
    assert match("POST", "/inference/predict/0") is None  # FastAPI's 422, as for any id < 1
    assert match("POST", "/inference/predict/012") is None
    assert match("POST", "/inference/health") is None
    assert match("POST", "/api/v1/models/3") is None


def _inference_count(stats: dict[str, Any]) -> int:
    return int(stats["model_stats"][0].get("inference_count", 0))


async def test_a_key_over_its_limit_costs_triton_nothing(
    app: FastAPI, client: httpx.AsyncClient, model_ids: dict[str, int], recommenders: dict[str, str]
) -> None:
    key = await make_key(app, ["predict"], rate_limit="2/minute")
    headers = {"X-API-Key": key}
    path = f"/inference/predict/{model_ids['b']}"
    triton = state_of(app).triton
    statuses = [
        (await client.post(path, json={"user_id": "u1"}, headers=headers)).status_code
        for _ in range(3)
    ]
    # The third ran beside its limit check (that is what hides the Redis round trip)...
    assert statuses == [200, 200, 429]
    before = _inference_count(await triton.statistics(recommenders["b"]))
    for _ in range(3):
        refused = await client.post(path, json={"user_id": "u1"}, headers=headers)
        assert refused.status_code == 429
        assert refused.headers["X-RateLimit-Remaining"] == "0"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # ...but once the key is known to be over its limit, nothing reaches Triton.
    assert _inference_count(await triton.statistics(recommenders["b"])) == before
