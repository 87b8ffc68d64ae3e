"""Seed 002's engine management (/api/inference/engine/*) against the real Triton.

Every check reads Triton itself (its model config, its repository index), never
only Conch's answer. The configuration is global: each test that changes it puts
every field back to its default afterwards (`engine_defaults`).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from control_plane.lifecycle.tuning import GENERATION_PARAMETER, batching_of
from control_plane.model_core.stats import InferenceStats
from tests.control_plane.conftest import make_key, make_project, state_of
from tests.control_plane.recommender_model import write_recommender
from tests.control_plane.waiting import until, until_served

CONFIG = "/api/inference/engine/config"
DEFAULTS = {
    "max_batch_size": None,
    "batch_timeout_ms": None,
    "max_concurrent_requests": None,
    "model_cache_size": None,
}
# The test recommenders' config.pbtxt: max_batch_size 64, an empty dynamic_batching.
EXPORT_MAX_BATCH = 64


@pytest.fixture
async def engine_defaults(client: httpx.AsyncClient, admin_key: str) -> AsyncIterator[None]:
    yield
    reset = await client.put(CONFIG, json=DEFAULTS, headers={"X-API-Key": admin_key})
    assert reset.status_code == 200, reset.text


async def _config_in_triton(app: FastAPI, name: str) -> dict[str, Any]:
    return await state_of(app).triton.model_config(name)


async def _loaded(app: FastAPI, name: str) -> None:
    await state_of(app).lifecycle.wait_loaded(name, 60, retry_failed=True)


async def test_reading_needs_read_and_changing_needs_an_unrestricted_admin(
    app: FastAPI, client: httpx.AsyncClient, admin_key: str
) -> None:
    project = await make_project(client, admin_key, [])
    read = {"X-API-Key": await make_key(app, ["read"])}
    write = {"X-API-Key": await make_key(app, ["write"])}
    predict = {"X-API-Key": await make_key(app, ["predict"])}
    project_admin = {"X-API-Key": await make_key(app, ["admin"], project_id=project.id)}
    for path in (CONFIG, "/api/inference/engine/status"):
        assert (await client.get(path, headers=read)).status_code == 200
        assert (await client.get(path, headers=predict)).status_code == 403
        assert (await client.get(path, headers=project_admin)).status_code == 403
        assert (await client.get(path)).status_code == 401
    changes = [
        ("PUT", CONFIG, {"max_batch_size": 8}),
        ("POST", "/api/inference/engine/restart", None),
        ("DELETE", "/api/inference/engine/cache", None),
    ]
    for method, path, body in changes:
        for headers in (read, write, project_admin):
            response = await client.request(method, path, json=body, headers=headers)
            assert response.status_code == 403, (method, path, response.text)
            assert response.json()["error"] == "PermissionDeniedError"
    stored = (await client.get(CONFIG, headers=read)).json()
    assert stored["max_batch_size"] is None  # no refused PUT changed anything


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"max_batch_size": 0}, "greater than or equal to 1"),
        ({"max_batch_size": 70_000}, "less than or equal to 65536"),
        ({"max_batch_size": "8"}, "valid integer"),
        ({"batch_timeout_ms": -1}, "greater than or equal to 0"),
        ({"batch_timeout_ms": 1000.5}, "less than or equal to 1000"),
        ({"max_concurrent_requests": 0}, "greater than or equal to 1"),
        ({"model_cache_size": 0}, "greater than or equal to 1"),
        ({"enable_quantization": True}, "enable_quantization cannot be set"),
        ({"memory_limit_mb": 2048}, "memory_limit_mb cannot be set"),
        ({"max_batch": 8}, "Extra inputs are not permitted"),
    ],
)
async def test_a_bad_change_is_a_422_and_stores_nothing(
    client: httpx.AsyncClient, admin_key: str, body: dict[str, Any], fragment: str
) -> None:
    headers = {"X-API-Key": admin_key}
    before = (await client.get(CONFIG, headers=headers)).json()
    response = await client.put(CONFIG, json=body, headers=headers)
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["error"] == "ValidationError"
    assert any(fragment in e["msg"] for e in error["details"]["errors"]), error
    assert (await client.get(CONFIG, headers=headers)).json() == before


async def test_the_unsupported_switches_are_null_with_the_reason(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    config = (await client.get(CONFIG, headers={"X-API-Key": admin_key})).json()
    for name in ("enable_quantization", "enable_compilation", "memory_limit_mb"):
        assert config[name] is None
        assert config["not_supported"][name]


async def test_a_change_is_in_triton_when_the_put_answers(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin_key: str,
    recommenders: dict[str, str],
    model_ids: dict[str, int],
    engine_defaults: None,
) -> None:
    name = recommenders["a"]
    await _loaded(app, name)
    headers = {"X-API-Key": admin_key}
    before = (await client.get(CONFIG, headers=headers)).json()
    response = await client.put(
        CONFIG, json={"max_batch_size": 8, "batch_timeout_ms": 12.5}, headers=headers
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["max_batch_size"] == 8 and answer["batch_timeout_ms"] == 12.5
    assert answer["revision"] == before["revision"] + 1 and answer["failed"] == {}
    batching = batching_of(await _config_in_triton(app, name))
    assert batching.max_queue_delay_microseconds == 12_500
    assert batching.preferred_batch_size == [8]
    assert batching.max_batch_size == EXPORT_MAX_BATCH  # the export's limit is untouched
    reported = {m["triton_name"]: m for m in answer["models"]}
    assert reported[name]["max_queue_delay_microseconds"] == 12_500
    # Still serving, and the stored row is what GET reads.
    stored = (await client.get(CONFIG, headers=headers)).json()
    assert {k: stored[k] for k in ("max_batch_size", "batch_timeout_ms")} == {
        "max_batch_size": 8,
        "batch_timeout_ms": 12.5,
    }

    # Back to the defaults: the export's own batching (Triton fills an empty
    # dynamic_batching with preferred = max_batch_size and no delay).
    await client.put(
        CONFIG, json={"max_batch_size": None, "batch_timeout_ms": None}, headers=headers
    )
    batching = batching_of(await _config_in_triton(app, name))
    assert batching.max_queue_delay_microseconds == 0
    assert batching.preferred_batch_size == [EXPORT_MAX_BATCH]


async def test_a_batch_size_beyond_the_export_is_capped_at_it(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin_key: str,
    recommenders: dict[str, str],
    model_ids: dict[str, int],
    engine_defaults: None,
) -> None:
    name = recommenders["a"]
    await _loaded(app, name)
    response = await client.put(
        CONFIG, json={"max_batch_size": 1000}, headers={"X-API-Key": admin_key}
    )
    assert response.status_code == 200, response.text
    assert response.json()["max_batch_size"] == 1000  # stored as asked, global
    batching = batching_of(await _config_in_triton(app, name))
    assert batching.preferred_batch_size == [EXPORT_MAX_BATCH]  # Triton refuses more


async def test_a_model_loaded_after_the_change_gets_it_too(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin_key: str,
    predict_key: str,
    recommenders: dict[str, str],
    model_ids: dict[str, int],
    engine_defaults: None,
) -> None:
    name = recommenders["b"]
    lifecycle = state_of(app).lifecycle
    await _loaded(app, name)
    await lifecycle.unload(name)
    response = await client.put(
        CONFIG, json={"batch_timeout_ms": 3}, headers={"X-API-Key": admin_key}
    )
    assert response.status_code == 200, response.text
    assert name not in {m["triton_name"] for m in response.json()["models"]}
    await until_served(client, model_ids["b"], predict_key)  # loaded on demand
    batching = batching_of(await _config_in_triton(app, name))
    assert batching.max_queue_delay_microseconds == 3000


async def test_the_cache_is_cleared_of_unpinned_models_only(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin_key: str,
    predict_key: str,
    model_repository: Path,
    recommenders: dict[str, str],
    model_ids: dict[str, int],
) -> None:
    lifecycle = state_of(app).lifecycle
    headers = {"X-API-Key": admin_key}
    unpinned = f"engine_cache_{uuid.uuid4().hex[:8]}"  # no slot of any test names it
    write_recommender(model_repository, unpinned, seed=11)
    registered = await client.post(
        "/api/v1/models", json={"triton_name": unpinned}, headers=headers
    )
    assert registered.status_code == 201, registered.text
    unpinned_id = registered.json()["id"]
    await until_served(client, unpinned_id, predict_key)
    # A slot pins model a once a reconcile pass has read it.
    await make_project(client, admin_key, [("Control", model_ids["a"], 100)])
    await until(lambda: _pinned(app, recommenders["a"]), "slot did not pin model a")
    response = await client.delete("/api/inference/engine/cache", headers=headers)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert unpinned in answer["unloaded"]
    assert answer["kept"][recommenders["a"]].startswith("pinned")
    ready = set(await state_of(app).triton.ready_models())
    assert unpinned not in ready and recommenders["a"] in ready
    assert unpinned not in lifecycle.loaded()
    await until_served(client, unpinned_id, predict_key)  # it comes back when asked for


async def _pinned(app: FastAPI, name: str) -> bool:
    return name in state_of(app).lifecycle.pinned


async def test_a_restart_under_load_fails_no_request(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin_key: str,
    predict_key: str,
    recommenders: dict[str, str],
    model_ids: dict[str, int],
) -> None:
    name = recommenders["a"]
    await until_served(client, model_ids["a"], predict_key)
    lifecycle = state_of(app).lifecycle
    generation = lifecycle.generation
    # What the model's load carried: the restart generation plus its own reloads
    # (another test may have reloaded it on this session's app); none, 0.
    parameters = (await _config_in_triton(app, name)).get("parameters", {})
    carried = int(parameters.get(GENERATION_PARAMETER, {}).get("string_value", "0"))
    restarting = asyncio.create_task(
        client.post("/api/inference/engine/restart", headers={"X-API-Key": admin_key})
    )
    statuses: list[int] = []

    async def predict_until_restarted() -> None:
        while not restarting.done():
            response = await client.post(
                f"/inference/predict/{model_ids['a']}",
                json={"user_id": "u1"},
                headers={"X-API-Key": predict_key},
            )
            statuses.append(response.status_code)

    await asyncio.gather(*(predict_until_restarted() for _ in range(4)))
    response = await restarting
    assert response.status_code == 200, response.text
    assert name in response.json()["reloaded"] and response.json()["failed"] == {}
    assert statuses and set(statuses) == {200}, statuses
    # Really reloaded: Triton serves the config of the new generation.
    config = await _config_in_triton(app, name)
    value = config["parameters"][GENERATION_PARAMETER]["string_value"]
    assert lifecycle.generation == generation + 1
    assert int(value) == carried + 1


async def test_over_max_concurrent_requests_is_a_503_with_retry_after(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin_key: str,
    predict_key: str,
    model_ids: dict[str, int],
    engine_defaults: None,
) -> None:
    await until_served(client, model_ids["a"], predict_key)
    response = await client.put(
        CONFIG, json={"max_concurrent_requests": 1}, headers={"X-API-Key": admin_key}
    )
    assert response.status_code == 200, response.text
    triton = state_of(app).triton
    predict = {"X-API-Key": predict_key}
    assert (
        await client.post(
            f"/inference/predict/{model_ids['a']}", json={"user_id": "u1"}, headers=predict
        )
    ).status_code == 200  # one at a time is within the limit
    triton.in_flight["held-by-the-test"] += 1  # one request inside Triton already
    try:
        refused = await client.post(
            f"/inference/predict/{model_ids['a']}", json={"user_id": "u1"}, headers=predict
        )
    finally:
        triton.in_flight["held-by-the-test"] -= 1
    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"] == "1"
    assert refused.json()["details"]["max_concurrent_requests"] == 1


async def test_model_cache_size_is_the_lifecycles_lru_bound(
    app: FastAPI, client: httpx.AsyncClient, admin_key: str, engine_defaults: None
) -> None:
    lifecycle = state_of(app).lifecycle
    headers = {"X-API-Key": admin_key}
    default = lifecycle.default_max_loaded
    assert (await client.get(CONFIG, headers=headers)).json()["model_cache_size"] == default
    response = await client.put(CONFIG, json={"model_cache_size": 3}, headers=headers)
    assert response.status_code == 200 and response.json()["model_cache_size"] == 3
    assert lifecycle.max_loaded == 3
    await client.put(CONFIG, json={"model_cache_size": None}, headers=headers)
    assert lifecycle.max_loaded == default


async def test_the_status_is_measured(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin_key: str,
    predict_key: str,
    model_ids: dict[str, int],
) -> None:
    await until_served(client, model_ids["a"], predict_key)
    headers = {"X-API-Key": admin_key}
    stats = app.state.components.find(InferenceStats)
    before = (await client.get("/api/inference/engine/status", headers=headers)).json()
    await client.post(
        f"/inference/predict/{model_ids['a']}",
        json={"user_id": "u1"},
        headers={"X-API-Key": predict_key},
    )
    status = (await client.get("/api/inference/engine/status", headers=headers)).json()
    assert status["status"] == "running"
    assert status["loaded_models"] == len(await state_of(app).triton.ready_models())
    assert status["active_requests"] == 0  # nothing in flight between requests here
    assert re.fullmatch(r"\d+h \d+m \d+s", status["uptime"])
    assert status["uptime_s"] >= before["uptime_s"]
    memory = status["memory_usage"]
    assert memory["total_mb"] > 0 and memory["used_mb"] + memory["free_mb"] == pytest.approx(
        memory["total_mb"], abs=1
    )
    assert 0 <= status["cpu_usage"] <= 100
    if stats is None:  # the app counts no predictions: null, never a guess
        assert status["total_predictions"] is None
    else:  # this replica's own counters (which doors record there is the core's business)
        assert status["total_predictions"] == stats.total_predictions()


async def test_a_model_triton_refuses_the_change_for_keeps_serving_and_is_retried(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin_key: str,
    predict_key: str,
    model_repository: Path,
    engine_defaults: None,
) -> None:
    lifecycle = state_of(app).lifecycle
    headers = {"X-API-Key": admin_key}
    name = f"engine_refused_{uuid.uuid4().hex[:8]}"
    write_recommender(model_repository, name, seed=12)
    registered = await client.post("/api/v1/models", json={"triton_name": name}, headers=headers)
    assert registered.status_code == 201, registered.text
    model_id = registered.json()["id"]
    await until_served(client, model_id, predict_key)
    config_file = model_repository / name / "config.pbtxt"
    exported = config_file.read_text()
    # Parses (the repository scan accepts it) but Triton refuses to load it.
    config_file.write_text(exported.replace('backend: "onnxruntime"', 'backend: "no_such"'))
    try:
        response = await client.put(CONFIG, json={"batch_timeout_ms": 2}, headers=headers)
        assert response.status_code == 200, response.text
        assert "no_such" in response.json()["failed"][name]
        assert name in lifecycle.untuned
        # Triton kept the copy it had: same batching, still answering.
        assert batching_of(await _config_in_triton(app, name)).max_queue_delay_microseconds == 0
        served = await client.post(
            f"/inference/predict/{model_id}",
            json={"user_id": "u1"},
            headers={"X-API-Key": predict_key},
        )
        assert served.status_code == 200, served.text
    finally:
        config_file.write_text(exported)
    # The next reconcile pass tries again (called here rather than awaited for).
    await state_of(app).reconciler.reconcile()
    assert name not in lifecycle.untuned
    assert batching_of(await _config_in_triton(app, name)).max_queue_delay_microseconds == 2000
