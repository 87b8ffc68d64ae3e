"""Seed 002's prediction bodies (`/api/inference/predict...`), with the seed's names and defaults.

`data` is any form the model core takes (`model_core/inputs.py`: rows, records
keyed by feature names, or input name -> rows); the core validates it and names
the feature at fault. `model_id` is what the caller calls the model: its Conch
id, its registered name (the newest model of that name) or its Triton name,
and the response echoes it as sent (`resolved_model_id` is the Conch id that
answered).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from conch_manifest.priorities import DEFAULT_PRIORITY, Priority
from conch_manifest.schema import ClassLabel
from control_plane.core.openapi_errors import ErrorBody
from control_plane.core.types import MAX_ID, RequestBody
from control_plane.model_core.inputs import MAX_ROWS

# Constants, not settings: the request contract, the same on every replica.
MAX_TIMEOUT_MS = 300_000
MAX_MULTI_BATCH_REQUESTS = 100
DEFAULT_BATCH_SIZE = 32  # seed 002: rows per Triton request (capped by the model's max)
DEFAULT_TIMEOUT_MS = 5000
DEFAULT_BATCH_TIMEOUT_MS = 1000

ModelRef = (
    Annotated[str, Field(min_length=1, max_length=200)] | Annotated[int, Field(ge=1, le=MAX_ID)]
)
Data = list[Any] | dict[str, Any]


class InferenceRequest(RequestBody):
    data: Data = Field(description="Rows, records keyed by feature names, or input -> rows")
    model_id: ModelRef | None = Field(
        None, description="Conch id, registered name or Triton name (required)"
    )
    return_probabilities: bool = False
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, le=MAX_ROWS)
    timeout_ms: int = Field(DEFAULT_TIMEOUT_MS, ge=1, le=MAX_TIMEOUT_MS)
    priority: Priority = DEFAULT_PRIORITY


class MultiBatchItem(RequestBody):
    # `data` and `model_id` are checked per item: a bad one fails its item, not the batch.
    request_id: Annotated[str, Field(max_length=200)] | None = None
    data: Any = None
    model_id: Any = None
    return_probabilities: bool = False
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, le=MAX_ROWS)


class BatchInferenceRequest(RequestBody):
    requests: list[MultiBatchItem] = Field(min_length=1, max_length=MAX_MULTI_BATCH_REQUESTS)
    batch_timeout_ms: int = Field(DEFAULT_BATCH_TIMEOUT_MS, ge=1, le=MAX_TIMEOUT_MS)
    priority: Priority = DEFAULT_PRIORITY


class _Answer(BaseModel):
    predictions: list[ClassLabel | list[Any]]
    probabilities: list[list[float]] | None = Field(None, description="Only when asked")
    outputs: dict[str, list[Any]] | None = Field(None, description="Models of other kinds")
    model_id: str | int = Field(description="As the caller sent it")
    resolved_model_id: int = Field(description="The Conch id that answered")


class InferenceResponse(_Answer):
    inference_time: float = Field(description="Seconds, measured by the model core")
    request_id: str
    timestamp: str


class BatchInferenceResponse(_Answer):
    batch_size: int = Field(description="Rows predicted")
    total_inference_time: float
    average_inference_time: float = Field(description="Seconds per row")
    request_id: str
    timestamp: str


class MultiBatchResult(BaseModel):
    request_id: str
    status: str = Field(description="success | failed")
    model_id: Any = None
    resolved_model_id: int | None = None
    predictions: list[ClassLabel | list[Any]] | None = None
    probabilities: list[list[float]] | None = None
    outputs: dict[str, list[Any]] | None = None
    inference_time: float | None = None
    error: ErrorBody | None = Field(None, description="The error body of a failed item")


class MultiBatchResponse(BaseModel):
    results: list[MultiBatchResult]
    batch_id: str
    total_requests: int
    successful_requests: int
    failed_requests: int
    total_time: float
