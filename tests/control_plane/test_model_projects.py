"""Models registered into a project (issue 12, item 7), seen end to end.

A key restricted to project P sees the models registered into P and those P's
slots name; any other model answers exactly like one that does not exist, on
every door. Registration into P by P's key is visible to P's keys at once on the
replica that registered it, and at event speed on the others.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import httpx
from fastapi import FastAPI
from sqlalchemy import delete, select

from control_plane.app import create_app
from control_plane.core.settings import Settings
from control_plane.db.models import ApiKey, Model, Project
from tests.control_plane.conftest import ProjectSetup, make_key, make_project, state_of
from tests.control_plane.recommender_model import write_recommender
from tests.control_plane.waiting import until, until_served

MISSING_ID = 999_999


def _export(model_repository: Path, seed: int) -> str:
    name = f"cptest_proj_{uuid.uuid4().hex[:8]}"
    write_recommender(model_repository, name, seed)
    return name


async def _register(
    client: httpx.AsyncClient, key: str, triton_name: str, project_id: int | None = None
) -> httpx.Response:
    body: dict[str, object] = {"triton_name": triton_name}
    if project_id is not None:
        body["project_id"] = project_id
    return await client.post("/api/v1/models", json=body, headers={"X-API-Key": key})


def _shape(response: httpx.Response) -> tuple[int, str, str, list[str]]:
    """What a caller can tell apart: status, error, message (ids masked), detail keys."""
    body = response.json()
    message = re.sub(r"\d+", "N", body["message"])
    return response.status_code, body["error"], message, sorted(body["details"])


async def _project_with_own_model(
    app: FastAPI, client: httpx.AsyncClient, admin_key: str, model_repository: Path, seed: int
) -> tuple[ProjectSetup, int, str]:
    """A project with no slots, a model its own write key registered into it, and a
    predict, read and write key of the project."""
    project = await make_project(client, admin_key, [])
    writer = await make_key(app, ["write"], project_id=project.id)
    registered = await _register(client, writer, _export(model_repository, seed), project.id)
    assert registered.status_code == 201, registered.text
    assert registered.json()["project_id"] == project.id
    user = await make_key(app, ["predict", "read", "write"], project_id=project.id)
    return project, registered.json()["id"], user


async def test_a_project_key_registers_into_its_project_and_predicts_with_it(
    app: FastAPI, client: httpx.AsyncClient, admin_key: str, model_repository: Path
) -> None:
    project, model_id, user = await _project_with_own_model(
        app, client, admin_key, model_repository, seed=31
    )
    headers = {"X-API-Key": user}
    info = await client.get(f"/api/v1/models/{model_id}", headers=headers)
    assert info.status_code == 200, info.text
    assert info.json()["project_id"] == project.id
    listed = await client.get("/api/v1/models", headers=headers)
    assert [m["id"] for m in listed.json()] == [model_id]  # no slot names it: registered
    await until_served(client, model_id, user)
    batch = await client.post(
        f"/inference/predict/{model_id}/batch", json={"user_ids": ["u1", "u2"]}, headers=headers
    )
    assert batch.status_code == 200, batch.text
    assert [r["model_id"] for r in batch.json()["results"]] == [model_id, model_id]
    # Its own model is one its slots may serve.
    slot = await client.post(
        f"/api/v1/projects/{project.id}/slots",
        json={"name": "Control", "model_id": model_id, "weight": 100},
        headers=headers,
    )
    assert slot.status_code == 201, slot.text
    served = await client.post(
        f"/inference/predict/project/{project.id}", json={"user_id": "u1"}, headers=headers
    )
    assert served.status_code == 200, served.text
    assert served.json()["model_id"] == model_id


async def test_another_projects_key_finds_the_model_nowhere(
    app: FastAPI, client: httpx.AsyncClient, admin_key: str, model_repository: Path
) -> None:
    _, model_id, _ = await _project_with_own_model(
        app, client, admin_key, model_repository, seed=32
    )
    other = await make_project(client, admin_key, [])
    stranger = {"X-API-Key": await make_key(app, ["admin"], project_id=other.id)}
    requests = [
        ("GET", "/api/v1/models/{id}", None),
        ("GET", "/api/v1/models/{id}/metrics", None),
        ("POST", "/api/v1/models/{id}/reload", None),
        ("DELETE", "/api/v1/models/{id}", None),
        ("POST", "/inference/predict/{id}", {"user_id": "u1"}),
        ("POST", "/inference/predict/{id}/batch", {"user_ids": ["u1"]}),
    ]
    for method, path, body in requests:
        theirs = await client.request(method, path.format(id=model_id), json=body, headers=stranger)
        unknown = await client.request(
            method, path.format(id=MISSING_ID), json=body, headers=stranger
        )
        assert theirs.status_code == 404, (method, path, theirs.text)
        assert _shape(theirs) == _shape(unknown), (method, path)
    listed = await client.get("/api/v1/models", headers=stranger)
    assert model_id not in [m["id"] for m in listed.json()]
    admin = await client.get(f"/api/v1/models/{model_id}", headers={"X-API-Key": admin_key})
    assert admin.status_code == 200, "the stranger's DELETE removed the model"


async def test_seed_000_answers_a_project_key_404_for_unknown_models(
    app: FastAPI, client: httpx.AsyncClient, admin_key: str, model_ids: dict[str, int]
) -> None:
    project = await make_project(client, admin_key, [("Control", model_ids["a"], 100)])
    headers = {"X-API-Key": await make_key(app, ["predict"], project_id=project.id)}
    for model_id in (MISSING_ID, model_ids["b"]):  # unknown; registered, not the project's
        single = await client.post(
            f"/inference/predict/{model_id}", json={"user_id": "u1"}, headers=headers
        )
        batch = await client.post(
            f"/inference/predict/{model_id}/batch", json={"user_ids": ["u1"]}, headers=headers
        )
        assert single.status_code == batch.status_code == 404, (single.text, batch.text)
        assert single.json()["message"] == f"model {model_id} not found"
    served = await client.post(
        f"/inference/predict/{model_ids['a']}", json={"user_id": "u1"}, headers=headers
    )
    assert served.status_code == 200, served.text  # its slot's model still serves


async def test_a_project_key_registers_only_into_its_own_project(
    app: FastAPI, client: httpx.AsyncClient, admin_key: str, model_repository: Path
) -> None:
    mine = await make_project(client, admin_key, [])
    other = await make_project(client, admin_key, [])
    writer = await make_key(app, ["write"], project_id=mine.id)
    name = _export(model_repository, seed=33)
    nowhere = await _register(client, writer, name)
    assert nowhere.status_code == 403, nowhere.text
    assert f"set project_id to {mine.id}" in nowhere.json()["message"]
    elsewhere = await _register(client, writer, name, other.id)
    missing = await _register(client, writer, name, MISSING_ID)
    assert elsewhere.status_code == 404, elsewhere.text
    assert _shape(elsewhere) == _shape(missing)
    # Nothing was registered by the refusals; an unrestricted key meets the same 404
    # for a project that does not exist.
    assert (await _register(client, admin_key, name, MISSING_ID)).status_code == 404
    everything = await client.get("/api/v1/models", headers={"X-API-Key": admin_key})
    assert name not in [m["triton_name"] for m in everything.json()]
    # An unrestricted key registers into any project.
    into_other = await _register(client, admin_key, name, other.id)
    assert into_other.status_code == 201 and into_other.json()["project_id"] == other.id


async def test_a_name_registered_elsewhere_is_unknown_to_a_project_key(
    app: FastAPI, client: httpx.AsyncClient, admin_key: str, model_repository: Path
) -> None:
    theirs, model_id, _ = await _project_with_own_model(
        app, client, admin_key, model_repository, seed=34
    )
    name = (
        await client.get(f"/api/v1/models/{model_id}", headers={"X-API-Key": admin_key})
    ).json()["triton_name"]
    mine = await make_project(client, admin_key, [])
    writer = await make_key(app, ["write"], project_id=mine.id)
    nothing = f"cptest_nothing_{uuid.uuid4().hex[:8]}"
    taken = await _register(client, writer, name, mine.id)
    never_exported = await _register(client, writer, nothing, mine.id)
    assert taken.status_code == 404, taken.text
    assert taken.json()["message"].replace(name, "NAME") == never_exported.json()[
        "message"
    ].replace(nothing, "NAME")
    assert _shape(taken)[:2] == _shape(never_exported)[:2]
    assert taken.json()["details"] == {"triton_name": name}
    # The admin sees why: a model does not move between projects.
    moved = await _register(client, admin_key, name, mine.id)
    assert moved.status_code == 409 and "another project" in moved.json()["message"]
    global_ = await _register(client, admin_key, name)
    assert global_.status_code == 409, global_.text
    again = await _register(client, admin_key, name, theirs.id)  # idempotent, same project
    assert again.status_code == 201 and again.json()["id"] == model_id


async def test_a_project_key_deletes_its_own_model(
    app: FastAPI, client: httpx.AsyncClient, admin_key: str, model_repository: Path
) -> None:
    project, model_id, _ = await _project_with_own_model(
        app, client, admin_key, model_repository, seed=35
    )
    writer = {"X-API-Key": await make_key(app, ["write"], project_id=project.id)}
    deleted = await client.delete(f"/api/v1/models/{model_id}", headers=writer)
    assert deleted.status_code == 204, deleted.text
    gone = await client.get(f"/api/v1/models/{model_id}", headers={"X-API-Key": admin_key})
    assert gone.status_code == 404


async def test_registration_is_seen_at_once_here_and_by_event_on_another_replica(
    app: FastAPI,
    settings: Settings,
    client: httpx.AsyncClient,
    admin_key: str,
    model_repository: Path,
) -> None:
    """Both replicas have P's entry cached (replica B for 300 s): the registering
    replica sees the new model in its answer's wake, B as soon as the event lands."""
    project = await make_project(client, admin_key, [])
    reader = await make_key(app, ["read", "write"], project_id=project.id)
    headers = {"X-API-Key": reader}
    replica_b = create_app(settings.model_copy(update={"cache_ttl_s": 300.0}), migrate=False)
    async with replica_b.router.lifespan_context(replica_b):
        state_b = state_of(replica_b)
        await asyncio.wait_for(state_b.events.subscribed.wait(), 10)
        transport = httpx.ASGITransport(app=replica_b)
        async with httpx.AsyncClient(transport=transport, base_url="http://b") as client_b:
            for http in (client, client_b):  # prime both caches with P's empty view
                assert (await http.get("/api/v1/models", headers=headers)).json() == []
            assert project.id in state_of(app).routing._entries
            assert project.id in state_b.routing._entries
            registered = await _register(
                client, reader, _export(model_repository, seed=36), project.id
            )
            assert registered.status_code == 201, registered.text
            model_id = registered.json()["id"]
            here = await client.get(f"/api/v1/models/{model_id}", headers=headers)
            assert here.status_code == 200, here.text  # no wait: dispatched before the 201

            async def entry_dropped() -> bool:
                return project.id not in state_b.routing._entries

            await until(entry_dropped, "model_trained never reached replica B")
            there = await client_b.get(f"/api/v1/models/{model_id}", headers=headers)
            assert there.status_code == 200, there.text


async def test_deleting_a_project_leaves_its_models_global(
    app: FastAPI, client: httpx.AsyncClient, admin_key: str, model_repository: Path
) -> None:
    project, model_id, _ = await _project_with_own_model(
        app, client, admin_key, model_repository, seed=37
    )
    state = state_of(app)
    async with state.sessionmaker() as session, session.begin():
        await session.execute(delete(Project).where(Project.id == project.id))
    async with state.sessionmaker() as session:
        model = await session.get(Model, model_id)
        assert model is not None and model.project_id is None  # SET NULL: nothing dangles
        keys = await session.scalars(select(ApiKey.id).where(ApiKey.project_id == project.id))
        assert keys.all() == []  # the project's keys went with it
    info = await client.get(f"/api/v1/models/{model_id}", headers={"X-API-Key": admin_key})
    assert info.status_code == 200 and info.json()["project_id"] is None
