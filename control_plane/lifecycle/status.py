"""What this replica knows about each model's presence in its own Triton (memory only)."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


class LoadState(enum.StrEnum):
    unloaded = "unloaded"
    loading = "loading"
    ready = "ready"
    unloading = "unloading"
    failed = "failed"


@dataclass
class ModelStatus:
    triton_name: str
    state: LoadState = LoadState.unloaded
    loaded_at: datetime | None = None
    # Monotonic: LRU order immune to wall-clock jumps, and one cheap call per request.
    last_used: float = 0.0
    # Why the last load failed, or why Triton did not unload the model (still loaded).
    load_error: str | None = None
    failures: int = 0
    retry_at: float = 0.0  # monotonic; no automatic load before it
    evicted: bool = False  # unloaded by our LRU: reconcile must not bring it back

    def touch(self) -> None:
        self.last_used = time.monotonic()

    @property
    def last_used_at(self) -> datetime | None:
        if not self.last_used:
            return None
        return datetime.now(UTC) - timedelta(seconds=time.monotonic() - self.last_used)

    def mark_ready(self) -> None:
        self.state = LoadState.ready
        self.loaded_at = datetime.now(UTC)
        self.load_error = None
        self.failures = 0
        self.retry_at = 0.0
        self.evicted = False

    def mark_failed(self, reason: str, *, retry_min_s: float, retry_max_s: float) -> None:
        """No automatic load for `retry_min_s`, doubling per failure up to `retry_max_s`:
        each attempt costs Triton a backend process and seconds of CPU."""
        self.state = LoadState.failed
        self.load_error = reason
        self.failures += 1
        backoff = min(retry_min_s * 2.0 ** (self.failures - 1), retry_max_s)
        self.retry_at = time.monotonic() + backoff

    def mark_unloaded(self) -> None:
        if self.state in (LoadState.ready, LoadState.unloading):
            self.load_error = None  # a refused unload before: this time it is gone
        if self.state is not LoadState.failed:
            self.state = LoadState.unloaded
        self.loaded_at = None

    def mark_unload_failed(self, reason: str, state: LoadState) -> None:
        """Triton did not unload the model: it is where it was, and the reason is shown."""
        self.state = state
        self.load_error = reason

    @property
    def backing_off(self) -> bool:
        return self.state is LoadState.failed and time.monotonic() < self.retry_at

    @property
    def retry_after_s(self) -> float:
        return max(0.0, self.retry_at - time.monotonic())
