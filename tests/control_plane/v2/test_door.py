"""The v2 door's policy and errors: keys, scopes, projects, limits, ids, bad bodies, loads."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from fastapi import FastAPI

from conch_embedded.triton_server import EmbeddedTriton
from control_plane.app import create_app
from control_plane.lifecycle.status import LoadState
from control_plane.model_core.stats import InferenceStats
from control_plane.v2.routes import LANE_ENDPOINTS
from tests.control_plane.conftest import make_key, make_project, register_model, state_of
from tests.control_plane.v2.conftest import Tabular, export_iris
from tests.control_plane.waiting import until

(LANE_INFER,) = LANE_ENDPOINTS
ERROR_BODY = {"error", "message", "details", "timestamp", "request_id"}


def _json_request(rows: npt.NDArray[np.float32], **changes: object) -> dict[str, object]:
    tensor: dict[str, object] = {"name": "input", "shape": list(rows.shape), "datatype": "FP32"}
    tensor["data"] = rows.flatten().tolist()
    tensor.update(changes)
    return {"inputs": [tensor]}


def _binary_request(
    rows: npt.NDArray[np.float32], declared_size: int | None = None
) -> tuple[bytes, int]:
    raw = rows.astype(np.float32).tobytes()
    size = len(raw) if declared_size is None else declared_size
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(rows.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": size},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return header + raw, len(header)


@pytest.fixture(scope="module")
async def keys(app: FastAPI) -> dict[str, str]:
    return {
        "predict": await make_key(app, ["predict"], name="v2-predict"),
        "read": await make_key(app, ["read"], name="v2-read"),
    }


@pytest.fixture(scope="module")
async def served_iris(client: httpx.AsyncClient, iris: Tabular, keys: dict[str, str]) -> Tabular:
    """The model loaded by inference (the door answers 503 while it loads)."""
    headers = {"X-API-Key": keys["predict"]}

    async def served() -> bool:
        response = await client.post(
            f"/v2/models/{iris.model_id}/infer", json=_json_request(iris.rows), headers=headers
        )
        assert response.status_code in (200, 503), response.text
        return response.status_code == 200

    await until(served, "the model was not served")
    return iris


def _assert_error(response: httpx.Response, status: int, triton: EmbeddedTriton) -> None:
    assert response.status_code == status, response.text
    assert set(response.json()) == ERROR_BODY
    # Never where Triton listens.
    assert triton.http_url not in response.text and "127.0.0.1" not in response.text


async def test_keys_and_scopes(
    client: httpx.AsyncClient, served_iris: Tabular, keys: dict[str, str], triton: EmbeddedTriton
) -> None:
    infer = f"/v2/models/{served_iris.name}/infer"
    metadata = f"/v2/models/{served_iris.name}"
    body = _json_request(served_iris.rows)
    _assert_error(await client.post(infer, json=body), 401, triton)
    bad = {"X-API-Key": "conch_" + "A" * 38}
    _assert_error(await client.post(infer, json=body, headers=bad), 401, triton)
    bad_bearer = {"Authorization": "Bearer not-a-key"}
    _assert_error(await client.get(metadata, headers=bad_bearer), 401, triton)
    # Another scheme is no key at all.
    basic = {"Authorization": f"Basic {keys['read']}"}
    _assert_error(await client.get(metadata, headers=basic), 401, triton)
    read_only, predict_only = {"X-API-Key": keys["read"]}, {"X-API-Key": keys["predict"]}
    _assert_error(await client.post(infer, json=body, headers=read_only), 403, triton)
    _assert_error(await client.get(metadata, headers=predict_only), 403, triton)
    _assert_error(await client.get("/v2", headers=predict_only), 403, triton)
    assert (await client.post(infer, json=body, headers=predict_only)).status_code == 200
    bearer = {"Authorization": f"Bearer {keys['read']}"}
    assert (await client.get(metadata, headers=bearer)).status_code == 200
    # Health is public.
    assert (await client.get("/v2/health/live")).json() == {"live": True}
    assert (await client.get("/v2/health/ready")).json() == {"ready": True}


def _shape(response: httpx.Response) -> tuple[int, str, str, set[str]]:
    body = response.json()
    message = re.sub(r"\d+", "N", re.sub(r"'[^']*'", "'N'", body["message"]))
    return response.status_code, body["error"], message, set(body["details"])


async def test_another_projects_model_reads_like_an_unknown_one(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin_key: str,
    served_iris: Tabular,
    model_ids: dict[str, int],
    recommenders: dict[str, str],
) -> None:
    project = await make_project(client, admin_key, [("Control", model_ids["a"], 100)])
    restricted = {"X-API-Key": await make_key(app, ["read", "predict"], project_id=project.id)}
    own = await client.get(f"/v2/models/{recommenders['a']}/config", headers=restricted)
    assert own.status_code in (200, 503), own.text  # its own model: visible (maybe loading)
    for ref in (served_iris.name, served_iris.triton_name, str(served_iris.model_id)):
        for path in (f"/v2/models/{ref}", f"/v2/models/{ref}/ready", f"/v2/models/{ref}/infer"):
            method = "POST" if path.endswith("/infer") else "GET"
            body = _json_request(served_iris.rows) if method == "POST" else None
            hidden = await client.request(method, path, json=body, headers=restricted)
            by_id = ref.isdigit()
            no_such = "2000000000" if by_id else f"no-such-{uuid.uuid4().hex[:6]}"
            unknown_path = path.replace(ref, no_such)
            unknown = await client.request(method, unknown_path, json=body, headers=restricted)
            assert hidden.status_code == 404, hidden.text
            assert _shape(hidden) == _shape(unknown)
            # Only what was asked for: nothing of the model behind it (its id, its project).
            asked = ref if by_id else repr(ref)
            assert hidden.json()["message"] == f"model {asked} not found"


async def test_bad_requests_get_400_with_the_error_body(
    client: httpx.AsyncClient, served_iris: Tabular, keys: dict[str, str], triton: EmbeddedTriton
) -> None:
    path = f"/v2/models/{served_iris.name}/infer"
    headers = {"X-API-Key": keys["predict"]}
    rows = served_iris.rows
    short_body, header_length = _binary_request(rows, declared_size=rows.nbytes + 8)
    full_body, _ = _binary_request(rows)
    cases: list[tuple[str, bytes, dict[str, str]]] = [
        ("malformed JSON", b'{"inputs": [', {}),
        ("empty body", b"", {}),
        ("wrong shape", json.dumps(_json_request(rows[:, :3], shape=[5, 3])).encode(), {}),
        ("wrong datatype", json.dumps(_json_request(rows, datatype="INT64")).encode(), {}),
        ("unknown input", json.dumps(_json_request(rows, name="nope")).encode(), {}),
        ("short binary", short_body, {"Inference-Header-Content-Length": str(header_length)}),
        (
            "header past the JSON",
            full_body,
            {"Inference-Header-Content-Length": str(header_length + 7)},
        ),
        ("header past the body", full_body, {"Inference-Header-Content-Length": "100000"}),
    ]
    for what, content, extra in cases:
        response = await client.post(path, content=content, headers={**headers, **extra})
        _assert_error(response, 400, triton)
        assert response.json()["error"] == "BadRequestError", what
        assert response.json()["message"], what
        assert not response.json()["message"].startswith("[request id"), what


async def test_the_body_cap_answers_413(
    app: FastAPI, client: httpx.AsyncClient, served_iris: Tabular, keys: dict[str, str]
) -> None:
    too_big = b"x" * (state_of(app).settings.max_body_bytes + 1)
    response = await client.post(
        f"/v2/models/{served_iris.name}/infer",
        content=too_big,
        headers={"X-API-Key": keys["predict"]},
    )
    assert response.status_code == 413
    assert set(response.json()) == ERROR_BODY


async def test_rate_limit_and_request_ids(
    app: FastAPI, client: httpx.AsyncClient, served_iris: Tabular
) -> None:
    headers = {"X-API-Key": await make_key(app, ["predict"], rate_limit="2/minute")}
    path = f"/v2/models/{served_iris.name}/infer"
    body = _json_request(served_iris.rows)
    for _ in range(2):
        ok = await client.post(path, json=body, headers={**headers, "X-Request-ID": "v2-ok-1"})
        assert ok.status_code == 200, ok.text
        assert ok.headers["X-Request-ID"] == "v2-ok-1"
        assert "X-RateLimit-Remaining" in ok.headers
    refused = await client.post(path, json=body, headers={**headers, "X-Request-ID": "v2-429"})
    assert refused.status_code == 429
    assert refused.json()["request_id"] == refused.headers["X-Request-ID"] == "v2-429"
    assert refused.headers["X-RateLimit-Remaining"] == "0"


async def test_inference_is_counted(
    app: FastAPI, client: httpx.AsyncClient, served_iris: Tabular, keys: dict[str, str]
) -> None:
    components = app.state.components
    if components.find(InferenceStats) is None:  # until the app factory provides one
        components.add(InferenceStats, InferenceStats())
    stats = components.get(InferenceStats)
    before = stats.model(served_iris.model_id)
    counts = (before.inference_count, before.error_count)
    path = f"/v2/models/{served_iris.name}/infer"
    headers = {"X-API-Key": keys["predict"]}
    assert (
        await client.post(path, json=_json_request(served_iris.rows), headers=headers)
    ).is_success
    bad = await client.post(
        path, json=_json_request(served_iris.rows, datatype="INT64"), headers=headers
    )
    assert bad.status_code == 400
    after = stats.model(served_iris.model_id)
    assert (after.inference_count, after.error_count) == (counts[0] + 1, counts[1] + 1)


async def _triton_ready(triton: EmbeddedTriton, name: str) -> bool:
    async with httpx.AsyncClient(base_url=f"http://{triton.http_url}") as direct:
        return (await direct.get(f"/v2/models/{name}/ready")).status_code == 200


async def test_a_cold_model_is_loaded_by_the_lifecycle_and_again_after_an_unload(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin_key: str,
    keys: dict[str, str],
    model_repository: Path,
    triton: EmbeddedTriton,
    tmp_path: Path,
) -> None:
    name = f"v2-cold-{uuid.uuid4().hex[:6]}"
    triton_name = export_iris(model_repository, tmp_path, name)
    await register_model(client, admin_key, triton_name)
    assert not await _triton_ready(triton, triton_name)
    rows = np.ones((2, 4), dtype=np.float32)
    headers = {"X-API-Key": keys["predict"]}

    async def served() -> bool:
        response = await client.post(
            f"/v2/models/{name}/infer", json=_json_request(rows), headers=headers
        )
        assert response.status_code in (200, 503), response.text  # 503: still loading
        return response.status_code == 200

    await until(served, "the cold model was not served")
    assert state_of(app).lifecycle.status(triton_name).state is LoadState.ready
    assert await _triton_ready(triton, triton_name)

    # Unloaded behind the lifecycle's back: the door has it loaded again, never a 404.
    async with httpx.AsyncClient(base_url=f"http://{triton.http_url}") as direct:
        unloaded = await direct.post(f"/v2/repository/models/{triton_name}/unload")
        assert unloaded.status_code == 200

    async def gone() -> bool:
        return not await _triton_ready(triton, triton_name)

    await until(gone, "Triton did not unload the model")
    await until(served, "the unloaded model was not served again")
    assert await _triton_ready(triton, triton_name)


@pytest.fixture(scope="module")
async def fastapi_only(app: FastAPI) -> AsyncIterator[FastAPI]:
    """A second replica with the fast lane off: FastAPI's /v2 routes answer inference."""
    settings = state_of(app).settings.model_copy(update={"fast_lane": False})
    replica = create_app(settings, migrate=False)
    async with replica.router.lifespan_context(replica):
        yield replica


def _as_compared(response: httpx.Response) -> tuple[int, object, dict[str, str | None]]:
    if response.headers.get("content-type", "").startswith("application/json"):
        body: object = response.json()
        if isinstance(body, dict):
            body.pop("request_id", None)
            body.pop("timestamp", None)
    else:
        body = response.content
    names = ("content-type", "inference-header-content-length", "www-authenticate")
    return response.status_code, body, {name: response.headers.get(name) for name in names}


async def test_the_lane_and_fastapi_infer_alike(
    client: httpx.AsyncClient,
    fastapi_only: FastAPI,
    served_iris: Tabular,
    keys: dict[str, str],
) -> None:
    """The fast lane serves v2 inference; with it off, FastAPI's route gives the same answers."""
    rows = served_iris.rows
    binary, header_length = _binary_request(rows)
    binary_headers = {"Inference-Header-Content-Length": str(header_length)}
    predict, read = {"X-API-Key": keys["predict"]}, {"X-API-Key": keys["read"]}
    bearer = {"Authorization": f"Bearer {keys['predict']}"}
    good = json.dumps(_json_request(rows)).encode()
    name = served_iris.name
    cases: list[tuple[str, bytes, dict[str, str]]] = [
        (f"/v2/models/{name}/infer", good, predict),
        (f"/v2/models/{name}/infer", good, bearer),
        (f"/v2/models/{served_iris.triton_name}/versions/1/infer", good, predict),
        (f"/v2/models/{served_iris.model_id}/infer", binary, {**predict, **binary_headers}),
        (f"/v2/models/{name}/versions/7/infer", good, predict),
        (f"/v2/models/no-such-{uuid.uuid4().hex[:6]}/infer", good, predict),
        (
            f"/v2/models/{name}/infer",
            json.dumps(_json_request(rows, shape=[4, 5])).encode(),
            predict,
        ),
        (f"/v2/models/{name}/infer", b'{"inputs": [', predict),
        (f"/v2/models/{name}/infer", good, read),
        (f"/v2/models/{name}/infer", good, {}),
    ]
    statuses = []
    other = httpx.AsyncClient(transport=httpx.ASGITransport(app=fastapi_only), base_url="http://b")
    async with other:
        for path, content, headers in cases:
            assert LANE_INFER.path.fullmatch(path), path
            lane = await client.post(path, content=content, headers=headers)
            fastapi = await other.post(path, content=content, headers=headers)
            assert _as_compared(lane) == _as_compared(fastapi), (path, headers)
            statuses.append(lane.status_code)
    assert statuses == [200, 200, 200, 200, 404, 404, 400, 400, 403, 401]
