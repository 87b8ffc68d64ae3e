"""Seed 002's model management at /api/inference/models, on the real stack.

Project P owns two models (one served by an active slot, so pinned); project Q
owns a model registered later under the same registered name as one of P's.
P's keys must see P's models only, by id, Triton name or registered name, and
anything else must read exactly like a model that does not exist.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from conch_manifest.layout import manifest_path
from tests.control_plane.conftest import make_key, make_project, state_of
from tests.control_plane.engine_api.tabular_model import export_regressor, predict_rows
from tests.control_plane.recommender_model import write_recommender
from tests.control_plane.waiting import until_served

API = "/api/inference/models"


@dataclass
class World:
    own: int  # P's, unpinned
    pinned: int  # P's, served by P's active slot
    foreign: int  # Q's, registered after `own` under the same registered name
    names: dict[str, str]  # which -> Triton name
    shared_name: str  # the registered name of `own` and `foreign`
    p_admin: str  # an admin key restricted to P: every scope, P's sight only
    p_read: str
    admin: str


def _write(repository: Path, triton_name: str, seed: int, registered_name: str) -> None:
    write_recommender(repository, triton_name, seed)
    path = manifest_path(repository, triton_name)
    manifest = json.loads(path.read_text())
    manifest["name"] = registered_name
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True))


async def _register(
    client: httpx.AsyncClient, admin_key: str, triton_name: str, project_id: int | None
) -> int:
    response = await client.post(
        "/api/v1/models",
        json={"triton_name": triton_name, "project_id": project_id},
        headers={"X-API-Key": admin_key},
    )
    assert response.status_code == 201, response.text
    model_id: int = response.json()["id"]
    return model_id


@pytest.fixture(scope="module")
async def world(
    app: FastAPI, client: httpx.AsyncClient, admin_key: str, model_repository: Path
) -> World:
    tag = uuid.uuid4().hex[:6]
    names = {w: f"cptest_mgmt_{w}_{tag}" for w in ("own", "pinned", "foreign")}
    shared = f"mgmt-shared-{tag}"
    _write(model_repository, names["own"], 31, shared)
    _write(model_repository, names["pinned"], 32, f"mgmt-pinned-{tag}")
    _write(model_repository, names["foreign"], 33, shared)
    p = await make_project(client, admin_key, [])
    q = await make_project(client, admin_key, [])
    own = await _register(client, admin_key, names["own"], p.id)
    pinned = await _register(client, admin_key, names["pinned"], p.id)
    foreign = await _register(client, admin_key, names["foreign"], q.id)
    assert own < foreign  # `foreign` is the newest of the shared name
    slot = await client.post(
        f"/api/v1/projects/{p.id}/slots",
        json={"name": "Control", "model_id": pinned, "weight": 100},
        headers={"X-API-Key": admin_key},
    )
    assert slot.status_code == 201, slot.text
    return World(
        own=own,
        pinned=pinned,
        foreign=foreign,
        names=names,
        shared_name=shared,
        p_admin=await make_key(app, ["admin"], project_id=p.id),
        p_read=await make_key(app, ["read"], project_id=p.id),
        admin=admin_key,
    )


def _headers(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


async def test_a_projects_key_lists_only_its_projects_models(
    client: httpx.AsyncClient, world: World
) -> None:
    response = await client.get(f"{API}/list", headers=_headers(world.p_read))
    assert response.status_code == 200, response.text
    body = response.json()
    assert sorted(m["model_id"] for m in body["models"]) == [world.own, world.pinned]
    assert body["total_models"] == 2
    listed = {m["model_id"]: m for m in body["models"]}
    assert listed[world.own]["triton_name"] == world.names["own"]
    assert listed[world.own]["name"] == world.shared_name
    assert listed[world.own]["model_type"] == "recommender"
    assert listed[world.own]["compiled"] is False
    everything = (await client.get(f"{API}/list", headers=_headers(world.admin))).json()
    ids = [m["model_id"] for m in everything["models"]]
    assert {world.own, world.pinned, world.foreign} <= set(ids)
    assert everything["total_models"] == len(ids)


@pytest.mark.parametrize("by", ["id", "triton_name", "registered_name"])
async def test_info_resolves_ids_triton_names_and_registered_names(
    client: httpx.AsyncClient, world: World, by: str
) -> None:
    ref = {
        "id": str(world.own),
        "triton_name": world.names["own"],
        "registered_name": world.shared_name,
    }[by]
    response = await client.get(f"{API}/{ref}/info", headers=_headers(world.p_read))
    assert response.status_code == 200, response.text
    # P's key: the shared name means P's model, though Q registered one after it.
    assert response.json()["model_id"] == world.own


async def test_an_unrestricted_key_gets_the_newest_model_of_a_name(
    client: httpx.AsyncClient, world: World
) -> None:
    response = await client.get(f"{API}/{world.shared_name}/info", headers=_headers(world.admin))
    assert response.status_code == 200, response.text
    assert response.json()["model_id"] == world.foreign


async def test_info_reports_disk_tensors_and_the_load_on_this_replica(
    client: httpx.AsyncClient, world: World
) -> None:
    await until_served(client, world.own, world.admin)
    response = await client.get(f"{API}/{world.own}/info", headers=_headers(world.p_read))
    assert response.status_code == 200, response.text
    info = response.json()
    registry = (
        await client.get(f"/api/v1/models/{world.own}", headers=_headers(world.admin))
    ).json()
    assert info["model_size_mb"] == round(registry["size_bytes"] / 1024 / 1024, 3)
    assert info["model_size_mb"] > 0
    assert info["inputs"] == registry["inputs"] and info["outputs"] == registry["outputs"]
    assert info["model_path"] == world.names["own"]  # relative: no server path
    assert info["load_state"] == "ready" and info["loaded_at"] is not None
    assert info["max_batch_size"] == 64
    assert info["pinned"] is False
    assert "/" not in response.text  # no path of the server's


def _shape(response: httpx.Response, ref: str) -> tuple[int, str, str, list[str]]:
    body = response.json()
    message = re.sub(r"\d+", "N", body["message"].replace(ref, "REF"))
    return response.status_code, body["error"], message, sorted(body["details"])


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", "/info"), ("GET", "/metrics"), ("DELETE", ""), ("POST", "/reload")],
)
async def test_another_projects_model_reads_exactly_like_an_unknown_one(
    client: httpx.AsyncClient, world: World, method: str, suffix: str
) -> None:
    pairs = [
        (str(world.foreign), "999999"),
        (world.names["foreign"], f"cptest_mgmt_nosuch_{uuid.uuid4().hex[:6]}"),
    ]
    for foreign_ref, unknown_ref in pairs:
        foreign = await client.request(
            method, f"{API}/{foreign_ref}{suffix}", headers=_headers(world.p_admin)
        )
        unknown = await client.request(
            method, f"{API}/{unknown_ref}{suffix}", headers=_headers(world.p_admin)
        )
        assert foreign.status_code == 404, foreign.text
        assert _shape(foreign, foreign_ref) == _shape(unknown, unknown_ref)
        assert world.names["foreign"] not in foreign.text or foreign_ref == world.names["foreign"]
    # Q's model is untouched by P's attempts: still registered, and it serves.
    await until_served(client, world.foreign, world.admin)


async def test_unload_takes_the_model_out_of_triton_and_keeps_the_registration(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    await until_served(client, world.own, world.admin)
    triton = state_of(app).triton
    assert world.names["own"] in await triton.ready_models()
    response = await client.delete(f"{API}/{world.names['own']}", headers=_headers(world.p_admin))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["message"] == "Model unloaded successfully"
    assert body["model_id"] == world.own and body["was_loaded"] is True
    # The embedded backends report no memory to Triton: not measured, so null.
    assert body["memory_freed_mb"] is None
    assert world.names["own"] not in await triton.ready_models()
    info = (await client.get(f"{API}/{world.own}/info", headers=_headers(world.p_read))).json()
    assert info["load_state"] == "unloaded" and info["loaded_at"] is None
    again = await client.delete(f"{API}/{world.own}", headers=_headers(world.p_admin))
    assert again.status_code == 200, again.text
    assert again.json()["was_loaded"] is False and again.json()["memory_freed_mb"] == 0.0
    # The registration stays: the model serves again on demand.
    await until_served(client, world.own, world.admin)


async def test_a_pinned_model_is_not_unloaded(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    await until_served(client, world.pinned, world.admin)
    response = await client.delete(f"{API}/{world.pinned}", headers=_headers(world.p_admin))
    assert response.status_code == 409, response.text
    assert response.json()["error"] == "ConflictError"
    assert world.names["pinned"] in await state_of(app).triton.ready_models()


async def test_unload_and_reload_need_the_write_scope(
    client: httpx.AsyncClient, world: World
) -> None:
    for method, suffix in (("DELETE", ""), ("POST", "/reload")):
        response = await client.request(
            method, f"{API}/{world.own}{suffix}", headers=_headers(world.p_read)
        )
        assert response.status_code == 403, response.text


async def test_reload_loads_the_model_again_in_triton(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    before = datetime.now(UTC)
    response = await client.post(f"{API}/{world.own}/reload", headers=_headers(world.p_admin))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["message"] == "Model reloaded successfully" and body["model_id"] == world.own
    assert body["reload_time"] > 0
    assert datetime.fromisoformat(body["loaded_at"]) >= before
    assert world.names["own"] in await state_of(app).triton.ready_models()


@pytest.fixture(scope="module")
def regressor(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    return export_regressor(model_repository, tmp_path_factory.mktemp("mgmt"))


async def _predict_rows(client: httpx.AsyncClient, model_id: int, key: str) -> None:
    response = await predict_rows(client, model_id, key)
    assert response.status_code == 200, response.text


async def test_metrics_count_the_predictions_made(
    client: httpx.AsyncClient, admin_key: str, regressor: str
) -> None:
    model_id = await _register(client, admin_key, regressor, None)
    await _predict_rows(client, model_id, admin_key)  # loaded and warm from here on
    url = f"{API}/{regressor}/metrics"
    before = (await client.get(url, headers=_headers(admin_key))).json()
    predictions = 7
    for _ in range(predictions):  # one at a time: Triton sees each as its own request
        await _predict_rows(client, model_id, admin_key)
    response = await client.get(url, headers=_headers(admin_key))
    assert response.status_code == 200, response.text
    after = response.json()
    assert after["model_id"] == model_id
    # Conch's own counters of this replica...
    assert after["inference_count"] - before["inference_count"] == predictions
    assert after["error_count"] == before["error_count"] == 0
    assert after["error_rate"] == 0.0
    assert 0 < after["last_inference_time"] <= after["total_inference_time"]
    average = after["total_inference_time"] / after["inference_count"]
    assert after["average_inference_time"] == pytest.approx(average)
    throughput = after["inference_count"] / after["total_inference_time"]
    assert after["throughput_per_second"] == pytest.approx(throughput, rel=1e-3)
    # ...and Triton's statistics of the same requests, named apart.
    triton_before, triton_after = before["triton"], after["triton"]
    assert triton_after["triton_name"] == regressor
    assert triton_after["success_count"] - triton_before["success_count"] == predictions
    assert triton_after["avg_compute_ms"] is not None and triton_after["avg_compute_ms"] > 0
    assert after["memory_usage_mb"] is None  # the embedded backends report none to Triton


async def test_metrics_of_a_model_never_used_here_are_null_not_zero(
    client: httpx.AsyncClient, admin_key: str, model_repository: Path
) -> None:
    name = f"cptest_mgmt_unused_{uuid.uuid4().hex[:6]}"  # no other test predicts with it
    _write(model_repository, name, 34, name)
    unused = await _register(client, admin_key, name, None)
    response = await client.get(f"{API}/{unused}/metrics", headers=_headers(admin_key))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["error_rate"] is None and body["throughput_per_second"] is None
    assert body["average_inference_time"] is None and body["last_inference_time"] is None


async def test_a_reference_longer_than_any_name_is_422(
    client: httpx.AsyncClient, world: World
) -> None:
    response = await client.get(f"{API}/{'x' * 201}/info", headers=_headers(world.admin))
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "ValidationError"


async def test_a_model_named_load_is_not_taken_for_an_import_job(
    client: httpx.AsyncClient, admin_key: str, model_repository: Path
) -> None:
    triton_name = f"cptest_named_load_{uuid.uuid4().hex[:6]}"
    _write(model_repository, triton_name, 34, "load")
    model_id = await _register(client, admin_key, triton_name, None)
    headers = {"X-API-Key": admin_key}
    info = await client.get(f"{API}/load/info", headers=headers)
    assert info.status_code == 200, info.text
    assert info.json()["model_id"] == model_id
    job = await client.get(f"{API}/load/{uuid.uuid4().hex}", headers=headers)
    assert job.status_code == 404 and "import job" in job.json()["message"]
