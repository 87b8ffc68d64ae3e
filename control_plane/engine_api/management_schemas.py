"""Bodies of seed 002's model-management and monitoring answers (`/api/inference/`).

Field names are the seed's; every figure is measured by this replica (its own
counters, Triton's statistics, the host through psutil/NVML). A figure nothing
measures is `null`, never an estimate or a constant. Times are in seconds, as
in the seed (`average_inference_time: 0.045`); Triton's own figures keep
Triton's milliseconds, named `_ms`.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from control_plane.lifecycle.schemas import ModelMetrics
from control_plane.registry.schemas import TensorRead


class ModelSummary(BaseModel):
    model_id: int = Field(description="Conch's id; paths also accept the names below")
    name: str = Field(description="the registered name (paths take the newest of a name)")
    triton_name: str
    model_type: str = Field(description="the framework it was exported from")
    task: str
    compiled: bool = Field(
        description="the export optimized the graph (`conch export --optimize`, compile_model)"
    )
    load_state: str = Field(description="on this replica: unloaded, loading, ready, failed...")
    loaded_at: datetime | None
    inference_count: int | None = Field(
        description="successful predictions on this replica; null when not counted"
    )


class ModelList(BaseModel):
    models: list[ModelSummary]
    total_models: int
    total_memory_usage_mb: float | None = Field(
        description="sum of the memory Triton reports for the loaded models; null when "
        "Triton reports none (most backends do not)"
    )


class ModelInfo(ModelSummary):
    model_path: str = Field(description="its entry in the model repository (relative)")
    pinned: bool = Field(description="served by an active slot: never unloaded by eviction")
    last_used: datetime | None = Field(description="this replica's last prediction with it")
    average_inference_time: float | None
    model_size_mb: float | None = Field(description="its files on disk")
    memory_usage_mb: float | None
    max_batch_size: int
    inputs: list[TensorRead]
    outputs: list[TensorRead]
    load_error: str | None = Field(description="why its last load on this replica failed")


class ModelUnloaded(BaseModel):
    message: str
    model_id: int
    was_loaded: bool = Field(description="whether this replica had it loaded")
    memory_freed_mb: float | None = Field(
        description="the memory Triton reported for it before the unload; null when Triton "
        "reports none, 0 when it was not loaded"
    )


class ModelReloaded(BaseModel):
    message: str
    model_id: int
    reload_time: float = Field(description="seconds Triton took to load and warm it")
    loaded_at: datetime | None


class ModelMetricsAnswer(BaseModel):
    """Conch's counters (this replica, since it started) and Triton's statistics
    (its server, since it loaded the model) side by side: they count differently
    (one Conch request may be several Triton requests, and Triton's counts restart
    with every load)."""

    model_id: int
    inference_count: int | None
    average_inference_time: float | None
    total_inference_time: float | None
    last_inference_time: float | None
    error_count: int | None
    error_rate: float | None = Field(description="errors / requests; null before any request")
    throughput_per_second: float | None = Field(
        description="inference_count / total_inference_time, as the seed computes it: "
        "predictions per second of inference time"
    )
    memory_usage_mb: float | None
    triton: ModelMetrics | None = Field(
        description="Triton's statistics for the model; null when Triton has none (not "
        "loaded) or did not answer in time"
    )


class RequestMetrics(BaseModel):
    window_s: float = Field(description="the recent span these figures cover")
    total_requests: int
    successful_requests: int
    failed_requests: int
    average_response_time: float | None
    p95_response_time: float | None
    p99_response_time: float | None
    requests_per_second: float


class ResourceMetrics(BaseModel):
    cpu_usage: float = Field(description="percent of the host's CPUs busy")
    memory_usage_mb: float = Field(description="this control plane process (resident)")
    gpu_usage: float | None = Field(description="mean utilization of the GPUs NVML sees")
    gpu_memory_mb: float | None = Field(description="GPU memory in use, all GPUs")


class ModelsOverview(BaseModel):
    active_models: int | None = Field(description="models Triton has ready; null if unreachable")
    total_model_memory_mb: float | None
    cache_hit_rate: float | None = Field(None, description="not measured by Conch: always null")


class PerformanceMetrics(BaseModel):
    request_metrics: RequestMetrics | None = Field(
        description="null when this replica does not count predictions"
    )
    resource_metrics: ResourceMetrics
    model_metrics: ModelsOverview


class CpuUsage(BaseModel):
    usage_percent: float
    cores: int
    load_average: list[float]


class MemoryUsage(BaseModel):
    total_mb: float
    used_mb: float
    free_mb: float = Field(description="available to new processes")
    usage_percent: float


class GpuDevice(BaseModel):
    index: int
    name: str
    usage_percent: float
    memory_total_mb: float
    memory_used_mb: float
    temperature: float | None


class GpuUsage(BaseModel):
    count: int
    usage_percent: float = Field(description="mean over the GPUs")
    memory_total_mb: float
    memory_used_mb: float
    temperature: float | None = Field(description="the hottest GPU, Celsius")
    devices: list[GpuDevice]


class DiskUsage(BaseModel):
    """The filesystem holding the model repository."""

    usage_percent: float
    free_gb: float
    total_gb: float


class ResourceUsage(BaseModel):
    cpu: CpuUsage
    memory: MemoryUsage
    gpu: GpuUsage | None = Field(
        description="null without NVML or without a GPU visible to this process (a GPU "
        "only Triton's container sees is reported by Triton's own metrics)"
    )
    disk: DiskUsage


class SystemHealth(BaseModel):
    status: str = Field(description="healthy | degraded | unhealthy")
    timestamp: datetime
    checks: dict[str, str] = Field(
        description="per component: healthy, degraded, unhealthy, not_configured or not_measured"
    )
    reasons: dict[str, str] = Field(description="why, for each check that is not healthy")
    uptime: str
    uptime_s: float
    version: str
