"""Record conversion events (deduplicated) and compute per-slot A/B results."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.abtest import stats
from control_plane.abtest.schemas import (
    ABResults,
    ComparisonOut,
    ConversionEventIn,
    SlotResult,
)
from control_plane.core.errors import BadRequestError
from control_plane.db.base import utcnow
from control_plane.db.models import ConversionEvent, DeploymentSlot
from control_plane.slots.repository import project_slots
from control_plane.slots.service import slot_changed


async def record_events(session: AsyncSession, events: Sequence[ConversionEventIn]) -> int:
    """Insert, ignoring duplicates of the dedup key; returns how many were new."""
    slot_ids = {e.deployment_slot for e in events}
    rows = await session.execute(
        select(DeploymentSlot.id, DeploymentSlot.project_id).where(DeploymentSlot.id.in_(slot_ids))
    )
    slot_project = dict(rows.tuples().all())
    for event in events:
        if slot_project.get(event.deployment_slot) != event.project:
            raise BadRequestError(
                "deployment slot does not belong to project",
                project=event.project,
                deployment_slot=event.deployment_slot,
            )
    now = utcnow()
    values = [
        {
            "project_id": e.project,
            "slot_id": e.deployment_slot,
            "user_id": e.user_id,
            "item_id": e.item_id,
            "event_type": e.event_type,
            "recommendation_request_id": e.recommendation_request_id,
            "metadata_json": e.metadata_json,
            "created_at": now,
        }
        for e in events
    ]
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # ON CONFLICT DO NOTHING ... RETURNING: the same statement on SQLite and PostgreSQL,
    # returning only the rows it inserted (rowcount is -1 under some drivers).
    statement = (
        insert(ConversionEvent)
        .values(values)
        .on_conflict_do_nothing()
        .returning(ConversionEvent.id)
    )
    return len((await session.execute(statement)).all())


def _compare(
    successes: int, trials: int, control_successes: int, control_trials: int, alpha: float
) -> ComparisonOut:
    test = stats.two_proportion_z_test(successes, trials, control_successes, control_trials)
    ci = (
        (test.ci_low, test.ci_high)
        if test.ci_low is not None and test.ci_high is not None
        else None
    )
    return ComparisonOut(
        difference=test.difference,
        lift=stats.lift(
            stats.rate(successes, trials), stats.rate(control_successes, control_trials)
        ),
        z=test.z,
        p_value=test.p_value,
        ci_95=ci,
        significant=test.p_value is not None and test.p_value < alpha,
    )


async def ab_results(
    session: AsyncSession, project_id: int, *, alpha: float = 0.05, min_impressions: int = 100
) -> ABResults:
    slots = await project_slots(session, project_id)
    counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    query = (
        select(ConversionEvent.slot_id, ConversionEvent.event_type, func.count())
        .where(ConversionEvent.project_id == project_id)
        .group_by(ConversionEvent.slot_id, ConversionEvent.event_type)
    )
    for slot_id, event_type, count in (await session.execute(query)).tuples():
        counts[slot_id][event_type] = count
    # The flagged control, else the oldest slot.
    control = next((s for s in slots if s.is_control), slots[0] if slots else None)
    results: list[SlotResult] = []
    for slot in slots:
        n, clicks, purchases = (counts[slot.id][t] for t in ("impression", "click", "purchase"))
        result = SlotResult(
            slot_id=slot.id,
            slot_name=slot.name,
            model_id=slot.model_id,
            weight=slot.weight,
            active=slot.active,
            is_control=control is not None and slot.id == control.id,
            impressions=n,
            clicks=clicks,
            purchases=purchases,
            ctr=stats.rate(clicks, n),
            conversion_rate=stats.rate(purchases, n),
            sufficient_sample=n >= min_impressions,
        )
        if control is not None and slot.id != control.id:
            c = counts[control.id]
            result.ctr_vs_control = _compare(clicks, n, c["click"], c["impression"], alpha)
            result.conversion_vs_control = _compare(
                purchases, n, c["purchase"], c["impression"], alpha
            )
        results.append(result)
    control_ok = any(r.is_control and r.sufficient_sample for r in results)
    contenders = [
        r
        for r in results
        if control_ok
        and r.sufficient_sample
        and r.ctr_vs_control is not None
        and r.ctr_vs_control.significant
        and r.ctr_vs_control.difference > 0
    ]
    winner = max(contenders, key=lambda r: r.ctr, default=None)
    return ABResults(
        project_id=project_id,
        control_slot_id=control.id if control else None,
        alpha=alpha,
        min_impressions=min_impressions,
        slots=results,
        winner_slot_id=winner.slot_id if winner else None,
    )


async def promote(session: AsyncSession, project_id: int, slot_id: int) -> Sequence[DeploymentSlot]:
    """The chosen slot takes all traffic; the others are deactivated (one transaction)."""
    slots = await project_slots(session, project_id)
    if slot_id not in {s.id for s in slots}:
        raise BadRequestError(
            "deployment slot does not belong to project", project=project_id, slot_id=slot_id
        )
    for slot in slots:
        slot.active = slot.id == slot_id
        if slot.id == slot_id:
            slot.weight = 100
    await session.flush()
    for slot in slots:
        slot_changed(session, slot)
    return slots
