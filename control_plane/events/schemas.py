"""Event payloads. Each carries a type tag, a schema version and a unique id.

Handlers must be idempotent: Pub/Sub may deliver to a replica that already
applied the change (its own publish is also dispatched locally), and may lose
an event altogether (every replica reconciles against SQL as well).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter


class BaseEvent(BaseModel):
    version: int = 1
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class KeyRevoked(BaseEvent):
    type: Literal["key_revoked"] = "key_revoked"
    key_id: int


class ModelTrained(BaseEvent):
    """A model was registered (seed 000's name for 'a new model is available')."""

    type: Literal["model_trained"] = "model_trained"
    model_id: int
    triton_name: str


class ModelDeleted(BaseEvent):
    """A model left the registry (or an operator unloaded it everywhere)."""

    type: Literal["model_deleted"] = "model_deleted"
    model_id: int
    triton_name: str


class SlotChanged(BaseEvent):
    """A slot was created, repointed, (de)activated or promoted: the pinned set moved."""

    type: Literal["slot_changed"] = "slot_changed"
    project_id: int
    slot_id: int
    model_id: int
    active: bool


class EngineConfigChanged(BaseEvent):
    """The engine configuration row changed: every replica reads it from SQL and applies
    it (reloading its loaded models with the new batching), newer revisions only."""

    type: Literal["engine_config_changed"] = "engine_config_changed"
    revision: int


Event = Annotated[
    KeyRevoked | ModelTrained | ModelDeleted | SlotChanged | EngineConfigChanged,
    Field(discriminator="type"),
]
EventAdapter: TypeAdapter[Event] = TypeAdapter(Event)
