"""The per-replica routing cache never keeps what a load read before an invalidation."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from control_plane.routing.cache import RoutingCache
from tests.control_plane.conftest import make_project, state_of


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
