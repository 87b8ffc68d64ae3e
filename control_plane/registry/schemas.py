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


class TensorRead(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelInfo(ModelRead):
    """A registered model plus what this replica knows of it (load state is per replica)."""

    inputs: list[TensorRead] = []
    outputs: list[TensorRead] = []
    size_bytes: int | None = None
    load_state: str = "unloaded"
    pinned: bool = False
    loaded_at: datetime | None = None
    last_used_at: datetime | None = None
    replica_load_error: str | None = None
