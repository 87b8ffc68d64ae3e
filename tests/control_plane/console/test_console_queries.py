"""The A/B queries behind the console read ranges of the events index (migration 0005),
on SQLite and on PostgreSQL (whichever DATABASE_URL names), and count what the API counts.

Every statement the A/B page sends to `conversion_events` (the totals with the last
day's impressions, and the daily trend) is explained by the database that runs it:
SQLite must search `ix_conversion_events_slot_type_time` as a covering index,
PostgreSQL must scan it (index-only once vacuumed) and never the table itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.abtest import service as abtest
from control_plane.console.service import project_ab
from control_plane.core.settings import Settings
from control_plane.db.base import utcnow
from tests.control_plane.conftest import ProjectSetup, state_of

INDEX = "ix_conversion_events_slot_type_time"


async def _plan(connection: AsyncConnection, sql: str, params: Any) -> str:
    if connection.dialect.name == "sqlite":
        rows = await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", tuple(params))
        return " ".join(str(row[-1]) for row in rows)
    rows = await connection.exec_driver_sql(f"EXPLAIN {sql}", params)
    return "\n".join(str(row[0]) for row in rows)


def _searches_the_index(dialect: str, plan: str) -> None:
    if dialect == "sqlite":
        assert f"USING COVERING INDEX {INDEX}" in plan, plan
        assert "SCAN conversion_events" not in plan, plan
    else:
        assert f"Index Only Scan using {INDEX} on conversion_events" in plan, plan
        assert "Seq Scan on conversion_events" not in plan, plan


async def test_the_ab_page_counts_by_ranges_of_the_events_index(
    app: FastAPI, project: ProjectSetup
) -> None:
    state = state_of(app)
    settings: Settings = state.settings
    statements: list[tuple[str, Sequence[Any]]] = []

    def capture(_c: object, _cur: object, sql: str, params: Any, *_: object) -> None:
        if "conversion_events" in sql:
            statements.append((sql, params))

    event.listen(state.engine.sync_engine, "before_cursor_execute", capture)
    try:
        async with state.sessionmaker() as session:
            view = await project_ab(session, project.id, settings, utcnow())
            event.remove(state.engine.sync_engine, "before_cursor_execute", capture)
            api = await abtest.ab_results(session, project.id)
            assert len(statements) == 2  # the totals with the last day, and the trend
            connection = await session.connection()
            for sql, params in statements:
                _searches_the_index(connection.dialect.name, await _plan(connection, sql, params))
    finally:
        if event.contains(state.engine.sync_engine, "before_cursor_execute", capture):
            event.remove(state.engine.sync_engine, "before_cursor_execute", capture)
    # The same figures as /api/v1/projects/{id}/ab_results, from its own GROUP BY.
    assert view.results == api
    assert {s.slot_id: s.impressions for s in api.slots} == dict.fromkeys(
        project.slots.values(), 1000
    )
