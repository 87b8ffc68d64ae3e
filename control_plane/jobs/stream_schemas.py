"""Seed 002's streaming sessions: what a caller sends and what it reads back."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from control_plane.core.types import MAX_ID, RequestBody
from control_plane.model_core.inputs import MAX_ROWS

STREAM_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,100}$"
# Lua formats numbers with 14 significant digits: sequence ids stay well below.
MAX_SEQUENCE_ID = 10**12
MAX_BATCH_TIMEOUT_MS = 60_000
MAX_RESULTS_PER_READ = 1000

ModelRef = (
    Annotated[str, Field(min_length=1, max_length=200)] | Annotated[int, Field(ge=1, le=MAX_ID)]
)


class StreamStartRequest(RequestBody):
    stream_id: Annotated[str, Field(pattern=STREAM_ID_PATTERN)] | None = Field(
        None,
        description="chosen by the caller, unique among its key's streams (another key may "
        "use the same); omitted: one is generated",
    )
    model_id: ModelRef = Field(description="the model's Conch id, registered name or Triton name")
    buffer_size: int = Field(
        100, ge=1, le=MAX_ROWS, description="rows sent to Triton together once this many wait"
    )
    batch_timeout_ms: int = Field(
        50,
        ge=1,
        le=MAX_BATCH_TIMEOUT_MS,
        description="fewer rows are sent once the oldest of them waited this long",
    )
    return_probabilities: bool = False


class StreamStarted(BaseModel):
    stream_id: str
    model_id: str | int = Field(description="as sent")
    resolved_model_id: int
    owner_key_id: int = Field(description="an admin of the project names it in `owner_key_id=`")
    buffer_size: int
    batch_timeout_ms: int
    idle_ttl_s: int = Field(description="the stream expires this long after its last send or read")
    created_at: str


class StreamSendRequest(RequestBody):
    data: Any = Field(
        description="one row (a list of feature values, or a record keyed by feature names) "
        "or a list of rows; rows of one send take consecutive sequence ids from sequence_id"
    )
    sequence_id: int = Field(ge=0, le=MAX_SEQUENCE_ID, description="unique within the stream")


class StreamSent(BaseModel):
    stream_id: str
    sequence_id: int = Field(description="of the first row")
    rows: int
    pending: int = Field(description="rows of the stream buffered or being predicted")
    flushed: bool = Field(description="this send filled the buffer: its rows went to Triton")


class StreamResult(BaseModel):
    sequence_id: int
    prediction: Any = Field(None, description="the row's prediction, as `predict` answers it")
    probabilities: list[Any] | None = None
    outputs: dict[str, Any] | None = Field(
        None, description="the row's raw outputs, for models without `predictions`"
    )
    error: dict[str, Any] | None = Field(
        None, description="the error body, when the model call of the row's batch failed"
    )
    inference_time: float | None = Field(None, description="of the row's whole batch, seconds")
    batch_rows: int | None = Field(None, description="rows predicted with it in one call")
    completed_at: str | None = None


class StreamResults(BaseModel):
    stream_id: str
    results: list[StreamResult] = Field(
        description="sequence ids >= cursor in order, up to the first not yet computed"
    )
    next_cursor: int = Field(description="the cursor of the next read: nothing is answered twice")
    pending: int = Field(description="rows buffered or being predicted")
    closed: bool


class StreamClosed(BaseModel):
    stream_id: str
    closed: bool
    flushed: int = Field(description="rows still buffered at close, predicted before answering")
    pending: int = Field(description="rows still being predicted (0 unless a replica is slow)")
