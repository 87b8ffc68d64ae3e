"""The per-replica routing cache never keeps what a load read before an invalidation,
and holds the models a project's keys may see."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
from fastapi import FastAPI

from control_plane.events.schemas import ModelTrained
from control_plane.routing.cache import RoutingCache
from tests.control_plane.conftest import make_project, state_of
from tests.control_plane.recommender_model import write_recommender


async def test_a_load_overlapping_an_invalidation_is_not_cached(
    app: FastAPI, client: httpx.AsyncClient, admin_key: str, model_ids: dict[str, int]
) -> None:
    project = await make_project(client, admin_key, [("Control", model_ids["a"], 1)])
    state = state_of(app)
    cache = RoutingCache()
    real = state.sessionmaker

    class SlowSessions:
        """Sessions that let an invalidation land while the slots are being read."""

        def __call__(self):  # type: ignore[no-untyped-def]
            cache.invalidate(project.id)  # a slot_changed event arriving mid-load
            return real()

    first = await cache.routes(SlowSessions(), project.id)  # type: ignore[arg-type]
    assert [s.model_id for s in first.slots] == [model_ids["a"]]
    assert project.id not in cache._entries  # not cached: it may predate the change
    await cache.routes(real, project.id)
    assert project.id in cache._entries  # an undisturbed load is cached


async def test_nothing_is_cached_while_events_cannot_arrive(
    app: FastAPI, client: httpx.AsyncClient, admin_key: str, model_ids: dict[str, int]
) -> None:
    project = await make_project(client, admin_key, [("Control", model_ids["a"], 1)])
    sessionmaker = state_of(app).sessionmaker
    listening = False
    cache = RoutingCache(events_current=lambda: listening)
    await cache.routes(sessionmaker, project.id)
    assert project.id not in cache._entries  # a slot change elsewhere would go unseen
    listening = True
    await cache.routes(sessionmaker, project.id)
    assert project.id in cache._entries


async def test_a_projects_view_holds_its_registered_and_its_slots_models(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin_key: str,
    model_ids: dict[str, int],
    model_repository: Path,
) -> None:
    project = await make_project(client, admin_key, [("Control", model_ids["a"], 1)])
    sessionmaker = state_of(app).sessionmaker
    cache = RoutingCache(ttl_s=300.0)
    assert (await cache.routes(sessionmaker, project.id)).model_ids == {model_ids["a"]}
    name = f"cptest_routing_{uuid.uuid4().hex[:8]}"
    write_recommender(model_repository, name, seed=41)
    registered = await client.post(
        "/api/v1/models",
        json={"triton_name": name, "project_id": project.id},
        headers={"X-API-Key": admin_key},
    )
    assert registered.status_code == 201, registered.text
    model_id = registered.json()["id"]
    # This cache hears no events: it keeps its entry for its TTL...
    assert (await cache.routes(sessionmaker, project.id)).model_ids == {model_ids["a"]}
    # ...until model_trained drops every entry (the event names no project).
    await cache.on_model_changed(ModelTrained(model_id=model_id, triton_name=name))
    assert not cache._entries
    assert (await cache.routes(sessionmaker, project.id)).model_ids == {model_ids["a"], model_id}
