"""Record conversion events (deduplicated) and compute per-slot A/B results."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

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
from control_plane.routing.repository import project_slots
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


Metric = Literal["click", "purchase"]


@dataclass(frozen=True)
class SlotCounts:
    impressions: int = 0
    clicks: int = 0
    purchases: int = 0

    def successes(self, metric: Metric) -> int:
        return self.clicks if metric == "click" else self.purchases

    def problem(self) -> str | None:
        """Why these counts are not proportions (an event without its impression), or None."""
        excess = [
            f"{name} ({value}) exceed impressions ({self.impressions})"
            for name, value in (("clicks", self.clicks), ("purchases", self.purchases))
            if value > self.impressions
        ]
        return "; ".join(excess) or None

    def rate(self, metric: Metric) -> float | None:
        return None if self.problem() else stats.rate(self.successes(metric), self.impressions)


def _not_tested_reason(
    variant: SlotCounts, control: SlotCounts, min_impressions: int
) -> str | None:
    if variant.problem():
        return "this slot's counts are invalid"
    if control.problem():
        return "the control's counts are invalid"
    for who, counts in (("this slot", variant), ("the control", control)):
        if counts.impressions < min_impressions:
            return (
                f"{who} has {counts.impressions} impressions, "
                f"fewer than min_impressions ({min_impressions})"
            )
    return None


def _interval(low: float | None, high: float | None) -> tuple[float, float] | None:
    return (low, high) if low is not None and high is not None else None


def _compare(
    variant: SlotCounts, control: SlotCounts, metric: Metric, alpha: float, min_impressions: int
) -> tuple[ComparisonOut, tuple[float, float] | None]:
    """The comparison before Holm, and its raw (fixed, always-valid) p-values if tested."""
    variant_rate, control_rate = variant.rate(metric), control.rate(metric)
    described = ComparisonOut(
        tested=False,
        not_tested_reason=_not_tested_reason(variant, control, min_impressions),
        difference=(
            variant_rate - control_rate
            if variant_rate is not None and control_rate is not None
            else None
        ),
        lift=stats.lift(variant_rate, control_rate),
        z=None,
        p_value=None,
        ci_95=None,
        significant=False,
    )
    if described.not_tested_reason is not None:
        return described, None
    counts = (
        variant.successes(metric), variant.impressions,
        control.successes(metric), control.impressions,
    )  # fmt: skip
    fixed = stats.two_proportion_z_test(*counts)
    sequential = stats.always_valid_test(*counts, alpha=alpha)
    if fixed.p_value is None or sequential.p_value is None:
        described.not_tested_reason = "no variation: both rates are 0, or both are 1"
        return described, None
    tested = described.model_copy(
        update={
            "tested": True,
            "z": fixed.z,
            "p_value": fixed.p_value,
            "ci_95": _interval(fixed.ci_low, fixed.ci_high),
            "always_valid_p_value": sequential.p_value,
            "confidence_sequence": _interval(sequential.cs_low, sequential.cs_high),
        }
    )
    return tested, (fixed.p_value, sequential.p_value)


def _against_control(
    variants: Sequence[SlotCounts],
    control: SlotCounts,
    metric: Metric,
    alpha: float,
    min_impressions: int,
) -> list[ComparisonOut]:
    """One comparison per variant; Holm over the variants that were tested (one family)."""
    drafts = [_compare(v, control, metric, alpha, min_impressions) for v in variants]
    tested = [(comparison, raw) for comparison, raw in drafts if raw is not None]
    fixed = stats.holm([raw[0] for _, raw in tested])
    sequential = stats.holm([raw[1] for _, raw in tested])
    for (comparison, _), p_fixed, p_sequential in zip(tested, fixed, sequential, strict=True):
        comparison.p_value_adjusted = p_fixed
        comparison.significant = p_fixed < alpha
        comparison.always_valid_p_value_adjusted = p_sequential
        comparison.always_valid_significant = p_sequential < alpha
    return [comparison for comparison, _ in drafts]


def summarize(
    project_id: int,
    slots: Sequence[DeploymentSlot],
    counts: Mapping[int, SlotCounts],
    *,
    alpha: float = 0.05,
    min_impressions: int = 100,
) -> ABResults:
    """Per-slot results and the winner, from the counts alone (no I/O)."""
    # The flagged control, else the oldest slot.
    control = next((s for s in slots if s.is_control), slots[0] if slots else None)
    results: list[SlotResult] = []
    for slot in slots:
        slot_counts = counts.get(slot.id, SlotCounts())
        problem = slot_counts.problem()
        results.append(
            SlotResult(
                slot_id=slot.id,
                slot_name=slot.name,
                model_id=slot.model_id,
                weight=slot.weight,
                active=slot.active,
                is_control=control is not None and slot.id == control.id,
                impressions=slot_counts.impressions,
                clicks=slot_counts.clicks,
                purchases=slot_counts.purchases,
                ctr=slot_counts.rate("click"),
                conversion_rate=slot_counts.rate("purchase"),
                counts_valid=problem is None,
                invalid_reason=problem,
                sufficient_sample=slot_counts.impressions >= min_impressions,
            )
        )
    if control is not None:
        control_counts = counts.get(control.id, SlotCounts())
        variants = [r for r in results if not r.is_control]
        variant_counts = [counts.get(r.slot_id, SlotCounts()) for r in variants]
        ctr = _against_control(variant_counts, control_counts, "click", alpha, min_impressions)
        conversion = _against_control(
            variant_counts, control_counts, "purchase", alpha, min_impressions
        )
        for result, ctr_comparison, conversion_comparison in zip(
            variants, ctr, conversion, strict=True
        ):
            result.ctr_vs_control = ctr_comparison
            result.conversion_vs_control = conversion_comparison
    winner = max(
        (r for r in results if _beats_control(r.ctr_vs_control)),
        key=lambda r: r.ctr or 0.0,
        default=None,
    )
    return ABResults(
        project_id=project_id,
        control_slot_id=control.id if control else None,
        alpha=alpha,
        min_impressions=min_impressions,
        slots=results,
        winner_slot_id=winner.slot_id if winner else None,
    )


def _beats_control(comparison: ComparisonOut | None) -> bool:
    """The winner rule: CTR above the control's by the Holm-adjusted always-valid test."""
    return (
        comparison is not None
        and comparison.always_valid_significant
        and comparison.difference is not None
        and comparison.difference > 0
    )


async def ab_results(
    session: AsyncSession, project_id: int, *, alpha: float = 0.05, min_impressions: int = 100
) -> ABResults:
    slots = await project_slots(session, project_id)
    by_type: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    query = (
        select(ConversionEvent.slot_id, ConversionEvent.event_type, func.count())
        .where(ConversionEvent.project_id == project_id)
        .group_by(ConversionEvent.slot_id, ConversionEvent.event_type)
    )
    for slot_id, event_type, count in (await session.execute(query)).tuples():
        by_type[slot_id][event_type] = count
    counts = {
        slot_id: SlotCounts(c["impression"], c["click"], c["purchase"])
        for slot_id, c in by_type.items()
    }
    return summarize(project_id, slots, counts, alpha=alpha, min_impressions=min_impressions)


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
