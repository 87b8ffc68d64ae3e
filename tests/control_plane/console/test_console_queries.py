"""The A/B queries behind the console read ranges of the events index (migration 0005).

SQLite's plan is asserted (the test database unless DATABASE_URL names PostgreSQL,
whose planner rightly scans a table this small): the totals per slot and type, and
each windowed count, are searches of `ix_conversion_events_slot_type_time`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import event

from control_plane.abtest import service as abtest
from control_plane.console.event_counts import count_events, day_windows
from control_plane.db.base import utcnow
from tests.control_plane.conftest import ProjectSetup, state_of

INDEX = "ix_conversion_events_slot_type_time"


async def test_the_ab_counts_search_the_events_index(app: FastAPI, project: ProjectSetup) -> None:
    state = state_of(app)
    if state.engine.dialect.name != "sqlite":
        pytest.skip("the plan asserted is SQLite's")
    statements: list[tuple[str, Sequence[Any]]] = []

    def capture(_c: object, _cur: object, sql: str, params: Any, *_: object) -> None:
        if "conversion_events" in sql:
            statements.append((sql, params))

    event.listen(state.engine.sync_engine, "before_cursor_execute", capture)
    try:
        async with state.sessionmaker() as session:
            await abtest.ab_results(session, project.id)
            slots = list(project.slots.values())
            await count_events(
                session, [(project.id, s, "click") for s in slots], day_windows(utcnow(), 7)
            )
            event.remove(state.engine.sync_engine, "before_cursor_execute", capture)
            assert len(statements) == 2
            for sql, params in statements:
                connection = await session.connection()
                plan = await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", tuple(params))
                details = " ".join(str(row[-1]) for row in plan)
                assert f"USING COVERING INDEX {INDEX}" in details, details
                assert "SCAN conversion_events" not in details, details
    finally:
        if event.contains(state.engine.sync_engine, "before_cursor_execute", capture):
            event.remove(state.engine.sync_engine, "before_cursor_execute", capture)
