"""Conversion events counted per slot, event type and time window, by index ranges.

Each count is one range of the index (project_id, slot_id, event_type, created_at)
(migration 0005): the query lists the (project, slot, type) triples and the windows
as two small constant tables and counts each pair with a correlated subquery, so the
database walks only the index entries inside the windows and never sorts or groups
the events themselves. With 100k events a GROUP BY over the day took SQLite 70 ms;
this takes a few (docs/console/README.md has the measurements).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    CTE,
    Column,
    CompoundSelect,
    DateTime,
    Integer,
    Select,
    String,
    bindparam,
    func,
    select,
    true,
    union_all,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.selectable import TableValuedAlias

from control_plane.db.base import UTCDateTime
from control_plane.db.models import ConversionEvent

EVENT_TYPES = ("impression", "click", "purchase")
# Far enough to hold every event ever written, near enough for every backend's dates.
_END_OF_TIME = datetime.fromisoformat("9999-01-01T00:00:00+00:00")

Triple = tuple[int, int, str]  # project id, slot id, event type
Window = tuple[datetime, datetime | None]  # [start, end); None: open ended


def _table(name: str, rows: int, columns: Sequence[Column[Any]]) -> CTE:
    """A constant table of `rows` rows as SELECT ... UNION ALL of typed parameters
    (`<name>_<row>_<column>`): unlike VALUES, a statement SQLAlchemy compiles once."""
    selects = [
        select(*(bindparam(f"{name}_{r}_{c.name}", type_=c.type).label(c.name) for c in columns))
        for r in range(rows)
    ]
    table: Select[Any] | CompoundSelect[Any] = (
        selects[0] if len(selects) == 1 else union_all(*selects)
    )
    return table.cte(name)


_CELLS: tuple[Column[Any], ...] = (
    Column("project_id", Integer),
    Column("slot_id", Integer),
    Column("event_type", String),
)
_SPANS: tuple[Column[Any], ...] = (
    Column("span", Integer),
    Column("lo", UTCDateTime()),
    Column("hi", UTCDateTime()),
)


def _unnest(name: str, columns: Sequence[Column[Any]]) -> TableValuedAlias:
    """PostgreSQL: a constant table as unnest() of one array parameter per column
    (`<name>_<column>`): two parameters per column however many rows, and no
    UNION ALL of 150 branches to plan (19 ms of planning for the A/B totals)."""
    arrays = [
        bindparam(f"{name}_{c.name}", type_=postgresql.ARRAY(_ARRAY_TYPES[c.name])) for c in columns
    ]
    return func.unnest(*arrays).table_valued(*(c.name for c in columns)).render_derived(name)


_ARRAY_TYPES: dict[str, Any] = {
    "project_id": Integer(),
    "slot_id": Integer(),
    "event_type": String(),
    "span": Integer(),
    "lo": DateTime(timezone=True),
    "hi": DateTime(timezone=True),
}


@lru_cache(maxsize=128)
def _statement(cell_count: int, span_count: int, arrays: bool) -> Select[Any]:
    """Built once per shape: the SQL text and its compiled form are then reused."""
    if arrays:
        cells: CTE | TableValuedAlias = _unnest("cells", _CELLS)
        spans: CTE | TableValuedAlias = _unnest("spans", _SPANS)
    else:
        cells = _table("cells", cell_count, _CELLS)
        spans = _table("spans", span_count, _SPANS)
    event = ConversionEvent
    count = (
        select(func.count())
        .where(
            event.project_id == cells.c.project_id,
            event.slot_id == cells.c.slot_id,
            event.event_type == cells.c.event_type,
            event.created_at >= spans.c.lo,
            event.created_at < spans.c.hi,
        )
        .scalar_subquery()
    )
    return select(cells.c.slot_id, cells.c.event_type, spans.c.span, count).select_from(
        cells.join(spans, true())
    )


def _parameters(
    name: str, rows: Sequence[Sequence[object]], columns: Sequence[Column[Any]]
) -> dict[str, object]:
    return {
        f"{name}_{r}_{c.name}": value
        for r, row in enumerate(rows)
        for c, value in zip(columns, row, strict=True)
    }


def _arrays(
    name: str, rows: Sequence[Sequence[object]], columns: Sequence[Column[Any]]
) -> dict[str, list[object]]:
    return {f"{name}_{c.name}": [row[i] for row in rows] for i, c in enumerate(columns)}


async def count_events(
    session: AsyncSession, triples: Sequence[Triple], windows: Sequence[Window]
) -> dict[tuple[int, str, int], int]:
    """(slot id, event type, window index) -> how many events fall in it."""
    if not triples or not windows:
        return {}
    spans = [(i, lo, hi or _END_OF_TIME) for i, (lo, hi) in enumerate(windows)]
    parameters: dict[str, object]
    if session.get_bind().dialect.name == "postgresql":
        parameters = {**_arrays("cells", triples, _CELLS), **_arrays("spans", spans, _SPANS)}
        statement = _statement(0, 0, True)
    else:
        parameters = {
            **_parameters("cells", triples, _CELLS),
            **_parameters("spans", spans, _SPANS),
        }
        statement = _statement(len(triples), len(windows), False)
    rows = await session.execute(statement, parameters)
    # Columns: slot id, event type, window index, count.
    return {(row[0], row[1], row[2]): row[3] for row in rows}


def day_windows(today: datetime, days: int) -> list[Window]:
    """The last `days` UTC days, oldest first, today (so far) last."""
    start = today.replace(hour=0, minute=0, second=0, microsecond=0)
    return [
        (start - timedelta(days=back), start - timedelta(days=back - 1))
        for back in range(days - 1, -1, -1)
    ]
