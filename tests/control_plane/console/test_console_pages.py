"""The console's pages over the real stack: what they show, and the changes they make."""

from __future__ import annotations

import re

import httpx
from fastapi import FastAPI

from tests.control_plane.conftest import ProjectSetup, make_key, make_project
from tests.control_plane.console.conftest import SignedIn


async def test_pages_need_a_session(client: httpx.AsyncClient) -> None:
    for path in ("/console/projects", "/console/models", "/console/keys", "/console/queues"):
        response = await client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"] == "/console/sign-in"
    posted = await client.post("/console/keys", data={"name": "x"})
    assert posted.status_code == 401
    assert "text/html" in posted.headers["content-type"]
    missing = await client.get("/console/no-such-page")
    assert missing.status_code == 404 and "<h1>NotFoundError</h1>" in missing.text
    wrong_method = await client.put("/console/projects")
    assert wrong_method.status_code == 405 and "<h1>MethodNotAllowedError</h1>" in wrong_method.text
    bare = await client.get("/console")
    assert bare.status_code in (307, 308) and bare.headers["location"].endswith("/console/")
    bad_id = await client.get("/console/projects/abc")
    assert bad_id.status_code in (303, 422)  # the session is checked first, or the path


async def test_the_ab_page_draws_each_slots_interval_and_the_verdict(
    app: FastAPI, project: ProjectSetup, signed_in: SignedIn
) -> None:
    key = await make_key(app, ["read"])
    async with signed_in(key) as console:
        page = await console.http.get(f"/console/projects/{project.id}")
    assert page.status_code == 200, page.text
    html = page.text
    # Two interval charts (CTR and conversion), two trend charts, each an accessible image.
    assert html.count('role="img"') == 4
    assert len(re.findall(r'<title id="[a-z-]+-title">', html)) == 4
    # A: 100/1000 clicks, B: 200/1000; the Wilson 95% intervals, in words.
    assert "A (control): 10.0% (95% CI 8.3%\u201312.0%)" in html
    assert "B (winner): 20.0% (95% CI 17.6%\u201322.6%)" in html
    assert "<strong>B</strong> beats the control" in html
    assert "Promote" not in html  # a read key is offered no change
    assert float(page.headers["server-timing"].removeprefix("app;dur=")) > 0
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"


async def test_promote_with_its_confirmation_moves_all_traffic(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin_key: str,
    project: ProjectSetup,
    signed_in: SignedIn,
) -> None:
    b = project.slots["B"]
    async with signed_in(await make_key(app, ["read", "write"])) as console:
        confirm = await console.http.get(f"/console/projects/{project.id}/promote?slot_id={b}")
        assert confirm.status_code == 200, confirm.text
        assert "Yes, promote B" in confirm.text
        done = await console.post(f"/console/projects/{project.id}/promote", {"slot_id": str(b)})
        assert done.status_code == 303, done.text
        after = await console.http.get(done.headers["location"])
    assert "Promoted <strong>B</strong>" in after.text
    slots = await client.get(
        f"/api/v1/projects/{project.id}/slots", headers={"X-API-Key": admin_key}
    )
    state = {s["name"]: (s["weight"], s["active"]) for s in slots.json()}
    assert state == {"A": (50, False), "B": (100, True)}


async def test_models_queues_and_the_overview_render(
    app: FastAPI, project: ProjectSetup, model_ids: dict[str, int], signed_in: SignedIn
) -> None:
    async with signed_in(await make_key(app, ["read"])) as console:
        overview = await console.http.get("/console/projects")
        models = await console.http.get("/console/models")
        model = await console.http.get(f"/console/models/{model_ids['a']}")
        queues = await console.http.get("/console/queues")
    assert f'href="/console/projects/{project.id}"' in overview.text
    assert "weighted random" in overview.text
    assert models.status_code == 200 and "cptest_rec_a" in models.text
    assert model.status_code == 200 and "none: the model file is as converted" in model.text
    assert queues.status_code == 200 and "Recent tasks" in queues.text


async def test_an_admin_creates_a_key_seen_once_and_revokes_it(
    client: httpx.AsyncClient, admin_key: str, signed_in: SignedIn
) -> None:
    async with signed_in(admin_key) as console:
        created = await console.http.post(
            "/console/keys",
            data={"csrf_token": console.csrf, "name": "from-console", "scopes": "read"},
        )
        assert created.status_code == 200, created.text
        token = re.search(r'id="new-key">(conch_\w+)<', created.text)
        assert token, created.text
        plaintext = token.group(1)
        listed = await console.http.get("/console/keys")
        assert plaintext not in listed.text and plaintext[:12] in listed.text
        works = await client.get("/api/v1/projects", headers={"X-API-Key": plaintext})
        assert works.status_code == 200
        keys = (await client.get("/api/v1/keys", headers={"X-API-Key": admin_key})).json()
        key_id = next(k["id"] for k in keys if k["name"] == "from-console")
        revoked = await console.post(f"/console/keys/{key_id}/revoke")
        assert revoked.status_code == 303
        assert f"Key {key_id} revoked" in (await console.http.get(revoked.headers["location"])).text
    refused = await client.get("/api/v1/projects", headers={"X-API-Key": plaintext})
    assert refused.status_code == 401


async def test_a_bad_key_form_is_a_422_page(admin_key: str, signed_in: SignedIn) -> None:
    async with signed_in(admin_key) as console:
        response = await console.post("/console/keys", {"name": "x", "scopes": "root"})
        bad_ids = [
            await console.http.get(path)
            for path in ("/console/projects/abc", "/console/projects/99999999999",
                         "/console/projects/1?alpha=2", "/console/models/0")
        ]  # fmt: skip
        bad_slot = await console.post("/console/projects/1/promote", {"slot_id": "9" * 5000})
    assert response.status_code == 422
    assert "the key cannot be created" in response.text
    for page in [*bad_ids, bad_slot]:
        assert page.status_code == 422, (page.request.url, page.text)
        assert "<h1>ValidationError</h1>" in page.text


async def test_a_project_without_events_or_a_winner_renders(
    client: httpx.AsyncClient, admin_key: str, model_ids: dict[str, int], signed_in: SignedIn
) -> None:
    a, b = model_ids["a"], model_ids["b"]
    for slots in ([], [("Only", a, 100)], [("A", a, 50), ("B", b, 50)]):
        setup = await make_project(client, admin_key, slots)
        async with signed_in(admin_key) as console:
            page = await console.http.get(f"/console/projects/{setup.id}")
        assert page.status_code == 200, page.text
        assert "No slot beats the control yet" in page.text
