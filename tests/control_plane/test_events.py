"""Events after commit, the audit trail, and the rate-limit switch."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import select

from control_plane.app import create_app
from control_plane.core.settings import Settings
from control_plane.db.models import AuditLog
from control_plane.events.schemas import EventAdapter, ModelTrained
from tests.control_plane.conftest import make_key, state_of
from tests.control_plane.recommender_model import write_recommender


async def test_registering_a_model_publishes_model_trained_and_is_audited(
    app: FastAPI,
    settings: Settings,
    client: httpx.AsyncClient,
    admin_key: str,
    model_repository: Path,
) -> None:
    name = f"cptest_event_{uuid.uuid4().hex[:8]}"
    write_recommender(model_repository, name, seed=4)
    assert settings.events_redis_url is not None
    redis = Redis.from_url(settings.events_redis_url)
    try:
        async with redis.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(settings.model_events_channel)
            response = await client.post(
                "/api/v1/models", json={"triton_name": name}, headers={"X-API-Key": admin_key}
            )
            assert response.status_code == 201
            message = None
            for _ in range(50):
                message = await pubsub.get_message(timeout=0.1)
                if message is not None:
                    break
            assert message is not None
            event = EventAdapter.validate_json(message["data"])
            assert isinstance(event, ModelTrained)
            assert (event.model_id, event.triton_name, event.version) == (
                response.json()["id"], name, 1,
            )  # fmt: skip
    finally:
        await redis.aclose()
    async with state_of(app).sessionmaker() as session:
        entry = await session.scalar(
            select(AuditLog).where(
                AuditLog.action == "model.register", AuditLog.target_id == str(event.model_id)
            )
        )
        assert entry is not None and entry.details == {"triton_name": name}


async def test_rate_limit_switch_off_sends_no_limit_headers(
    app: FastAPI, settings: Settings, model_ids: dict[str, int]
) -> None:
    token = await make_key(app, ["predict"], rate_limit="1/minute")
    unlimited = create_app(settings.model_copy(update={"rate_limit_enabled": False}), migrate=False)
    async with unlimited.router.lifespan_context(unlimited):
        transport = httpx.ASGITransport(app=unlimited)
        async with httpx.AsyncClient(transport=transport, base_url="http://u") as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        f"/inference/predict/{model_ids['a']}",
                        json={"user_id": "u1"},
                        headers={"X-API-Key": token},
                    )
                    for _ in range(3)
                )
            )
    assert [r.status_code for r in responses] == [200] * 3
    assert "X-RateLimit-Limit" not in responses[0].headers


async def test_per_key_override_applies(
    app: FastAPI, client: httpx.AsyncClient, model_ids: dict[str, int]
) -> None:
    token = await make_key(app, ["predict"], rate_limit="2/minute")
    codes = []
    for _ in range(3):
        response = await client.post(
            f"/inference/predict/{model_ids['a']}",
            json={"user_id": "u1"},
            headers={"X-API-Key": token},
        )
        codes.append(response.status_code)
    assert codes == [200, 200, 429]
    assert response.headers["X-RateLimit-Limit"] == "2"
