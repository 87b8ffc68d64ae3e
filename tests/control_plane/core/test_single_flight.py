"""Concurrent misses of one cache entry cost one load: the SingleFlight itself, and
the three caches on the request path (keys, model handles, project routes) counted
in SQL statements against the real database."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from control_plane.core.settings import Settings
from control_plane.core.single_flight import SingleFlight
from control_plane.keys.verifier import KeyVerifier
from control_plane.model_core.catalog import ModelCatalog
from control_plane.routing.cache import RoutingCache
from tests.control_plane.conftest import make_key, make_project, state_of

HERD = 32


async def test_callers_of_one_key_share_one_load_and_its_answer() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    loads: list[str] = []
    release = asyncio.Event()

    def loader(key: str) -> Callable[[], Coroutine[Any, Any, str]]:
        async def load() -> str:
            loads.append(key)
            await release.wait()
            return f"value of {key}"

        return load

    same = [asyncio.create_task(flights.load("a", loader("a"))) for _ in range(HERD)]
    other = asyncio.create_task(flights.load("b", loader("b")))
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*same) == ["value of a"] * HERD
    assert await other == "value of b"
    assert sorted(loads) == ["a", "b"] and len(flights) == 0


async def test_a_cancelled_caller_leaves_the_load_to_the_others() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    release = asyncio.Event()

    async def load() -> str:
        await release.wait()
        return "done"

    first = asyncio.create_task(flights.load("k", load))
    second = asyncio.create_task(flights.load("k", load))
    await asyncio.sleep(0)
    first.cancel()
    release.set()
    assert await second == "done"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_a_failure_reaches_every_caller_and_the_next_load_starts_afresh() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    attempts = 0

    async def load() -> str:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0)
        if attempts == 1:
            raise LookupError("first try fails")
        return "second"

    outcomes = await asyncio.gather(
        *(flights.load("k", load) for _ in range(4)), return_exceptions=True
    )
    assert all(isinstance(o, LookupError) for o in outcomes)
    assert await flights.load("k", load) == "second" and attempts == 2


async def test_after_detach_a_new_caller_does_not_join_the_older_load() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    release = asyncio.Event()
    answers = iter(["before the event", "after the event"])

    async def load() -> str:
        answer = next(answers)
        await release.wait()
        return answer

    early = asyncio.create_task(flights.load("k", load))
    await asyncio.sleep(0)
    flights.detach("k")  # e.g. the key was revoked meanwhile
    late = asyncio.create_task(flights.load("k", load))
    await asyncio.sleep(0)
    release.set()
    assert (await early, await late) == ("before the event", "after the event")


@contextmanager
def statements(app: FastAPI) -> Iterator[list[str]]:
    seen: list[str] = []
    engine = state_of(app).engine.sync_engine

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def test_a_herd_of_cold_key_verifications_reads_sql_once(
    app: FastAPI, settings: Settings
) -> None:
    token = await make_key(app, ["predict"])
    verifier = KeyVerifier(settings.secret_key.get_secret_value(), 300.0)
    sessionmaker = state_of(app).sessionmaker
    with statements(app) as seen:
        principals = await asyncio.gather(
            *(verifier.verify(sessionmaker, token) for _ in range(HERD))
        )
    assert len({p.key_id for p in principals}) == 1
    assert (
        len([s for s in seen if "api_keys" in s and s.lstrip().upper().startswith("SELECT")]) == 1
    )
    await verifier.drain()


async def test_a_herd_of_cold_model_lookups_reads_sql_once(
    app: FastAPI, model_ids: dict[str, int]
) -> None:
    catalog = ModelCatalog(state_of(app).models.manifests)
    sessionmaker = state_of(app).sessionmaker
    model_id = model_ids["a"]
    with statements(app) as seen:
        handles = await asyncio.gather(*(catalog.get(sessionmaker, model_id) for _ in range(HERD)))
    assert len({id(h) for h in handles}) == 1
    assert len([s for s in seen if "FROM models" in s]) == 1


async def test_a_herd_of_cold_project_routes_reads_sql_once(
    app: FastAPI, client: httpx.AsyncClient, admin_key: str, model_ids: dict[str, int]
) -> None:
    project_id = (await make_project(client, admin_key, [("a", model_ids["a"], 100)])).id
    cache = RoutingCache()
    sessionmaker = state_of(app).sessionmaker
    with statements(app) as seen:
        routes = await asyncio.gather(
            *(cache.routes(sessionmaker, project_id) for _ in range(HERD))
        )
    assert {r.project_id for r in routes} == {project_id}
    assert len([s for s in seen if "FROM projects" in s]) == 1
