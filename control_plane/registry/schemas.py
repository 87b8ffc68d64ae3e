from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from conch_manifest.names import ModelName
from control_plane.core.types import RequestBody, ResourceId


class ModelRegister(RequestBody):
    # The exporters' own rule (Triton's plus Conch's): nothing that leads out of the
    # repository ('..', 'a/b') or into a hidden directory reaches the filesystem.
    triton_name: ModelName = Field(description="Directory name in the model repository")
    project_id: ResourceId | None = Field(
        None,
        description="The project to register into: its keys see the model. None: a global "
        "model (needs a key restricted to no project).",
    )


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
    project_id: int | None  # the project it was registered into; None: global


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
    # What is wrong with its entry in the model repository, as this replica last scanned
    # it (a broken link, no config.pbtxt...): a load here would fail for that reason.
    repository_error: str | None = None
