"""API keys: format, 401/403, expiry, revocation reaching another replica's cache."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from control_plane.app import create_app
from control_plane.core.settings import Settings
from control_plane.db.models import ApiKey
from control_plane.keys import tokens
from control_plane.keys.service import create_key
from control_plane.keys.verifier import KeyVerifier
from tests.control_plane.conftest import UNLIMITED, make_key, make_project, state_of


def test_token_format_and_checksum() -> None:
    token = tokens.generate_token()
    assert token.startswith("conch_") and len(token) == tokens.TOKEN_LENGTH
    assert tokens.is_well_formed(token)
    flipped = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    assert not tokens.is_well_formed(flipped)
    assert not tokens.is_well_formed("rctm_" + token[5:])
    for wrong in (
        token + "a",
        token[:-1],
        token[:12] + "-" + token[13:],
        token[:12] + "é" + token[13:],
    ):
        assert not tokens.is_well_formed(wrong), wrong  # length, alphabet (ASCII only)
    assert tokens.hash_token("s", token) != tokens.hash_token("t", token)


async def _predict(client: httpx.AsyncClient, model_id: int, key: str | None) -> httpx.Response:
    headers = {"X-API-Key": key} if key is not None else {}
    return await client.post(
        f"/inference/predict/{model_id}", json={"user_id": "u1"}, headers=headers
    )


async def test_missing_malformed_and_unknown_keys_are_401(
    client: httpx.AsyncClient, model_ids: dict[str, int]
) -> None:
    unknown = tokens.generate_token()  # well formed, never issued: reaches the database
    for key in (None, "", "conch_short", unknown):
        response = await _predict(client, model_ids["a"], key)
        assert response.status_code == 401, key
        assert response.json()["error"] == "AuthenticationError"


async def test_scope_is_403_and_admin_implies_all(
    app: FastAPI, client: httpx.AsyncClient, model_ids: dict[str, int]
) -> None:
    read_only = await make_key(app, ["read"])
    response = await _predict(client, model_ids["a"], read_only)
    assert response.status_code == 403
    assert response.json()["error"] == "PermissionDeniedError"
    admin = await make_key(app, ["admin"])
    assert (await _predict(client, model_ids["a"], admin)).status_code == 200


async def test_project_restricted_key_finds_nothing_elsewhere(
    app: FastAPI, client: httpx.AsyncClient, admin_key: str, model_ids: dict[str, int]
) -> None:
    """Outside its project a restricted key gets the 404 an unknown id gets (seed 000)."""
    mine = await make_project(client, admin_key, [("Control", model_ids["a"], 1)])
    other = await make_project(client, admin_key, [("Control", model_ids["a"], 1)])
    key = await make_key(app, ["predict"], project_id=mine.id)
    body = {"user_id": "u1"}
    ok = await client.post(
        f"/inference/predict/project/{mine.id}", json=body, headers={"X-API-Key": key}
    )
    assert ok.status_code == 200
    denied = await client.post(
        f"/inference/predict/project/{other.id}", json=body, headers={"X-API-Key": key}
    )
    assert denied.status_code == 404
    assert denied.json()["message"] == f"project {other.id} not found"
    # By model id: only the models its project's slots serve.
    assert (await _predict(client, model_ids["a"], key)).status_code == 200
    outside = await _predict(client, model_ids["b"], key)
    unknown = await _predict(client, 999_999, key)
    assert outside.status_code == unknown.status_code == 404
    assert outside.json()["error"] == unknown.json()["error"] == "ModelNotFoundError"
    assert outside.json()["details"] == {"model_id": model_ids["b"]}


async def test_expired_key_is_401(
    app: FastAPI, client: httpx.AsyncClient, model_ids: dict[str, int]
) -> None:
    state = state_of(app)
    async with state.sessionmaker() as session, session.begin():
        _, token = await create_key(
            session,
            state.settings.secret_key.get_secret_value(),
            scopes=["predict"],
            expires_at=datetime.now(UTC) - timedelta(seconds=1),
        )
    response = await _predict(client, model_ids["a"], token)
    assert response.status_code == 401 and "expired" in response.json()["message"]


async def test_key_management_shows_plaintext_once_and_tracks_use(
    app: FastAPI, client: httpx.AsyncClient, admin_key: str, model_ids: dict[str, int]
) -> None:
    headers = {"X-API-Key": admin_key}
    created = await client.post(
        "/api/v1/keys", json={"name": "svc", "scopes": ["predict"], "rate_limit": UNLIMITED},
        headers=headers,
    )  # fmt: skip
    assert created.status_code == 201, created.text
    token = created.json()["key"]
    assert (await _predict(client, model_ids["a"], token)).status_code == 200
    await state_of(app).verifier.drain()  # last_used_at is written off the request path
    listed = (await client.get("/api/v1/keys", headers=headers)).json()
    entry = next(k for k in listed if k["id"] == created.json()["id"])
    assert "key" not in entry and entry["last_used_at"] is not None
    async with state_of(app).sessionmaker() as session:
        row = await session.scalar(select(ApiKey).where(ApiKey.id == entry["id"]))
        assert row is not None and token not in row.token_hash and len(row.token_hash) == 64


async def test_revocation_reaches_another_replica_before_its_cache_expires(
    app: FastAPI,
    settings: Settings,
    client: httpx.AsyncClient,
    admin_key: str,
    model_ids: dict[str, int],
) -> None:
    """Replica B caches the key (30 s TTL); replica A revokes; B refuses at once."""
    token = await make_key(app, ["predict"])
    replica_b = create_app(settings.model_copy(update={"key_cache_ttl_s": 300.0}), migrate=False)
    async with replica_b.router.lifespan_context(replica_b):
        state_b = state_of(replica_b)
        await asyncio.wait_for(state_b.events.subscribed.wait(), 10)
        transport = httpx.ASGITransport(app=replica_b)
        async with httpx.AsyncClient(transport=transport, base_url="http://b") as client_b:
            assert (await _predict(client_b, model_ids["a"], token)).status_code == 200
            key_id = next(
                k["id"]
                for k in (await client.get("/api/v1/keys", headers={"X-API-Key": admin_key})).json()
                if token.startswith(k["display_prefix"]) and k["revoked_at"] is None
            )
            assert key_id in state_b.verifier
            revoked = await client.delete(
                f"/api/v1/keys/{key_id}", headers={"X-API-Key": admin_key}
            )
            assert revoked.status_code == 200
            for _ in range(100):  # the event crosses Redis in milliseconds
                if key_id not in state_b.verifier:
                    break
                await asyncio.sleep(0.02)
            response = await _predict(client_b, model_ids["a"], token)
            assert response.status_code == 401
            assert "revoked" in response.json()["message"]


async def test_no_verification_is_cached_while_revocations_cannot_arrive(
    app: FastAPI, settings: Settings
) -> None:
    token = await make_key(app, ["predict"])
    listening = False
    verifier = KeyVerifier(
        settings.secret_key.get_secret_value(), 300.0, events_current=lambda: listening
    )
    principal = await verifier.verify(state_of(app).sessionmaker, token)
    assert principal.key_id not in verifier  # a revocation elsewhere would go unseen
    listening = True
    await verifier.verify(state_of(app).sessionmaker, token)
    assert principal.key_id in verifier
    await verifier.drain()


@pytest.mark.parametrize("path", ["/api/v1/keys", "/api/v1/projects"])
async def test_management_needs_its_scope(
    app: FastAPI, client: httpx.AsyncClient, path: str
) -> None:
    predict_only = await make_key(app, ["predict"])
    response = await client.get(path, headers={"X-API-Key": predict_only})
    assert response.status_code == 403
