"""What this replica measured about its predictions: per model, and over a recent window.

Every prediction through the core is recorded once (`record`), whichever door it
came through, so seed 002's `models/{id}/metrics` and `metrics/performance`
report measured figures, never estimates. Counters are this process's: each
replica answers for itself (Triton's own statistics cover its whole server).
Recording is a few attribute updates and one deque append: it sits on the hot path.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np


@dataclass
class ModelCounters:
    inference_count: int = 0  # successful predictions
    error_count: int = 0
    total_inference_time_s: float = 0.0  # over successful predictions
    last_inference_time_s: float | None = None
    last_used_at: datetime | None = None

    @property
    def average_inference_time_s(self) -> float | None:
        return self.total_inference_time_s / self.inference_count if self.inference_count else None

    @property
    def error_rate(self) -> float:
        total = self.inference_count + self.error_count
        return self.error_count / total if total else 0.0


@dataclass(frozen=True)
class WindowSummary:
    window_s: float  # the span the figures cover (shorter while the process is young)
    total_requests: int
    successful_requests: int
    failed_requests: int
    average_response_time_s: float | None
    p95_response_time_s: float | None
    p99_response_time_s: float | None
    requests_per_second: float


class InferenceStats:
    def __init__(self, window_s: float = 60.0, max_samples: int = 100_000) -> None:
        self.window_s = window_s
        self.started = time.monotonic()
        self._models: dict[int, ModelCounters] = {}
        # (monotonic end time, seconds, succeeded), oldest first
        self._recent: deque[tuple[float, float, bool]] = deque(maxlen=max_samples)

    def record(self, model_id: int, seconds: float, ok: bool) -> None:
        counters = self._models.get(model_id)
        if counters is None:
            counters = self._models[model_id] = ModelCounters()
        if ok:
            counters.inference_count += 1
            counters.total_inference_time_s += seconds
            counters.last_inference_time_s = seconds
        else:
            counters.error_count += 1
        counters.last_used_at = datetime.now(UTC)
        self._recent.append((time.monotonic(), seconds, ok))

    def model(self, model_id: int) -> ModelCounters:
        """This replica's counters for the model (all zero if it never predicted)."""
        return self._models.get(model_id) or ModelCounters()

    def forget(self, model_id: int) -> None:
        self._models.pop(model_id, None)

    def total_predictions(self) -> int:
        return sum(c.inference_count for c in self._models.values())

    def window(self) -> WindowSummary:
        now = time.monotonic()
        cutoff = now - self.window_s
        while self._recent and self._recent[0][0] < cutoff:
            self._recent.popleft()
        span = min(self.window_s, now - self.started) or self.window_s
        samples = list(self._recent)
        succeeded = [seconds for _, seconds, ok in samples if ok]
        p95 = p99 = average = None
        if succeeded:
            latencies = np.asarray(succeeded)
            p95, p99 = (float(v) for v in np.percentile(latencies, [95, 99]))
            average = float(latencies.mean())
        return WindowSummary(
            window_s=span,
            total_requests=len(samples),
            successful_requests=len(succeeded),
            failed_requests=len(samples) - len(succeeded),
            average_response_time_s=average,
            p95_response_time_s=p95,
            p99_response_time_s=p99,
            requests_per_second=len(samples) / span,
        )
