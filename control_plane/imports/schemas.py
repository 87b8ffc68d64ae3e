"""The load request (seed 002's three fields plus optional ones) and what it answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from control_plane.core.types import RequestBody

JobStatus = Literal["queued", "exporting", "registering", "loading", "loaded", "failed"]
# Rows of held-out data in a request: enough for a parity check, bounded by the body cap.
MAX_SAMPLE_ROWS = 10_000


class ModelLoadRequest(RequestBody):
    model_path: str = Field(
        min_length=1,
        max_length=4096,
        description="The file, relative to the import directory (CONCH_IMPORT_DIR); an "
        "absolute path must lie inside it",
    )
    model_type: str = Field(
        min_length=1,
        max_length=40,
        description="onnx, xgboost (.json/.ubj), lightgbm (.txt), torchscript; sklearn and "
        "pickled boosters only with CONCH_ALLOW_PICKLE_IMPORT=true",
    )
    compile_model: bool = Field(
        False,
        description="Publish the ONNX graph optimized offline by onnxruntime (basic level), "
        "parity-checked; answered compiled=true. Not available for torchscript (422)",
    )
    name: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="Model name (default: the file's name without its suffix)",
    )
    sample_data: list[list[float]] | None = Field(
        None,
        min_length=1,
        max_length=MAX_SAMPLE_ROWS,
        description="Held-out rows for the parity check (default: seeded generated rows)",
    )
    input_shape: list[int] | None = Field(
        None,
        min_length=1,
        max_length=8,
        description="torchscript: the shape of one sample without the batch axis",
    )
    atol: float | None = Field(None, ge=0, description="Parity: absolute tolerance (1e-5)")
    rtol: float | None = Field(None, ge=0, description="Parity: relative tolerance (1e-4)")


class ImportStep(BaseModel):
    name: str
    status: str
    seconds: float
    detail: str


class ParityReport(BaseModel):
    passed: bool
    rows: int
    max_abs_diff: float | None = None
    detail: str = ""


class ModelLoadResponse(BaseModel):
    """Seed 002's fields first; then what a caller needs to use and audit the import."""

    message: str
    model_id: int
    model_type: str
    compiled: bool
    load_time: float = Field(description="Seconds from the request to the model serving")
    model_size_mb: float = Field(description="Size of the model's files in the repository")
    loaded_at: datetime | None
    status: Literal["loaded"] = "loaded"
    name: str
    triton_name: str
    framework: str
    task: str
    job_id: str
    already_published: bool = Field(
        description="An identical model was already in the repository: nothing was written"
    )
    compile_note: str | None = Field(
        None, description="What compile_model did (compiled=true): the optimization and its effect"
    )
    parity: ParityReport
    steps: list[ImportStep]
    timings: dict[str, float] = Field(description="Seconds per phase: export, register, load")


def compile_note(optimization: dict[str, Any] | None) -> str | None:
    """`compile_note` from the exporter's record of the optimization (its manifest's)."""
    if optimization is None:
        return None
    return (
        f"{optimization['tool']} graph optimization, {optimization['level']} level (portable "
        f"across execution providers): {optimization['nodes_before']} -> "
        f"{optimization['nodes_after']} graph nodes; the parity check ran on the optimized model"
    )


class ImportFailure(BaseModel):
    """Why a job failed: the body its synchronous answer would have had."""

    error: str
    message: str
    details: dict[str, Any] = {}


class ImportJobRead(BaseModel):
    job_id: str
    status: JobStatus
    model_path: str = Field(description="As the caller sent it")
    model_type: str
    name: str
    created_at: datetime
    finished_at: datetime | None = None
    result: ModelLoadResponse | None = None
    error: ImportFailure | None = None
