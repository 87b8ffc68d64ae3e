"""On-demand loads in one process: single-flight, the request deadline, management reads."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx
from fastapi import FastAPI
from redis.asyncio import Redis

from control_plane.core import metrics
from control_plane.core.settings import Settings
from control_plane.events.schemas import EventAdapter, SlotChanged
from control_plane.lifecycle.reconciler import pinned_models
from control_plane.lifecycle.status import LoadState
from tests.control_plane.conftest import make_project, state_of
from tests.control_plane.recommender_model import write_recommender


async def _unload(app: FastAPI, name: str) -> None:
    lifecycle = state_of(app).lifecycle
    await lifecycle.wait_loaded(name, 60)
    await lifecycle.unload(name)


async def test_concurrent_requests_for_a_cold_model_share_one_load(
    app: FastAPI,
    client: httpx.AsyncClient,
    predict_key: str,
    model_ids: dict[str, int],
    recommenders: dict[str, str],
) -> None:
    await _unload(app, recommenders["b"])
    # Per model: a background reconcile may load other models meanwhile.
    before = metrics.value(metrics.LIFECYCLE_MODEL_LOADS, model=recommenders["b"])
    responses = await asyncio.gather(
        *(
            client.post(
                f"/inference/predict/{model_ids['b']}",
                json={"user_id": f"u{i}"},
                headers={"X-API-Key": predict_key},
            )
            for i in range(8)
        )
    )
    assert [r.status_code for r in responses] == [200] * 8
    assert metrics.value(metrics.LIFECYCLE_MODEL_LOADS, model=recommenders["b"]) - before == 1


async def test_a_load_longer_than_the_deadline_answers_503_with_retry_after(
    app: FastAPI,
    client: httpx.AsyncClient,
    predict_key: str,
    model_ids: dict[str, int],
    recommenders: dict[str, str],
) -> None:
    lifecycle = state_of(app).lifecycle
    await _unload(app, recommenders["b"])
    lifecycle.request_wait_s = 0.01
    try:
        response = await client.post(
            f"/inference/predict/{model_ids['b']}",
            json={"user_id": "u1"},
            headers={"X-API-Key": predict_key},
        )
    finally:
        lifecycle.request_wait_s = state_of(app).settings.model_load_wait_s
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["error"] == "ModelLoadingError"
    await lifecycle.wait_loaded(recommenders["b"], 60)  # the load went on without the request


async def test_model_info_metrics_engine_health_and_readiness(
    client: httpx.AsyncClient,
    admin_key: str,
    predict_key: str,
    model_ids: dict[str, int],
) -> None:
    headers = {"X-API-Key": admin_key}
    model_id = model_ids["a"]
    for _ in range(3):
        response = await client.post(
            f"/inference/predict/{model_id}",
            json={"user_id": "u2"},
            headers={"X-API-Key": predict_key},
        )
        assert response.status_code == 200
    info = (await client.get(f"/api/v1/models/{model_id}", headers=headers)).json()
    assert info["load_state"] == "ready" and info["loaded_at"] and info["last_used_at"]
    assert info["size_bytes"] > 0
    assert [t["name"] for t in info["inputs"]] == ["USER_INDEX"]
    assert {t["name"] for t in info["outputs"]} == {"ITEM_INDEX", "SCORE"}

    stats = (await client.get(f"/api/v1/models/{model_id}/metrics", headers=headers)).json()
    assert stats["request_count"] >= 3 and stats["error_count"] == 0
    assert stats["avg_latency_ms"] > 0 and stats["batch_sizes"]

    engine = (await client.get("/api/v1/engine", headers=headers)).json()
    assert engine["live"] and engine["version"] != "unknown"
    assert any(m["triton_name"] == info["triton_name"] for m in engine["loaded_models"])

    reload = await client.post(f"/api/v1/models/{model_id}/reload", headers=headers)
    assert reload.status_code == 200 and reload.json()["load_state"] == "ready"
    read_only = await client.post(
        f"/api/v1/models/{model_id}/unload", headers={"X-API-Key": predict_key}
    )
    assert read_only.status_code == 403

    health = (await client.get("/inference/health")).json()
    assert health["status"] == "healthy", health
    assert set(health["components"]) == {
        "triton",
        "sql",
        "redis",
        "listener",
        "rate_limiter",
        "repository",
    }


async def test_ready_once_reconciled_with_every_pinned_model_loaded_in_triton(
    app: FastAPI, client: httpx.AsyncClient, admin_key: str, model_ids: dict[str, int]
) -> None:
    """The state is set up here, whatever earlier tests left: a slot pins model a, the
    reconciler has read every pinned model from SQL, and each is loaded."""
    await make_project(client, admin_key, [("ready", model_ids["a"], 100)])
    state = state_of(app)
    async with state.sessionmaker() as session:
        pinned = await pinned_models(session)
    deadline = time.monotonic() + 60  # a guard: slot_changed wakes a pass at once
    while state.lifecycle.pinned != pinned or state.reconciler.passes == 0:
        assert time.monotonic() < deadline, (sorted(state.lifecycle.pinned), sorted(pinned))
        await asyncio.sleep(0.05)
    for name in pinned:
        await state.lifecycle.wait_loaded(name, 60)
    response = await client.get("/inference/ready")
    assert response.status_code == 200, response.text
    assert response.json() == {"ready": True, "pinned": len(pinned), "missing": []}


async def test_deleting_a_model_unloads_it_and_a_model_in_a_slot_cannot_be_deleted(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin_key: str,
    model_ids: dict[str, int],
    model_repository: Path,
) -> None:
    headers = {"X-API-Key": admin_key}
    await make_project(client, admin_key, [("only", model_ids["a"], 100)])
    in_use = await client.delete(f"/api/v1/models/{model_ids['a']}", headers=headers)
    assert in_use.status_code == 409

    name = f"lc_delete_{uuid.uuid4().hex[:8]}"
    write_recommender(model_repository, name, seed=21)
    response = await client.post("/api/v1/models", json={"triton_name": name}, headers=headers)
    assert response.status_code == 201, response.text
    lifecycle = state_of(app).lifecycle
    await lifecycle.wait_loaded(name, 60)  # model_trained loads it on this replica
    response = await client.delete(f"/api/v1/models/{response.json()['id']}", headers=headers)
    assert response.status_code == 204
    for _ in range(100):  # model_deleted unloads it in the background
        if lifecycle.status(name).state is LoadState.unloaded:
            break
        await asyncio.sleep(0.1)
    assert lifecycle.status(name).state is LoadState.unloaded
    assert name not in await lifecycle.triton.ready_models()


async def test_slot_changes_publish_slot_changed_after_commit(
    client: httpx.AsyncClient, admin_key: str, model_ids: dict[str, int], settings: Settings
) -> None:
    assert settings.events_redis_url is not None
    project = await make_project(client, admin_key, [("one", model_ids["a"], 100)])
    redis = Redis.from_url(settings.events_redis_url)
    try:
        async with redis.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(settings.model_events_channel)
            response = await client.patch(
                f"/api/v1/slots/{project.slots['one']}",
                json={"model_id": model_ids["b"]},
                headers={"X-API-Key": admin_key},
            )
            assert response.status_code == 200, response.text
            events = []
            for _ in range(50):
                message = await pubsub.get_message(timeout=0.1)
                if message is not None:
                    events.append(EventAdapter.validate_json(message["data"]))
                    break
    finally:
        await redis.aclose()
    assert len(events) == 1 and isinstance(events[0], SlotChanged)
    assert (events[0].slot_id, events[0].model_id, events[0].active) == (
        project.slots["one"], model_ids["b"], True,
    )  # fmt: skip
