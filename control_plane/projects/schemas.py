from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from control_plane.core.types import RequestBody


class ProjectCreate(RequestBody):
    name: str = Field(min_length=1, max_length=200)
    sticky: bool = Field(False, description="Same user -> same slot (hash of salt and user id)")


class ProjectUpdate(RequestBody):
    sticky: bool | None = None


class ProjectRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    sticky: bool
    created_at: datetime
