from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

EventType = Literal["impression", "click", "purchase"]
MAX_EVENTS_PER_BATCH = 1000


class ConversionEventIn(BaseModel):
    project: int
    deployment_slot: int
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
    difference: float
    lift: float | None
    z: float | None
    p_value: float | None
    ci_95: tuple[float, float] | None
    significant: bool


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
    ctr: float
    conversion_rate: float
    sufficient_sample: bool
    ctr_vs_control: ComparisonOut | None = None
    conversion_vs_control: ComparisonOut | None = None


class ABResults(BaseModel):
    project_id: int
    control_slot_id: int | None
    alpha: float
    min_impressions: int
    slots: list[SlotResult]
    winner_slot_id: int | None = Field(description="Best CTR significantly above control")


class PromoteRequest(BaseModel):
    slot_id: int | None = Field(None, description="Slot to promote; default: the A/B winner")
