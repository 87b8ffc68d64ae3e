"""Console sign-in: the session's cookie and record, CSRF, scopes, projects, revocation."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from control_plane.core.settings import default
from tests.control_plane.conftest import ProjectSetup, make_key, make_project, state_of
from tests.control_plane.console.conftest import SignedIn, csrf_of, sign_in


def _redis(app: FastAPI) -> Redis:
    redis = state_of(app).redis
    assert redis is not None
    return redis


async def _session_records(app: FastAPI) -> set[bytes]:
    return {key async for key in _redis(app).scan_iter(match="conch:*:console:session:*")}


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_the_session_cookie_is_http_only_strict_and_secure_over_tls(
    app: FastAPI, admin_key: str, scheme: str
) -> None:
    before = await _session_records(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=f"{scheme}://conch") as http:
        response = await sign_in(http, admin_key)
    assert response.status_code == 303, response.text
    cookie = next(c for c in response.headers.get_list("set-cookie") if "conch_console=" in c)
    flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "path", "max-age"} <= flags
    assert "samesite=strict" in cookie.lower() and "path=/console" in cookie.lower()
    assert ("secure" in flags) == (scheme == "https")
    # Redis holds the key's id and the CSRF token for the session's TTL, never the key.
    (record,) = await _session_records(app) - before
    session_id = re.search(r"conch_console=([^;]+)", cookie)
    assert session_id and session_id.group(1).encode() not in record  # only its hash
    stored = await _redis(app).hgetall(record)
    assert set(stored) == {b"key_id", b"csrf", b"created_at"}
    assert all(admin_key.encode() not in value for value in stored.values())
    assert 0 < await _redis(app).ttl(record) <= default("console_session_ttl_s")


async def test_a_wrong_key_or_one_without_read_is_refused_at_sign_in(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    for key, status in (
        ("conch_" + "A" * 38, 401),
        ("not a key", 401),
        (await make_key(app, ["predict"]), 403),
    ):
        response = await sign_in(client, key)
        assert response.status_code == status, response.text
        assert "conch_console=" not in response.headers.get("set-cookie", "")
        assert 'role="alert"' in response.text
    form = await client.get("/console/sign-in")
    forged = await client.post("/console/sign-in", data={"api_key": "x", "csrf_token": "y"})
    assert csrf_of(form.text) and forged.status_code == 403


async def test_a_post_without_the_right_csrf_token_is_refused(
    client: httpx.AsyncClient,
    app: FastAPI,
    admin_key: str,
    model_ids: dict[str, int],
    signed_in: SignedIn,
) -> None:
    setup = await make_project(client, admin_key, [("A", model_ids["a"], 50)])
    path = f"/console/projects/{setup.id}/promote"
    async with signed_in(admin_key) as console:
        for data in ({}, {"csrf_token": "not-the-token"}, {"csrf_token": ""}):
            response = await console.http.post(path, data={"slot_id": "1", **data})
            assert response.status_code == 403, response.text
            assert "CSRF token is missing or wrong" in response.text
            assert "text/html" in response.headers["content-type"]
        # The session's own token is accepted (the refusal above was the token's).
        good = await console.post(path, {"slot_id": str(setup.slots["A"])})
        assert good.status_code == 303


async def test_a_read_key_cannot_promote_create_or_revoke(
    app: FastAPI, project: ProjectSetup, signed_in: SignedIn
) -> None:
    async with signed_in(await make_key(app, ["read"])) as console:
        promote = f"/console/projects/{project.id}/promote"
        b = str(project.slots["B"])
        answers = [
            await console.http.get(f"{promote}?slot_id={b}"),
            await console.post(promote, {"slot_id": b}),
            await console.http.get("/console/keys"),
            await console.post("/console/keys", {"name": "x", "scopes": "admin"}),
            await console.post("/console/keys/1/revoke"),
        ]
    for response in answers:
        assert response.status_code == 403, (response.request.url, response.text)
        assert "lacks the" in response.text


async def test_a_project_key_sees_its_project_only(
    client: httpx.AsyncClient,
    app: FastAPI,
    admin_key: str,
    model_ids: dict[str, int],
    signed_in: SignedIn,
) -> None:
    own = await make_project(client, admin_key, [("Own", model_ids["a"], 100)])
    other = await make_project(client, admin_key, [("Other", model_ids["b"], 100)])
    key = await make_key(app, ["admin"], project_id=own.id)
    async with signed_in(key) as console:
        overview = await console.http.get("/console/projects")
        foreign = await console.http.get(f"/console/projects/{other.id}")
        unknown = await console.http.get("/console/projects/999999")
        foreign_model = await console.http.get(f"/console/models/{model_ids['b']}")
        unknown_model = await console.http.get("/console/models/999999")
        models = await console.http.get("/console/models")
        keys = await console.http.get("/console/keys")
    assert f"/console/projects/{own.id}" in overview.text
    assert f"/console/projects/{other.id}" not in overview.text
    pairs = ((foreign, unknown, other.id), (foreign_model, unknown_model, model_ids["b"]))
    for refused, missing, number in pairs:
        assert refused.status_code == missing.status_code == 404
        assert _shape(refused.text, number) == _shape(missing.text, 999999)
    assert "cptest_rec_a" in models.text and "cptest_rec_b" not in models.text
    assert keys.status_code == 200 and 'value="">all projects' not in keys.text


def _shape(html: str, number: int) -> str:
    """The page without what differs between any two answers: ids, request id, time."""
    text = html.replace(str(number), "N")
    return re.sub(r"<p class=\"muted\">Request id.*?</p>", "", text, flags=re.S)


async def test_revoking_the_key_ends_its_sessions(
    client: httpx.AsyncClient, app: FastAPI, admin_key: str, signed_in: SignedIn
) -> None:
    key = await make_key(app, ["read"], name="to-revoke")
    async with signed_in(key) as console:
        listed = (await client.get("/api/v1/keys", headers={"X-API-Key": admin_key})).json()
        key_id = next(k["id"] for k in listed if key.startswith(k["display_prefix"]))
        before = await _session_records(app)
        revoked = await client.delete(f"/api/v1/keys/{key_id}", headers={"X-API-Key": admin_key})
        assert revoked.status_code == 200
        page = await console.http.get("/console/projects")
        assert page.status_code == 303 and page.headers["location"] == "/console/sign-in"
        posted = await console.post("/console/sign-out")
        assert posted.status_code == 401
    assert len(before - await _session_records(app)) == 1  # its record is gone


async def test_sign_out_deletes_the_session(
    app: FastAPI, admin_key: str, signed_in: SignedIn
) -> None:
    async with signed_in(admin_key) as console:
        cookie = console.http.cookies["conch_console"]
        before = await _session_records(app)
        out = await console.post("/console/sign-out")
        assert out.status_code == 303 and out.headers["location"] == "/console/sign-in"
        assert len(before - await _session_records(app)) == 1
        assert "conch_console" not in console.http.cookies
        console.http.cookies.set("conch_console", cookie, domain="conch", path="/console")
        again = await console.http.get("/console/projects")
    assert again.status_code == 303 and again.headers["location"] == "/console/sign-in"
