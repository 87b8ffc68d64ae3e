"""Triton's inference statistics (JSON of the protobuf: int64 arrive as strings) summed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from control_plane.lifecycle.schemas import BatchSizeCount

_NS_PER_MS = 1_000_000


def _int(value: Any) -> int:
    return int(value or 0)


def _duration(stats: dict[str, Any], key: str) -> tuple[int, int]:
    """(count, total ns) of one inference_stats entry."""
    entry = stats.get(key) or {}
    return _int(entry.get("count")), _int(entry.get("ns"))


def _avg_ms(count: int, ns: int) -> float | None:
    return round(ns / count / _NS_PER_MS, 3) if count else None


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    """Sum every version of a model; averages in milliseconds."""
    success = fail = executions = 0
    success_ns = queue_ns = compute_ns = queue_n = compute_n = 0
    batches: dict[int, int] = {}
    last_ms = 0
    for model in raw.get("model_stats", []):
        stats = model.get("inference_stats") or {}
        count, ns = _duration(stats, "success")
        success += count
        success_ns += ns
        fail += _duration(stats, "fail")[0]
        n, ns = _duration(stats, "queue")
        queue_n, queue_ns = queue_n + n, queue_ns + ns
        for part in ("compute_input", "compute_infer", "compute_output"):
            n, ns = _duration(stats, part)
            compute_ns += ns
            if part == "compute_infer":
                compute_n += n
        executions += _int(model.get("execution_count"))
        last_ms = max(last_ms, _int(model.get("last_inference")))
        for batch in model.get("batch_stats", []):
            size = _int(batch.get("batch_size"))
            batches[size] = batches.get(size, 0) + _duration(batch, "compute_infer")[0]
    return {
        "request_count": success + fail,
        "success_count": success,
        "error_count": fail,
        "execution_count": executions,
        "avg_latency_ms": _avg_ms(success, success_ns),
        "avg_queue_ms": _avg_ms(queue_n, queue_ns),
        "avg_compute_ms": _avg_ms(compute_n, compute_ns),
        "queue_ms_total": queue_ns / _NS_PER_MS,
        "compute_ms_total": compute_ns / _NS_PER_MS,
        "batch_sizes": [BatchSizeCount(batch_size=s, count=c) for s, c in sorted(batches.items())],
        "last_inference_at": datetime.fromtimestamp(last_ms / 1000, UTC) if last_ms else None,
    }
