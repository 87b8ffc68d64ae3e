"""A deleted model is gone everywhere: 404 on every replica, never loaded into Triton again.

Two replicas in this process, each an app with its own Triton over the session's SQL,
Redis and model repository: the session app, and a second one started here. What
Triton has loaded is asked of Triton itself, never of Conch's bookkeeping.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from tritonclient.grpc.aio import InferenceServerClient

from conch_embedded.triton_server import EmbeddedTriton
from control_plane.app import create_app
from control_plane.core.errors import ModelNotFoundError
from control_plane.core.settings import Settings
from tests.control_plane.conftest import make_project, state_of
from tests.control_plane.recommender_model import write_recommender
from tests.control_plane.waiting import until

# Guards only: every wait below ends as soon as its condition holds.
EVENT_DEADLINE_S = 20.0
LOAD_DEADLINE_S = 90.0
_IN_TRITON = ("READY", "LOADING", "UNLOADING")


@dataclass
class Replica:
    app: FastAPI
    client: httpx.AsyncClient
    triton: InferenceServerClient  # this replica's own Triton, asked directly

    async def triton_state(self, name: str) -> str:
        index = await self.triton.get_model_repository_index(as_json=True)
        states = {m["name"]: m.get("state", "") for m in index.get("models", [])}
        return str(states.get(name, ""))


@pytest.fixture(scope="module")
async def replicas(
    app: FastAPI,
    client: httpx.AsyncClient,
    settings: Settings,
    triton: EmbeddedTriton,
    model_repository: Path,
) -> AsyncIterator[list[Replica]]:
    # Started from this thread, which outlives the module: Triton dies with its spawner.
    second_triton = EmbeddedTriton.on_free_ports(model_repository).start()
    second_settings = settings.model_copy(
        update={
            "triton_grpc_url": second_triton.grpc_url,
            "triton_http_url": second_triton.http_url,
            "model_load_wait_s": 60.0,
            # Only the model_deleted event can make this replica drop what it cached.
            "cache_ttl_s": 3600.0,
        }
    )
    second_app = create_app(second_settings, migrate=False)
    first_triton = InferenceServerClient(triton.grpc_url)
    other_triton = InferenceServerClient(second_triton.grpc_url)
    transport = httpx.ASGITransport(app=second_app)
    try:
        async with (
            second_app.router.lifespan_context(second_app),
            httpx.AsyncClient(transport=transport, base_url="http://replica-2") as second_client,
        ):
            for replica_app in (app, second_app):  # both hear each other's events
                await asyncio.wait_for(
                    state_of(replica_app).events.subscribed.wait(), EVENT_DEADLINE_S
                )
            yield [
                Replica(app, client, first_triton),
                Replica(second_app, second_client, other_triton),
            ]
    finally:
        await first_triton.close()
        await other_triton.close()
        second_triton.stop()


async def _predict(replica: Replica, model_id: int, key: str) -> httpx.Response:
    return await replica.client.post(
        f"/inference/predict/{model_id}",
        json={"user_id": "u1"},
        headers={"X-API-Key": key},
        timeout=LOAD_DEADLINE_S,
    )


async def _reconcile_pass(replica: Replica) -> None:
    """Until one whole pass has run after this call (one in progress may predate it)."""
    reconciler = state_of(replica.app).reconciler
    wanted = reconciler.passes + 2

    async def passed() -> bool:
        reconciler.wake()
        return reconciler.passes >= wanted

    await until(passed, "no reconciliation pass", LOAD_DEADLINE_S)
    assert reconciler.last_error is None, reconciler.last_error


async def _served_everywhere(replicas: list[Replica], model_id: int, key: str) -> None:
    """200 on every replica; a 503 (still loading, on a busy machine) is asked again."""
    for replica in replicas:

        async def served(replica: Replica = replica) -> bool:
            response = await _predict(replica, model_id, key)
            assert response.status_code in (200, 503), response.text
            return response.status_code == 200

        await until(served, "the model was never served", LOAD_DEADLINE_S)


async def test_a_deleted_model_is_404_on_every_replica_and_stays_unloaded(
    replicas: list[Replica], admin_key: str, predict_key: str, model_repository: Path
) -> None:
    name = f"cptest_deleted_{uuid.uuid4().hex[:8]}"
    write_recommender(model_repository, name, seed=41)
    first = replicas[0]
    response = await first.client.post(
        "/api/v1/models", json={"triton_name": name}, headers={"X-API-Key": admin_key}
    )
    assert response.status_code == 201, response.text
    model_id = response.json()["id"]
    await _served_everywhere(replicas, model_id, predict_key)  # cached and loaded on both
    for replica in replicas:
        assert await replica.triton_state(name) == "READY"

    deleted = await first.client.delete(
        f"/api/v1/models/{model_id}", headers={"X-API-Key": admin_key}
    )
    assert deleted.status_code == 204, deleted.text

    # Within the event latency: the second replica trusts its cache for an hour.
    for replica in replicas:

        async def gone(replica: Replica = replica) -> bool:
            return (await _predict(replica, model_id, predict_key)).status_code == 404

        await until(gone, "a replica still serves the deleted model", EVENT_DEADLINE_S)
        answer = (await _predict(replica, model_id, predict_key)).json()
        assert answer["error"] == "ModelNotFoundError", answer

    for replica in replicas:

        async def unloaded(replica: Replica = replica) -> bool:
            return await replica.triton_state(name) not in _IN_TRITON

        await until(unloaded, "Triton still has the deleted model", EVENT_DEADLINE_S)

    # Asked again, by a request, by the management API and by the lifecycle itself:
    # nothing loads it back, and a reconciliation pass keeps it so.
    for replica in replicas:
        assert (await _predict(replica, model_id, predict_key)).status_code == 404
        load = await replica.client.post(
            f"/api/v1/models/{model_id}/load", headers={"X-API-Key": admin_key}
        )
        assert load.status_code == 404, load.text
        with pytest.raises(ModelNotFoundError):
            await state_of(replica.app).lifecycle.wait_loaded(name, LOAD_DEADLINE_S)
        await _reconcile_pass(replica)
        assert await replica.triton_state(name) not in _IN_TRITON


async def test_reconciliation_unloads_a_deleted_model_whoever_loads_it_back(
    replicas: list[Replica], admin_key: str, predict_key: str, model_repository: Path
) -> None:
    name = f"cptest_deleted_{uuid.uuid4().hex[:8]}"
    write_recommender(model_repository, name, seed=42)
    first, second = replicas
    response = await first.client.post(
        "/api/v1/models", json={"triton_name": name}, headers={"X-API-Key": admin_key}
    )
    assert response.status_code == 201, response.text
    model_id = response.json()["id"]
    await _served_everywhere(replicas, model_id, predict_key)
    deleted = await second.client.delete(
        f"/api/v1/models/{model_id}", headers={"X-API-Key": admin_key}
    )
    assert deleted.status_code == 204, deleted.text
    for replica in replicas:

        async def unloaded(replica: Replica = replica) -> bool:
            return await replica.triton_state(name) not in _IN_TRITON

        await until(unloaded, "Triton still has the deleted model", EVENT_DEADLINE_S)

    # Loaded behind Conch's back (an operator, a script): the next pass unloads it.
    for replica in replicas:
        await replica.triton.load_model(name)
        assert await replica.triton_state(name) == "READY"
        await _reconcile_pass(replica)
        assert await replica.triton_state(name) not in _IN_TRITON
        assert (await _predict(replica, model_id, predict_key)).status_code == 404


async def test_a_model_that_a_slot_names_cannot_be_deleted_and_keeps_serving(
    replicas: list[Replica], admin_key: str, predict_key: str, model_repository: Path
) -> None:
    name = f"cptest_slotted_{uuid.uuid4().hex[:8]}"
    write_recommender(model_repository, name, seed=43)
    first, second = replicas
    headers = {"X-API-Key": admin_key}
    response = await first.client.post(
        "/api/v1/models", json={"triton_name": name}, headers=headers
    )
    assert response.status_code == 201, response.text
    model_id = response.json()["id"]
    project = await make_project(first.client, admin_key, [("main", model_id, 100)])
    slot_id = project.slots["main"]

    refused = await second.client.delete(f"/api/v1/models/{model_id}", headers=headers)
    assert refused.status_code == 409, refused.text
    body = refused.json()
    assert body["error"] == "ConflictError" and body["details"]["slot_id"] == slot_id, body
    # An inactive slot can be switched on again: it keeps the model registered too.
    paused = await first.client.patch(
        f"/api/v1/slots/{slot_id}", json={"active": False}, headers=headers
    )
    assert paused.status_code == 200, paused.text
    still = await first.client.delete(f"/api/v1/models/{model_id}", headers=headers)
    assert still.status_code == 409, still.text

    await _served_everywhere(replicas, model_id, predict_key)
    for replica in replicas:
        await _reconcile_pass(replica)
        assert (await _predict(replica, model_id, predict_key)).status_code == 200
