"""Seed 002's async predictions: what a caller sends and what it reads back."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from conch_manifest.priorities import DEFAULT_PRIORITY, Priority
from control_plane.core.types import RequestBody

TaskStatus = Literal["queued", "running", "completed", "failed", "cancelled"]


class AsyncPredictRequest(RequestBody):
    data: Any = Field(
        description="rows, records keyed by feature names, or text: what `predict` accepts"
    )
    model_id: str | int = Field(description="the model's Conch id, registered name or Triton name")
    callback_url: str | None = Field(
        None,
        max_length=2000,
        description="the result is POSTed here, signed (X-Conch-Signature); its host must be "
        "in CONCH_CALLBACK_ALLOWED_HOSTS",
    )
    priority: Priority = DEFAULT_PRIORITY
    return_probabilities: bool = False
    batch_size: int = Field(32, ge=1, le=1000)
    timeout_ms: int = Field(30_000, ge=1, le=600_000, description="the model call's deadline")


class AsyncSubmitResponse(BaseModel):
    task_id: str
    status: TaskStatus
    queue_position: int = Field(description="1: the next task a worker takes at this priority")
    estimated_completion: str | None = Field(
        description="from the tasks ahead and the queue's measured completion rate (or the "
        "model's measured inference time); null until anything was measured"
    )
    priority: Priority


class TaskView(BaseModel):
    task_id: str
    status: TaskStatus
    model_id: str
    resolved_model_id: int
    priority: Priority
    created_at: str
    started_at: str | None = None
    completed_at: str | None = None
    attempts: int = Field(0, description="times a worker took the task (more after a takeover)")
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = Field(None, description="the error body, for `failed`")
    callback: dict[str, Any] | None = Field(
        None, description="the callback's delivery: status and every attempt"
    )
