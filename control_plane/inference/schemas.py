"""Request and response bodies of the inference API, exactly as seed 000 names them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from conch_manifest.schema import ClassLabel
from control_plane.core.types import RequestBody
from control_plane.model_core.inputs import MAX_ROWS

# Constants, not settings: they are the request contract of seed 000, published in
# the OpenAPI schema, and must be the same on every replica.
MAX_CUTOFF = 1000
MAX_BATCH_USERS = 100


class PredictRequest(RequestBody):
    user_id: str = Field(min_length=1, max_length=200)
    cutoff: int = Field(10, ge=1, le=MAX_CUTOFF)


class BatchPredictRequest(RequestBody):
    user_ids: list[str] = Field(min_length=1, max_length=MAX_BATCH_USERS)
    cutoff: int = Field(10, ge=1, le=MAX_CUTOFF)


class ScoredItem(BaseModel):
    item_id: str
    score: float


class PredictResponse(BaseModel):
    items: list[ScoredItem]
    model_id: int
    request_id: str


class BatchPredictResponse(BaseModel):
    results: list[PredictResponse]


class ProjectPredictResponse(PredictResponse):
    slot_id: int
    slot_name: str


class TabularPredictRequest(RequestBody):
    data: list[list[float]] = Field(min_length=1, max_length=MAX_ROWS)  # the core's limit too


class TabularPredictResponse(BaseModel):
    # Class labels in the model's own type (classifiers; 1, not "1", for integer
    # classes) or values (regressors).
    predictions: list[ClassLabel]
    probabilities: list[list[float]] | None = None
    outputs: dict[str, list[Any]] | None = None  # other models: every output tensor
    model_id: int
    request_id: str


class HealthResponse(BaseModel):
    status: str  # healthy | degraded | unhealthy
    loaded_models: int
    # rate_limiter: ok | fallback (limits per process, not shared) | not_configured | disabled
    components: dict[str, str] = {}  # triton, sql, redis, listener: ok | down | not_configured
    # Model repository entries skipped and models Triton refused here (name -> reason);
    # the `repository` component is `degraded` while there is any.
    bad_entries: dict[str, str] = {}


class ReadinessResponse(BaseModel):
    ready: bool
    pinned: int
    missing: list[str]


class LoadedModelsResponse(BaseModel):
    models: list[int]
    count: int
