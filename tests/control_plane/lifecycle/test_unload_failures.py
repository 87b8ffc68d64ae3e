"""An unload Triton refuses leaves the model loaded, with the reason, until one succeeds.

The session's real app and embedded Triton; the one fake is Triton refusing the
unload of one model (a real Triton cannot be made to refuse on demand), built as
the gateway builds every refusal, from Triton's own exception.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from tritonclient.utils import InferenceServerException

from control_plane.core.errors import TritonError
from control_plane.lifecycle.status import LoadState
from control_plane.triton.errors import triton_error
from tests.control_plane.conftest import state_of
from tests.control_plane.recommender_model import write_recommender

REASON = "failed to unload: the model is in use by the ensemble"


@pytest.fixture
async def models(
    app: FastAPI, client: httpx.AsyncClient, admin_key: str, model_repository: Path
) -> AsyncIterator[list[tuple[str, int]]]:
    """Two models of this test's own, registered and loaded here; deleted afterwards."""
    headers = {"X-API-Key": admin_key}
    lifecycle = state_of(app).lifecycle
    made: list[tuple[str, int]] = []
    for seed in (71, 72):
        name = f"lc_unload_{uuid.uuid4().hex[:8]}"
        write_recommender(model_repository, name, seed=seed)
        response = await client.post("/api/v1/models", json={"triton_name": name}, headers=headers)
        assert response.status_code == 201, response.text
        made.append((name, response.json()["id"]))
        await lifecycle.wait_loaded(name, 60)
    yield made
    for name, model_id in made:
        await client.delete(f"/api/v1/models/{model_id}", headers=headers)
        await lifecycle.retire(name)
        shutil.rmtree(model_repository / name, ignore_errors=True)


@pytest.fixture
def refuse_unload(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Triton refuses to unload the named model; every other unload is the real one."""
    gateway = state_of(app).triton
    real_unload = gateway.unload

    def refuse(refused: str) -> None:
        async def unload(name: str, wait_s: float | None = None) -> None:
            if name != refused:
                return await real_unload(name, wait_s)
            exc = InferenceServerException(REASON, status="StatusCode.INTERNAL")
            raise triton_error(exc, "model unload") from exc

        monkeypatch.setattr(gateway, "unload", unload)

    return refuse


async def _info(client: httpx.AsyncClient, admin_key: str, model_id: int) -> dict[str, object]:
    response = await client.get(f"/api/v1/models/{model_id}", headers={"X-API-Key": admin_key})
    assert response.status_code == 200, response.text
    info: dict[str, object] = response.json()
    return info


async def test_a_refused_unload_leaves_the_model_loaded_with_the_reason(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin_key: str,
    predict_key: str,
    models: list[tuple[str, int]],
    refuse_unload: Callable[[str], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (name, model_id), (other, _) = models
    headers = {"X-API-Key": admin_key}
    refuse_unload(name)
    response = await client.post(f"/api/v1/models/{model_id}/unload", headers=headers)
    assert response.status_code == 502, response.text
    assert REASON in response.json()["message"]

    info = await _info(client, admin_key, model_id)
    assert info["load_state"] == "ready" and info["loaded_at"], info
    assert REASON in str(info["replica_load_error"]), info
    predicted = await client.post(
        f"/inference/predict/{model_id}", json={"user_id": "u1"}, headers={"X-API-Key": predict_key}
    )
    assert predicted.status_code == 200, predicted.text  # it is loaded: it serves
    engine = (await client.get("/api/v1/engine", headers=headers)).json()
    assert name in {m["triton_name"] for m in engine["loaded_models"]}, engine

    # Eviction tries it first (least recently used); it frees nothing, so eviction
    # goes on to the next model and this one stays loaded.
    lifecycle = state_of(app).lifecycle
    lifecycle.status(name).last_used = -2.0  # before any model never used (0.0)
    lifecycle.status(other).last_used = -1.0
    unpinned = [
        s
        for s in lifecycle.statuses.values()
        if s.state is LoadState.ready and s.triton_name not in lifecycle.pinned
    ]
    monkeypatch.setattr(lifecycle, "max_loaded", len(unpinned) - 1)
    evicted = await lifecycle.evict()
    monkeypatch.undo()  # the real unload and max_loaded again
    assert evicted == [other], evicted
    status = lifecycle.status(name)
    assert status.state is LoadState.ready and not status.evicted, status
    assert name in await lifecycle.triton.ready_models()

    # Triton unloads it at last: unloaded, and the reason is gone.
    response = await client.post(f"/api/v1/models/{model_id}/unload", headers=headers)
    assert response.status_code == 200, response.text
    info = await _info(client, admin_key, model_id)
    assert info["load_state"] == "unloaded" and info["replica_load_error"] is None, info
    assert name not in await lifecycle.triton.ready_models()


async def test_a_deleted_model_triton_will_not_unload_stays_known_until_it_does(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin_key: str,
    models: list[tuple[str, int]],
    refuse_unload: Callable[[str], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    [(name, model_id), _] = models
    lifecycle = state_of(app).lifecycle
    refuse_unload(name)
    response = await client.delete(f"/api/v1/models/{model_id}", headers={"X-API-Key": admin_key})
    assert response.status_code == 204, response.text
    with pytest.raises(TritonError, match=REASON):
        await lifecycle.retire(name)
    status = lifecycle.statuses[name]  # still in Triton: kept, so every pass retries
    assert status.state is LoadState.ready and REASON in str(status.load_error), status

    monkeypatch.undo()
    assert await lifecycle.retire(name)
    assert name not in lifecycle.statuses
    assert name not in await lifecycle.triton.ready_models()
