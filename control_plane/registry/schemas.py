from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class ModelRegister(BaseModel):
    triton_name: str = Field(
        min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.-]+$",
        description="Directory name in the model repository",
    )  # fmt: skip


class ModelRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    triton_name: str
    name: str
    framework: str
    task: str
    manifest_sha256: str
    created_at: datetime
    load_error: str | None
