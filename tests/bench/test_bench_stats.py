"""Percentiles and merging on samples whose answers are known."""

from __future__ import annotations

import math

import numpy as np

from conch_bench.stats import WorkerResult, percentile, summarize


def test_nearest_rank_percentiles() -> None:
    samples = list(range(1, 101))  # 1..100
    assert percentile(samples, 50) == 50
    assert percentile(samples, 90) == 90
    assert percentile(samples, 99) == 99
    assert percentile(samples, 99.9) == 100
    assert percentile(samples, 100) == 100
    assert percentile([7.0], 99.9) == 7.0
    assert math.isnan(percentile([], 50))
    # Order does not matter.
    assert percentile(list(reversed(samples)), 50) == 50


def test_summarize_merges_processes_exactly() -> None:
    # Two processes, each half of 1..1000 ms: percentiles of the union, not averages.
    first = WorkerResult(np.arange(1, 1001, 2) / 1e3, 1, ["boom"], 2.0, 1.0)
    second = WorkerResult(np.arange(2, 1001, 2) / 1e3, 2, ["boom", "bang"], 2.0, 0.5)
    summary = summarize("x", [first, second], mode="closed", concurrency=8)
    assert summary.requests == 1000
    assert summary.errors == 3
    assert summary.first_errors == ["boom", "bang"]
    assert summary.throughput_rps == 500.0
    assert summary.latency_ms["p50"] == 500.0
    assert summary.latency_ms["p99"] == 990.0
    assert summary.latency_ms["p99.9"] == 999.0
    assert summary.latency_ms["max"] == 1000.0
    assert summary.client_cpu == [0.5, 0.25]
    assert not summary.client_saturated


def test_late_answers_count_in_the_tail_but_not_the_rate() -> None:
    on_time = np.full(99, 0.001)
    late = np.array([0.5])  # sent in the window, answered after the cut
    result = WorkerResult(on_time, 0, [], 1.0, 0.1, late_s=late)
    summary = summarize("x", [result], mode="closed", concurrency=1)
    assert summary.requests == 99 and summary.throughput_rps == 99.0
    assert summary.late == 1
    assert summary.latency_ms["max"] == 500.0
    assert summary.latency_ms["p99.9"] == 500.0  # dropping it would have said 1 ms
