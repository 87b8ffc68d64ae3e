"""GET /api/v1/keys/self/webhook-secret: any valid key reads its own, and only its own."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from control_plane.keys.webhooks import SIGNATURE_HEADER, sign, verify_signature, webhook_secret
from tests.control_plane.conftest import make_key, make_project
from tests.control_plane.secret_key import TEST_SECRET_KEY

PATH = "/api/v1/keys/self/webhook-secret"


async def _key_id(client: httpx.AsyncClient, admin_key: str, token: str) -> int:
    listed = (await client.get("/api/v1/keys", headers={"X-API-Key": admin_key})).json()
    ids: list[int] = [k["id"] for k in listed if token.startswith(k["display_prefix"])]
    assert len(ids) == 1
    return ids[0]


async def test_every_kind_of_key_reads_its_own_secret(
    app: FastAPI, client: httpx.AsyncClient, admin_key: str
) -> None:
    project = await make_project(client, admin_key, [])
    tokens = [
        *[await make_key(app, [scope]) for scope in ("predict", "read", "write", "admin")],
        await make_key(app, ["predict"], project_id=project.id),
    ]
    secrets = set()
    for token in tokens:
        response = await client.get(PATH, headers={"X-API-Key": token})
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        body = response.json()
        assert body["key_id"] == await _key_id(client, admin_key, token)
        assert body["signature_header"] == SIGNATURE_HEADER == "X-Conch-Signature"
        assert "HMAC-SHA256" in body["scheme"]
        secret = bytes.fromhex(body["webhook_secret"])
        assert secret == webhook_secret(TEST_SECRET_KEY.encode(), body["key_id"])
        # What a receiver does with it: check a callback signed for this key.
        payload = b'{"task_id": "t"}'
        assert verify_signature(secret, sign(secret, payload, 1_700_000_000), payload,
                                now=1_700_000_000)  # fmt: skip
        secrets.add(body["webhook_secret"])
    assert len(secrets) == len(tokens)


async def test_no_valid_key_reads_no_secret(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"X-API-Key": "conch_" + "A" * 38}, {"X-API-Key": "nonsense"}):
        response = await client.get(PATH, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"] == "AuthenticationError"
        assert "webhook_secret" not in response.text
