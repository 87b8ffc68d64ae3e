"""What the console's project pages show, read through the domain services.

Slots, weights and the policy come from SQL (projects/, routing/); the A/B figures
from `abtest.service.summarize`, which makes the very numbers
`/api/v1/projects/{id}/ab_results` answers, of counts taken as ranges of the events
index (event_counts.py); the console adds only what is drawn: each rate's 95%
interval (Wilson), the share of traffic and the daily trend.

**Traffic share** is measured from the A/B events, not from the process counters
(`core/metrics.py` counts nothing per slot, and only for its own replica): a slot's
share of the project's impressions over the last 24 hours, as clients report them
through the events API, so it covers every replica.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.abtest import service as abtest
from control_plane.abtest.schemas import ABResults, SlotResult
from control_plane.abtest.stats import Z_95
from control_plane.console.event_counts import EVENT_TYPES, count_events, day_windows
from control_plane.core.settings import Settings
from control_plane.db.models import DeploymentSlot, Model, Project
from control_plane.keys.schemas import Principal
from control_plane.projects.service import list_projects
from control_plane.routing.repository import get_project, project_slots

RECENT = timedelta(hours=24)
_BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)  # before any event: the all-time window


def wilson(successes: int, trials: int) -> tuple[float, float] | None:
    """95% Wilson score interval of a proportion: unlike the Wald interval it stays
    inside [0, 1] and keeps its coverage at small counts and rates near 0."""
    if trials <= 0 or not 0 <= successes <= trials:
        return None
    rate, z2 = successes / trials, Z_95**2
    denominator = 1 + z2 / trials
    centre = (rate + z2 / (2 * trials)) / denominator
    half = Z_95 * math.sqrt(rate * (1 - rate) / trials + z2 / (4 * trials**2)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def policy_of(project: Project) -> str:
    """How the project's requests pick a slot (routing/selection.py)."""
    return "sticky: hash of salt and user" if project.sticky else "weighted random"


def weight_shares(slots: Sequence[DeploymentSlot | SlotResult]) -> dict[int, float | None]:
    """Each slot's configured chance: its weight over the active slots' total."""
    total = sum(s.weight for s in slots if s.active)
    return {
        (s.id if isinstance(s, DeploymentSlot) else s.slot_id): (
            s.weight / total if s.active and total else None
        )
        for s in slots
    }


@dataclass(frozen=True)
class SlotRow:
    slot: DeploymentSlot
    model_name: str
    weight_share: float | None
    traffic_share: float | None  # of the project's impressions, last 24 h


@dataclass(frozen=True)
class ProjectRow:
    project: Project
    policy: str
    slots: list[SlotRow]
    impressions_24h: int


async def _model_names(session: AsyncSession, model_ids: set[int]) -> dict[int, str]:
    if not model_ids:
        return {}
    rows = await session.execute(select(Model.id, Model.name).where(Model.id.in_(model_ids)))
    return {model_id: name for model_id, name in rows}


async def _recent_impressions(
    session: AsyncSession, slots: Sequence[tuple[int, int]], now: datetime
) -> dict[int, int]:
    """slot id -> impressions over the last 24 h, for (project id, slot id) pairs."""
    triples = [(project_id, slot_id, "impression") for project_id, slot_id in slots]
    counts = await count_events(session, triples, [(now - RECENT, None)])
    return {slot_id: n for (slot_id, _, _), n in counts.items()}


def _shares(counts: dict[int, int], slot_ids: Sequence[int]) -> dict[int, float | None]:
    total = sum(counts.get(s, 0) for s in slot_ids)
    return {s: (counts.get(s, 0) / total if total else None) for s in slot_ids}


async def projects_overview(
    session: AsyncSession, principal: Principal, now: datetime
) -> list[ProjectRow]:
    """Every project the key may see, with its slots and their shares."""
    projects = [p for p in await list_projects(session) if principal.may_access_project(p.id)]
    by_project: dict[int, list[DeploymentSlot]] = {p.id: [] for p in projects}
    if by_project:
        query = select(DeploymentSlot).where(DeploymentSlot.project_id.in_(by_project))
        for slot in await session.scalars(query.order_by(DeploymentSlot.id)):
            by_project[slot.project_id].append(slot)
    every_slot = [s for slots in by_project.values() for s in slots]
    names = await _model_names(session, {s.model_id for s in every_slot})
    recent = await _recent_impressions(session, [(s.project_id, s.id) for s in every_slot], now)
    rows = []
    for project in projects:
        slots = by_project[project.id]
        weights = weight_shares(slots)
        traffic = _shares(recent, [s.id for s in slots])
        rows.append(
            ProjectRow(
                project=project,
                policy=policy_of(project),
                slots=[
                    SlotRow(s, names.get(s.model_id, "?"), weights[s.id], traffic[s.id])
                    for s in slots
                ],
                impressions_24h=sum(recent.get(s.id, 0) for s in slots),
            )
        )
    return rows


@dataclass(frozen=True)
class SlotAB:
    result: SlotResult
    model_name: str
    weight_share: float | None
    traffic_share: float | None  # last 24 h
    ctr_interval: tuple[float, float] | None
    conversion_interval: tuple[float, float] | None


@dataclass(frozen=True)
class Trend:
    days: list[str]  # ISO dates, oldest first
    ctr: dict[int, list[float | None]]  # slot id -> the day's rate (None: no impressions)
    conversion: dict[int, list[float | None]]


@dataclass(frozen=True)
class ProjectAB:
    project: Project
    policy: str
    results: ABResults
    slots: list[SlotAB]
    trend: Trend
    trend_slot_ids: list[int]  # the slots drawn: the control and the busiest

    @property
    def winner(self) -> SlotAB | None:
        return next(
            (s for s in self.slots if s.result.slot_id == self.results.winner_slot_id), None
        )


def _daily_rate(successes: int, impressions: int) -> float | None:
    # A day's clicks may answer the previous day's impressions: no rate above 1.
    return successes / impressions if impressions and successes <= impressions else None


async def _trend(
    session: AsyncSession, project_id: int, slot_ids: Sequence[int], days: int, now: datetime
) -> Trend:
    windows = day_windows(now, days)
    triples = [(project_id, s, kind) for s in slot_ids for kind in EVENT_TYPES]
    counts = await count_events(session, triples, windows)

    def series(slot_id: int, kind: str) -> list[float | None]:
        return [
            _daily_rate(
                counts.get((slot_id, kind, i), 0), counts.get((slot_id, "impression", i), 0)
            )
            for i in range(len(windows))
        ]

    return Trend(
        days=[start.date().isoformat() for start, _ in windows],
        ctr={s: series(s, "click") for s in slot_ids},
        conversion={s: series(s, "purchase") for s in slot_ids},
    )


def _drawn(results: ABResults, limit: int) -> list[int]:
    """The control first, then the slots with the most impressions, up to `limit`."""
    ranked = sorted(results.slots, key=lambda r: (not r.is_control, -r.impressions, r.slot_id))
    return [r.slot_id for r in ranked[:limit]]


async def project_ab(
    session: AsyncSession,
    project_id: int,
    settings: Settings,
    now: datetime,
    *,
    alpha: float = 0.05,
    min_impressions: int = 100,
    with_trend: bool = True,
) -> ProjectAB:
    project = await get_project(session, project_id)
    slots = await project_slots(session, project_id)
    # The totals and the last day's impressions in one statement of index ranges:
    # a GROUP BY over the project's events walks all of them (on PostgreSQL a sequential
    # scan and hash, 60-80 ms for 100k events; docs/console/README.md).
    cells = [(project_id, s.id, kind) for s in slots for kind in EVENT_TYPES]
    counted = await count_events(session, cells, [(_BEGINNING, None), (now - RECENT, None)])
    totals = {
        s.id: abtest.SlotCounts(
            impressions=counted.get((s.id, "impression", 0), 0),
            clicks=counted.get((s.id, "click", 0), 0),
            purchases=counted.get((s.id, "purchase", 0), 0),
        )
        for s in slots
    }
    # The numbers of /api/v1/projects/{id}/ab_results: its own summary of the same counts.
    results = abtest.summarize(
        project_id, slots, totals, alpha=alpha, min_impressions=min_impressions
    )
    names = await _model_names(session, {r.model_id for r in results.slots})
    slot_ids = [r.slot_id for r in results.slots]
    recent = {s: counted.get((s, "impression", 1), 0) for s in slot_ids}
    traffic, weights = _shares(recent, slot_ids), weight_shares(results.slots)
    drawn = _drawn(results, settings.console_trend_max_slots)
    return ProjectAB(
        project=project,
        policy=policy_of(project),
        results=results,
        slots=[
            SlotAB(
                result=r,
                model_name=names.get(r.model_id, "?"),
                weight_share=weights[r.slot_id],
                traffic_share=traffic[r.slot_id],
                ctr_interval=wilson(r.clicks, r.impressions) if r.counts_valid else None,
                conversion_interval=(
                    wilson(r.purchases, r.impressions) if r.counts_valid else None
                ),
            )
            for r in results.slots
        ],
        trend=(
            await _trend(session, project_id, drawn, settings.console_trend_days, now)
            if with_trend
            else Trend(days=[], ctr={}, conversion={})
        ),
        trend_slot_ids=drawn if with_trend else [],
    )
