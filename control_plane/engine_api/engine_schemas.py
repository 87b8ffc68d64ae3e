"""Bodies of seed 002's engine management: /api/inference/engine/*.

The configuration is Conch's, not the seed's process's: batching is Triton's dynamic
batcher (see control_plane/lifecycle/tuning.py for what `max_batch_size` means), the
cache is the lifecycle's LRU of loaded models. The seed's quantization, compilation
and memory-limit switches have no counterpart in Conch; they are reported as null
with the reason, and refused in a PUT.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from control_plane.core.types import RequestBody

# Bounds of the settable fields. The largest batch any export allows is far below the
# first. A queue delay is meant in microseconds to milliseconds: a second is already
# extreme, and far below the deadline of a request to Triton (`triton_timeout_s`).
MAX_BATCH_SIZE = 65_536
MAX_BATCH_TIMEOUT_MS = 1_000.0
MAX_CONCURRENT_REQUESTS = 1_000_000
MAX_MODEL_CACHE_SIZE = 10_000

NOT_SUPPORTED: dict[str, str] = {
    "enable_quantization": "Conch does not quantize at serving time: a quantized model "
    "is exported and registered as a model of its own",
    "enable_compilation": "Conch does not compile models at serving time: Triton's "
    "backends run the exported model as it is",
    "memory_limit_mb": "Triton has no memory limit per server: model_cache_size bounds "
    "how many unpinned models a replica keeps loaded",
}


class EngineConfigUpdate(RequestBody):
    """Only the fields given change; null puts a field back to its default."""

    model_config = ConfigDict(strict=True, extra="forbid")

    max_batch_size: int | None = Field(
        None,
        ge=1,
        le=MAX_BATCH_SIZE,
        description="the batch Triton's dynamic batcher dispatches once gathered, capped "
        "per model by its export's max_batch_size; null: each model's exported batching",
    )
    batch_timeout_ms: float | None = Field(
        None,
        ge=0,
        le=MAX_BATCH_TIMEOUT_MS,
        description="how long a request may wait for others to batch with (Triton's "
        "max_queue_delay_microseconds, to the microsecond); null: each model's export",
    )
    max_concurrent_requests: int | None = Field(
        None,
        ge=1,
        le=MAX_CONCURRENT_REQUESTS,
        description="requests inside Triton at once per replica; more get 503 + "
        "Retry-After; null: no limit",
    )
    model_cache_size: int | None = Field(
        None,
        ge=1,
        le=MAX_MODEL_CACHE_SIZE,
        description="unpinned models a replica keeps loaded (least recently used "
        "unloaded first); null: the INFERENCE_MAX_LOADED_MODELS setting",
    )

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, reason in NOT_SUPPORTED.items():
                if name in data:
                    raise ValueError(f"{name} cannot be set: {reason}")
        return data

    def changes(self) -> dict[str, int | None]:
        """The given fields as the engine_config row stores them (microseconds)."""
        given = self.model_dump(exclude_unset=True)
        if "batch_timeout_ms" in given:
            ms = given.pop("batch_timeout_ms")
            given["batch_timeout_us"] = None if ms is None else round(ms * 1000)
        return given


class EngineConfigRead(BaseModel):
    max_batch_size: int | None
    batch_timeout_ms: float | None
    max_concurrent_requests: int | None  # null: no limit
    model_cache_size: int  # in effect: the stored value or the setting
    enable_quantization: None = None
    enable_compilation: None = None
    memory_limit_mb: None = None
    not_supported: dict[str, str] = Field(default_factory=lambda: dict(NOT_SUPPORTED))
    revision: int  # 0: never changed
    updated_at: datetime | None


class ModelBatching(BaseModel):
    """A model loaded on this replica, as its Triton reports its config now."""

    triton_name: str
    max_batch_size: int  # the export's: the largest request Triton accepts
    dynamic_batching: bool
    preferred_batch_size: list[int]
    max_queue_delay_microseconds: int


class EngineConfigApplied(EngineConfigRead):
    """The stored configuration and, on the replica that stored it, its loaded models
    after their reload (the other replicas follow within moments)."""

    models: list[ModelBatching]
    failed: dict[str, str]  # model -> why Triton kept its previous config


class EngineRestarted(BaseModel):
    reloaded: list[str]  # swapped in place, one at a time: requests kept being served
    failed: dict[str, str]


class EngineCacheCleared(BaseModel):
    unloaded: list[str]
    kept: dict[str, str]  # model -> why it stays loaded


class MemoryUsage(BaseModel):
    total_mb: float
    used_mb: float
    free_mb: float


class EngineStatusRead(BaseModel):
    """This replica, measured now. Null where nothing here can measure it."""

    status: str  # "running"; "degraded" while this replica's Triton does not answer
    uptime: str  # of this control-plane process, e.g. "2h 30m 45s"
    uptime_s: float
    loaded_models: int | None  # READY in this replica's Triton
    active_requests: int  # requests inside Triton through this replica now
    total_predictions: int | None  # successful predictions since this process started
    average_response_time: float | None  # seconds, over the recent window
    memory_usage: MemoryUsage  # of this machine
    cpu_usage: float  # percent of this machine's CPUs, since the previous reading
    gpu_usage: float | None  # percent, mean of the GPUs; null without NVML
