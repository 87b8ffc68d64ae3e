from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from control_plane.core.types import RequestBody, ResourceId

EventType = Literal["impression", "click", "purchase"]
MAX_EVENTS_PER_BATCH = 1000


class ConversionEventIn(RequestBody):
    project: ResourceId
    deployment_slot: ResourceId
    user_id: str = Field(min_length=1, max_length=200)
    item_id: str = Field(min_length=1, max_length=200)
    event_type: EventType
    recommendation_request_id: str = Field(min_length=1, max_length=64)
    metadata_json: dict[str, Any] | None = None


class ConversionEventsAccepted(BaseModel):
    received: int
    created: int = Field(description="New events; duplicates are counted once")
    duplicates: int


class ComparisonOut(BaseModel):
    """One metric of a slot against the control (variant minus control)."""

    tested: bool = Field(
        description="Both slots have valid counts, at least min_impressions impressions and "
        "some variation; otherwise every p-value and interval is null and nothing is significant"
    )
    not_tested_reason: str | None = Field(None, description="Why the tests did not run")
    difference: float | None = Field(
        description="Variant rate minus control rate; null when either rate is undefined"
    )
    lift: float | None = Field(description="Difference relative to the control rate")
    z: float | None = Field(description="Pooled two-proportion z statistic")
    p_value: float | None = Field(
        description="Fixed-horizon two-sided p-value of the z-test, unadjusted; valid only if "
        "the results are read once, at a sample size fixed in advance"
    )
    p_value_adjusted: float | None = Field(
        None,
        description="p_value after Holm-Bonferroni over every slot tested against the control "
        "on this metric",
    )
    ci_95: tuple[float, float] | None = Field(
        description="Fixed-horizon (Wald) 95% confidence interval of the difference"
    )
    significant: bool = Field(description="p_value_adjusted < alpha (fixed horizon)")
    always_valid_p_value: float | None = Field(
        None,
        description="Sequential (mSPRT) p-value: under equal rates, the chance it is ever "
        "below alpha, however often the results are read, is at most alpha",
    )
    always_valid_p_value_adjusted: float | None = Field(
        None, description="always_valid_p_value after Holm-Bonferroni, as p_value_adjusted"
    )
    confidence_sequence: tuple[float, float] | None = Field(
        None,
        description="(1 - alpha) confidence sequence of the difference: covers it at every "
        "sample size at once; not adjusted for several variants",
    )
    always_valid_significant: bool = Field(
        False,
        description="always_valid_p_value_adjusted < alpha: the test that picks the winner, "
        "safe to check daily",
    )


class SlotResult(BaseModel):
    slot_id: int
    slot_name: str
    model_id: int
    weight: int
    active: bool
    is_control: bool
    impressions: int
    clicks: int
    purchases: int
    ctr: float | None = Field(
        description="clicks / impressions; null without impressions or with invalid counts"
    )
    conversion_rate: float | None = Field(
        description="purchases / impressions; null without impressions or with invalid counts"
    )
    counts_valid: bool = Field(
        True,
        description="False when clicks or purchases exceed impressions (events without their "
        "impression): such a slot is reported but never tested nor picked as winner",
    )
    invalid_reason: str | None = Field(None, description="Which count is impossible, and why")
    sufficient_sample: bool = Field(description="impressions >= min_impressions")
    ctr_vs_control: ComparisonOut | None = Field(
        None, description="Click-through rate against the control; null for the control"
    )
    conversion_vs_control: ComparisonOut | None = Field(
        None, description="Conversion rate against the control; null for the control"
    )


class ABResults(BaseModel):
    project_id: int
    control_slot_id: int | None
    alpha: float
    min_impressions: int
    slots: list[SlotResult]
    winner_slot_id: int | None = Field(
        description="What promote without slot_id picks: among slots whose CTR is above the "
        "control's with always_valid_significant, the highest CTR (docs/AB_TESTING.md)"
    )


class PromoteRequest(RequestBody):
    slot_id: ResourceId | None = Field(None, description="Slot to promote; default: the A/B winner")
