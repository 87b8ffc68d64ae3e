"""A project-restricted key stays inside its project (issue 9, item 1), seen end to end.

The route-table matrix (`test_access_matrix.py`) checks every status; these
check what the statuses protect: what a restricted key can list, the keys it
can mint, and that nothing outside its project changed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from fastapi import FastAPI

from control_plane.keys.service import create_key
from tests.control_plane.conftest import ProjectSetup, make_key, make_project, state_of


async def _two_projects(
    client: httpx.AsyncClient, admin_key: str, model_ids: dict[str, int]
) -> tuple[ProjectSetup, ProjectSetup]:
    mine = await make_project(client, admin_key, [("Control", model_ids["a"], 100)])
    other = await make_project(client, admin_key, [("Control", model_ids["b"], 100)])
    return mine, other


async def test_a_restricted_admin_mints_only_keys_of_its_project(
    app: FastAPI, client: httpx.AsyncClient, admin_key: str, model_ids: dict[str, int]
) -> None:
    mine, other = await _two_projects(client, admin_key, model_ids)
    headers = {"X-API-Key": await make_key(app, ["admin"], project_id=mine.id)}
    unrestricted = await client.post("/api/v1/keys", json={"scopes": ["admin"]}, headers=headers)
    assert unrestricted.status_code == 403, unrestricted.text
    assert f"set project_id to {mine.id}" in unrestricted.json()["message"]
    elsewhere = await client.post(
        "/api/v1/keys", json={"scopes": ["read"], "project_id": other.id}, headers=headers
    )
    assert elsewhere.status_code == 404
    assert elsewhere.json()["message"] == f"project {other.id} not found"
    created = await client.post(
        "/api/v1/keys", json={"scopes": ["admin"], "project_id": mine.id}, headers=headers
    )
    assert created.status_code == 201 and created.json()["project_id"] == mine.id
    minted = {"X-API-Key": created.json()["key"]}
    assert (await client.get(f"/api/v1/projects/{mine.id}", headers=minted)).status_code == 200
    assert (await client.get(f"/api/v1/projects/{other.id}", headers=minted)).status_code == 404


async def test_a_restricted_admin_lists_and_revokes_only_its_projects_keys(
    app: FastAPI, client: httpx.AsyncClient, admin_key: str, model_ids: dict[str, int]
) -> None:
    mine, other = await _two_projects(client, admin_key, model_ids)
    headers = {"X-API-Key": await make_key(app, ["admin"], project_id=mine.id)}
    theirs = await make_key(app, ["read"], project_id=other.id)
    listed = await client.get("/api/v1/keys", headers=headers)
    assert listed.status_code == 200
    assert {k["project_id"] for k in listed.json()} == {mine.id}
    everyone = (await client.get("/api/v1/keys", headers={"X-API-Key": admin_key})).json()
    their_id = next(k["id"] for k in everyone if theirs.startswith(k["display_prefix"]))
    revoked = await client.delete(f"/api/v1/keys/{their_id}", headers=headers)
    assert revoked.status_code == 404
    still = await client.get(f"/api/v1/projects/{other.id}", headers={"X-API-Key": theirs})
    assert still.status_code == 200, "a key of another project was revoked"


async def test_a_key_cannot_mint_a_key_that_outlives_it(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    expires = datetime.now(UTC) + timedelta(hours=1)
    state = state_of(app)
    async with state.sessionmaker() as session, session.begin():
        _, token = await create_key(
            session,
            state.settings.secret_key.get_secret_value(),
            scopes=["admin"],
            expires_at=expires,
            rate_limit="1000000/minute",
        )
    headers = {"X-API-Key": token}
    forever = await client.post("/api/v1/keys", json={"scopes": ["read"]}, headers=headers)
    later = await client.post(
        "/api/v1/keys",
        json={"scopes": ["read"], "expires_at": (expires + timedelta(days=1)).isoformat()},
        headers=headers,
    )
    assert forever.status_code == later.status_code == 403
    sooner = await client.post(
        "/api/v1/keys",
        json={"scopes": ["read"], "expires_at": (expires - timedelta(minutes=1)).isoformat()},
        headers=headers,
    )
    assert sooner.status_code == 201, sooner.text


async def test_a_restricted_key_lists_only_its_projects_models_and_projects(
    app: FastAPI, client: httpx.AsyncClient, admin_key: str, model_ids: dict[str, int]
) -> None:
    mine, _ = await _two_projects(client, admin_key, model_ids)
    headers = {"X-API-Key": await make_key(app, ["read"], project_id=mine.id)}
    models = await client.get("/api/v1/models", headers=headers)
    assert [m["id"] for m in models.json()] == [model_ids["a"]]
    projects = await client.get("/api/v1/projects", headers=headers)
    assert [p["id"] for p in projects.json()] == [mine.id]


async def test_a_restricted_write_key_changes_nothing_outside_its_project(
    app: FastAPI, client: httpx.AsyncClient, admin_key: str, model_ids: dict[str, int]
) -> None:
    mine, _ = await _two_projects(client, admin_key, model_ids)
    headers = {"X-API-Key": await make_key(app, ["write"], project_id=mine.id)}
    theirs = model_ids["b"]
    for action in ("load", "unload", "reload"):
        response = await client.post(f"/api/v1/models/{theirs}/{action}", headers=headers)
        assert response.status_code == 404, (action, response.text)
    deleted = await client.delete(f"/api/v1/models/{theirs}", headers=headers)
    assert deleted.status_code == 404  # another project's model, as an unknown one
    # Its slot's model is global (registered into no project): deleting it is global.
    shared = await client.delete(f"/api/v1/models/{model_ids['a']}", headers=headers)
    assert shared.status_code == 403, shared.text
    assert "not registered into project" in shared.json()["message"]
    repointed = await client.patch(
        f"/api/v1/slots/{mine.slots['Control']}", json={"model_id": theirs}, headers=headers
    )
    assert repointed.status_code == 404
    created = await client.post(
        "/api/v1/projects", json={"name": "restricted-may-not"}, headers=headers
    )
    assert created.status_code == 403
    # Project Q still serves its model, from Triton.
    triton = state_of(app).triton
    name = (await client.get(f"/api/v1/models/{theirs}", headers={"X-API-Key": admin_key})).json()
    assert name["triton_name"] in await triton.ready_models()
    slots = await client.get(f"/api/v1/projects/{mine.id}/slots", headers={"X-API-Key": admin_key})
    assert [s["model_id"] for s in slots.json()] == [model_ids["a"]]
