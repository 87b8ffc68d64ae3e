"""The seed-000 inference API against the real embedded Triton."""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from conch_embedded.triton_server import EmbeddedTriton
from conch_manifest.layout import load_manifest
from conch_manifest.schema import RECOMMENDER_INPUT, RECOMMENDER_ITEMS, RECOMMENDER_SCORES
from tests.control_plane.recommender_model import MAX_K, SEEN


async def test_predict_returns_items_best_first(
    client: httpx.AsyncClient, predict_key: str, model_ids: dict[str, int]
) -> None:
    response = await client.post(
        f"/inference/predict/{model_ids['a']}",
        json={"user_id": "u0", "cutoff": 5},
        headers={"X-API-Key": predict_key},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_id"] == model_ids["a"]
    assert str(uuid.UUID(body["request_id"])) == response.headers["X-Request-ID"]
    scores = [item["score"] for item in body["items"]]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    assert all(math.isfinite(s) for s in scores)
    seen = {f"i{i}" for i in SEEN["u0"]}
    assert not seen & {item["item_id"] for item in body["items"]}


async def test_cutoff_above_model_max_k_is_capped_and_seen_items_dropped(
    client: httpx.AsyncClient, predict_key: str, model_ids: dict[str, int]
) -> None:
    response = await client.post(
        f"/inference/predict/{model_ids['a']}",
        json={"user_id": "u1", "cutoff": 1000},
        headers={"X-API-Key": predict_key},
    )
    assert response.status_code == 200
    assert len(response.json()["items"]) == MAX_K


async def test_caller_request_id_is_echoed(
    client: httpx.AsyncClient, predict_key: str, model_ids: dict[str, int]
) -> None:
    response = await client.post(
        f"/inference/predict/{model_ids['a']}",
        json={"user_id": "u1"},
        headers={"X-API-Key": predict_key, "X-Request-ID": "req_12345"},
    )
    assert response.json()["request_id"] == "req_12345"
    assert response.headers["X-Request-ID"] == "req_12345"
    unsafe = await client.get("/inference/models", headers={"X-Request-ID": "<script>"})
    assert unsafe.headers["X-Request-ID"] != "<script>"


async def test_batch_gives_unknown_users_empty_items(
    client: httpx.AsyncClient, predict_key: str, model_ids: dict[str, int]
) -> None:
    response = await client.post(
        f"/inference/predict/{model_ids['b']}/batch",
        json={"user_ids": ["u1", "nobody", "u2"], "cutoff": 3},
        headers={"X-API-Key": predict_key},
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [len(r["items"]) for r in results] == [3, 0, 3]
    assert {r["model_id"] for r in results} == {model_ids["b"]}
    single = await client.post(
        f"/inference/predict/{model_ids['b']}",
        json={"user_id": "u2", "cutoff": 3},
        headers={"X-API-Key": predict_key},
    )
    assert single.json()["items"] == results[2]["items"]


@pytest.mark.parametrize(
    ("path_model", "body", "status", "error"),
    [
        ("a", {"user_id": "nobody"}, 404, "UserNotInModelError"),
        (None, {"user_id": "u1"}, 404, "ModelNotFoundError"),
        ("a", {"user_id": "u1", "cutoff": 0}, 422, "ValidationError"),
        ("a", {"user_id": "u1", "cutoff": 1001}, 422, "ValidationError"),
        ("a", {"cutoff": 5}, 422, "ValidationError"),
    ],
)
async def test_predict_errors_use_the_error_body(
    client: httpx.AsyncClient,
    predict_key: str,
    model_ids: dict[str, int],
    path_model: str | None,
    body: dict[str, object],
    status: int,
    error: str,
) -> None:
    model_id = model_ids[path_model] if path_model else 999_999
    response = await client.post(
        f"/inference/predict/{model_id}", json=body, headers={"X-API-Key": predict_key}
    )
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["error"] == error
    assert set(payload) == {"error", "message", "details", "timestamp", "request_id"}
    assert payload["request_id"] == response.headers["X-Request-ID"]


async def test_batch_larger_than_the_models_max_batch_size_is_split(
    client: httpx.AsyncClient, predict_key: str, model_ids: dict[str, int]
) -> None:
    users = [f"u{i % 20}" for i in range(100)]  # the test model's max_batch_size is 64
    response = await client.post(
        f"/inference/predict/{model_ids['a']}/batch",
        json={"user_ids": users, "cutoff": 2},
        headers={"X-API-Key": predict_key},
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert (
        len(results) == 100 and results[0]["items"] == results[20]["items"] == results[80]["items"]
    )


async def test_batch_of_101_users_is_refused(
    client: httpx.AsyncClient, predict_key: str, model_ids: dict[str, int]
) -> None:
    response = await client.post(
        f"/inference/predict/{model_ids['a']}/batch",
        json={"user_ids": [f"u{i % 20}" for i in range(101)]},
        headers={"X-API-Key": predict_key},
    )
    assert response.status_code == 422
    assert response.json()["error"] == "ValidationError"


async def test_unknown_route_has_the_error_body(client: httpx.AsyncClient) -> None:
    response = await client.get("/inference/nowhere")
    assert response.status_code == 404
    assert response.json()["error"] == "NotFoundError"


async def test_a_wrong_method_names_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    response = await client.put("/api/v1/projects/1")
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, PATCH"
    assert response.json()["error"] == "MethodNotAllowedError"


async def test_a_body_that_is_not_utf8_is_invalid_json(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    headers = {"X-API-Key": admin_key, "Content-Type": "application/json"}
    response = await client.post("/api/v1/projects", content=b"\xff\xfe{", headers=headers)
    assert response.status_code == 422
    assert response.json()["details"]["errors"][0]["type"] == "json_invalid"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/inference/predict/99999999999999999999"),
        ("POST", "/inference/predict/project/99999999999999999999"),
        ("GET", "/api/v1/models/99999999999999999999"),
    ],
)
async def test_ids_beyond_the_database_are_a_clear_4xx(
    client: httpx.AsyncClient, admin_key: str, method: str, path: str
) -> None:
    response = await client.request(
        method, path, json={"user_id": "u1"}, headers={"X-API-Key": admin_key}
    )
    # An id beyond the id columns cannot exist: 422 at validation, on every database.
    assert response.status_code == 422, response.text
    assert set(response.json()) == {"error", "message", "details", "timestamp", "request_id"}


HUGE = 18446744073709551616  # 2**64: beyond every integer column and orjson


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/conversion_event/", {"project": HUGE, "deployment_slot": 1}, "project"),
        ("/api/v1/conversion_event/", {"project": 1, "deployment_slot": HUGE}, "deployment_slot"),
        ("/api/v1/projects/1/promote", {"slot_id": HUGE}, "slot_id"),
        ("/api/v1/keys", {"scopes": ["read"], "project_id": HUGE}, "project_id"),
        ("/api/v1/projects/1/slots", {"name": "s", "model_id": HUGE, "weight": 1}, "model_id"),
        ("/api/v1/projects/1/slots", {"name": "s", "model_id": 1, "weight": HUGE}, "weight"),
    ],
)
async def test_numbers_out_of_range_in_a_body_are_422(
    client: httpx.AsyncClient, admin_key: str, path: str, body: dict[str, object], field: str
) -> None:
    event = {
        "user_id": "u",
        "item_id": "i",
        "event_type": "click",
        "recommendation_request_id": "r",
    }
    payload = {**event, **body} if "conversion_event" in path else body
    response = await client.post(path, json=payload, headers={"X-API-Key": admin_key})
    assert response.status_code == 422, response.text
    assert [e["loc"][-1] for e in response.json()["details"]["errors"]] == [field]


async def test_health_and_loaded_models_need_no_key(
    client: httpx.AsyncClient, predict_key: str, model_ids: dict[str, int]
) -> None:
    await client.post(
        f"/inference/predict/{model_ids['a']}",
        json={"user_id": "u1"},
        headers={"X-API-Key": predict_key},
    )
    health = await client.get("/inference/health")
    assert health.status_code == 200
    assert health.json()["status"] == "healthy", health.json()
    assert health.json()["loaded_models"] >= 1
    models = (await client.get("/inference/models")).json()
    assert model_ids["a"] in models["models"] and models["count"] == len(models["models"])


async def test_grpc_callers_get_the_same_items_from_triton_directly(
    client: httpx.AsyncClient,
    predict_key: str,
    model_ids: dict[str, int],
    recommenders: dict[str, str],
    model_repository: Path,
    triton: EmbeddedTriton,
) -> None:
    """The documented gRPC door: USER_INDEX in, ITEM_INDEX / SCORE out, ids from the manifest."""
    response = await client.post(
        f"/inference/predict/{model_ids['a']}",
        json={"user_id": "u2", "cutoff": 5},
        headers={"X-API-Key": predict_key},
    )
    assert response.status_code == 200, response.text
    spec = load_manifest(model_repository, recommenders["a"]).recommender
    assert spec is not None
    user = np.array([[spec.user_ids.index("u2")]], dtype=np.int64)
    tensor = grpcclient.InferInput(RECOMMENDER_INPUT, list(user.shape), "INT64")
    tensor.set_data_from_numpy(user)
    result = grpcclient.InferenceServerClient(triton.grpc_url).infer(recommenders["a"], [tensor])
    indices = result.as_numpy(RECOMMENDER_ITEMS)[0]
    scores = result.as_numpy(RECOMMENDER_SCORES)[0]
    direct = [
        {"item_id": spec.item_ids[i], "score": float(s)}
        for i, s in zip(indices, scores, strict=True)
        if math.isfinite(s)
    ][:5]
    assert response.json()["items"] == direct
