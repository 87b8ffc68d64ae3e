"""Seed the demo: project "demo" with slots Control (ials) / Variant A (item_knn), 50/50.

Called by `make run` after the demo models are exported. Idempotent: an existing
project, model or slot is reused (slot weights reset to 50/50). Plaintext keys
cannot be recovered, so each run issues a fresh predict key and admin key and
revokes the ones earlier runs issued: only the keys in the current demo.env work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.core.settings import Settings
from control_plane.db import upgrade
from control_plane.db.engine import create_engine, create_sessionmaker
from control_plane.db.models import DeploymentSlot
from control_plane.events.bus import EventBus, take_pending
from control_plane.events.schemas import BaseEvent
from control_plane.keys.service import create_key, list_keys, revoke_key
from control_plane.projects.service import create_project, find_project
from control_plane.registry.service import register_model
from control_plane.routing.repository import project_slots

DEMO_PROJECT = "demo"
# slot name -> key in DemoModels.recommenders
DEMO_SLOTS = {"Control": "ials", "Variant A": "item_knn"}
# The demo's keys are known by these names (every earlier run used them too).
DEMO_PREDICT_KEY_NAME = "demo predict"
DEMO_ADMIN_KEY_NAME = "demo admin"


class DemoRecommenders(Protocol):
    """What seeding needs from conch_embedded.demo.models.DemoModels."""

    @property
    def recommenders(self) -> Mapping[str, str]: ...


@dataclass(frozen=True)
class DemoSeed:
    project_id: int
    model_ids: dict[str, int]  # "ials" / "item_knn" -> registered model id
    slot_ids: dict[str, int]  # slot name -> id
    predict_key: str
    admin_key: str


async def seed_demo(settings: Settings, demo_models: DemoRecommenders) -> DemoSeed:
    await asyncio.to_thread(upgrade, settings.database_url)
    engine = create_engine(settings.database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            async with session.begin():
                seeded = await _seed(session, settings, demo_models)
            # After the commit, as a request's session does: replicas drop revoked keys.
            await _publish(settings, take_pending(session))
            return seeded
    finally:
        await engine.dispose()


async def _publish(settings: Settings, events: list[BaseEvent]) -> None:
    """Send the events to the replicas over Redis. A lost event is logged by the bus;
    replicas that missed events drop their cached keys when they resubscribe."""
    url = settings.events_redis_url
    if not events or url is None:
        return
    redis = Redis.from_url(url, socket_connect_timeout=settings.events_connect_timeout_s)
    try:
        bus = EventBus(
            redis,
            settings.model_events_channel,
            publish_timeout_s=settings.events_publish_timeout_s,
        )
        for event in events:
            await bus.publish(event)
    finally:
        await redis.aclose()


async def _revoke_earlier_demo_keys(session: AsyncSession) -> None:
    demo_names = {DEMO_PREDICT_KEY_NAME, DEMO_ADMIN_KEY_NAME}
    for key in await list_keys(session):
        if key.name in demo_names and key.revoked_at is None:
            await revoke_key(session, key.id)


async def _seed(
    session: AsyncSession, settings: Settings, demo_models: DemoRecommenders
) -> DemoSeed:
    model_ids = {}
    for label in DEMO_SLOTS.values():
        model = await register_model(
            session, settings.model_repository, demo_models.recommenders[label]
        )
        model_ids[label] = model.id
    project = await find_project(session, DEMO_PROJECT) or await create_project(
        session, DEMO_PROJECT
    )
    existing = {slot.name: slot for slot in await project_slots(session, project.id)}
    slot_ids = {}
    for index, (name, label) in enumerate(DEMO_SLOTS.items()):
        slot = existing.get(name)
        if slot is None:
            slot = DeploymentSlot(project_id=project.id, name=name, model_id=model_ids[label])
            session.add(slot)
        slot.model_id, slot.weight, slot.active = model_ids[label], 50, True
        slot.is_control = index == 0
        await session.flush()
        slot_ids[name] = slot.id
    await _revoke_earlier_demo_keys(session)
    secret = settings.secret_key.get_secret_value()
    _, predict_key = await create_key(
        session, secret, scopes=["predict"], project_id=project.id, name=DEMO_PREDICT_KEY_NAME
    )
    _, admin_key = await create_key(session, secret, scopes=["admin"], name=DEMO_ADMIN_KEY_NAME)
    return DemoSeed(project.id, model_ids, slot_ids, predict_key, admin_key)
