"""Bodies of the model-management and engine endpoints (seed 002's operations)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class BatchSizeCount(BaseModel):
    batch_size: int
    count: int  # batches of this size Triton formed and executed


class ModelMetrics(BaseModel):
    """From Triton's statistics API; averages, since Triton keeps sums, not histograms."""

    model_id: int
    triton_name: str
    request_count: int
    success_count: int
    error_count: int
    execution_count: int  # batches run: request_count / execution_count = mean batch size
    avg_latency_ms: float | None
    avg_queue_ms: float | None
    avg_compute_ms: float | None
    batch_sizes: list[BatchSizeCount]
    last_inference_at: datetime | None


class EngineModel(BaseModel):
    triton_name: str
    state: str
    pinned: bool
    # Why Triton did not unload it (still loaded here), as `replica_load_error` says.
    load_error: str | None = None
    last_used_at: datetime | None
    queue_ms_total: float
    compute_ms_total: float
    request_count: int


class EngineStatus(BaseModel):
    server: str
    version: str
    live: bool
    max_loaded_models: int
    loaded_models: list[EngineModel]
    queue_ms_total: float
    compute_ms_total: float
    reconciler: dict[str, object]
    listener_connected: bool
    counters: dict[str, int]  # what the listener and the lifecycle did since start
