"""Latency statistics: percentiles over merged raw samples, one summary per run.

Worker processes return their raw latency samples (float64 seconds); merging is a
concatenation, so percentiles over N processes are exact rather than averaged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

PERCENTILES = (50.0, 90.0, 99.0, 99.9)

FloatArray = npt.NDArray[np.float64]


def percentile(samples: Sequence[float] | FloatArray, q: float) -> float:
    """The q-th percentile by the nearest-rank method: an observed sample, never interpolated.

    Nearest rank is what HdrHistogram and wrk report; for q=50 over [1..100] it is 50.
    """
    values = np.sort(np.asarray(samples, dtype=np.float64))
    if values.size == 0:
        return float("nan")
    # Rounded first: 99.9 / 100 * 1000 is 999.0000000000001 in floating point.
    rank = int(np.ceil(round(q * values.size / 100.0, 9)))
    return float(values[min(max(rank, 1), values.size) - 1])


@dataclass
class WorkerResult:
    """What one client process measured inside the measurement window."""

    latencies_s: FloatArray
    errors: int
    error_messages: list[str]
    window_s: float
    cpu_s: float  # process CPU time spent during the window
    max_send_lag_s: float = 0.0  # open loop: worst delay of a send behind its schedule
    dropped: int = 0  # open loop: sends skipped because max_in_flight was reached
    # Closed loop: latencies of requests sent in the window but answered after it.
    late_s: FloatArray = field(default_factory=lambda: np.empty(0, np.float64))


@dataclass
class RunSummary:
    """One (target, concurrency or rate) measurement, merged over client processes."""

    label: str
    mode: str  # "closed" or "open"
    concurrency: int
    rate: float | None
    processes: int
    duration_s: float
    requests: int
    errors: int
    throughput_rps: float
    latency_ms: dict[str, float]  # "p50", "p90", "p99", "p99.9", "mean", "max"
    client_cpu: list[float]  # per process: CPU seconds / wall seconds (1.0 = one core busy)
    first_errors: list[str] = field(default_factory=list)
    max_send_lag_ms: float = 0.0
    dropped: int = 0
    batch_size: int = 1
    # Closed loop: requests sent inside the window but answered after it. Dropping
    # them would flatter a slow arm's tail (the slowest are the likeliest to straddle
    # the cut), so they count in the percentiles but not in `requests`/throughput.
    late: int = 0
    client: str = "python"  # the load generator: "python" (loadgen.py) or "wrk"

    @property
    def client_saturated(self) -> bool:
        """A client process near one full core may itself be the bottleneck."""
        return max(self.client_cpu, default=0.0) > 0.9

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSummary:
        return cls(**data)


def percentile_key(q: float) -> str:
    return f"p{q:g}"


def summarize(
    label: str,
    results: Sequence[WorkerResult],
    *,
    mode: str,
    concurrency: int,
    rate: float | None = None,
    batch_size: int = 1,
) -> RunSummary:
    empty = np.empty(0, np.float64)
    samples = np.concatenate([r.latencies_s for r in results]) if results else empty
    late = np.concatenate([r.late_s for r in results]) if results else empty
    tail = np.concatenate([samples, late])
    window = max((r.window_s for r in results), default=0.0)
    latency_ms = {percentile_key(q): percentile(tail, q) * 1e3 for q in PERCENTILES}
    latency_ms["mean"] = float(tail.mean() * 1e3) if tail.size else float("nan")
    latency_ms["max"] = float(tail.max() * 1e3) if tail.size else float("nan")
    messages: list[str] = []
    for result in results:
        for message in result.error_messages:
            if message not in messages and len(messages) < 5:
                messages.append(message)
    return RunSummary(
        label=label,
        mode=mode,
        concurrency=concurrency,
        rate=rate,
        processes=len(results),
        duration_s=window,
        requests=int(samples.size),
        errors=sum(r.errors for r in results),
        throughput_rps=samples.size / window if window > 0 else 0.0,
        latency_ms=latency_ms,
        client_cpu=[r.cpu_s / r.window_s if r.window_s > 0 else 0.0 for r in results],
        first_errors=messages,
        max_send_lag_ms=max((r.max_send_lag_s for r in results), default=0.0) * 1e3,
        dropped=sum(r.dropped for r in results),
        batch_size=batch_size,
        late=int(late.size),
    )
