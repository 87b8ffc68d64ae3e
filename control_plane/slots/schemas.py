from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from control_plane.core.types import RequestBody, ResourceId


class SlotCreate(RequestBody):
    name: str = Field(min_length=1, max_length=200)
    model_id: ResourceId
    weight: int = Field(ge=0, le=100)
    active: bool = True
    is_control: bool = False


class SlotUpdate(RequestBody):
    model_id: ResourceId | None = None
    weight: int | None = Field(None, ge=0, le=100)
    active: bool | None = None
    is_control: bool | None = None


class SlotRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    project_id: int
    name: str
    model_id: int
    weight: int
    active: bool
    is_control: bool
    created_at: datetime
