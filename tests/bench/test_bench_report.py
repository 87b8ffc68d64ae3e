"""Ratios, results.json and BENCHMARKS.md from hand-made runs (no servers)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from conch_bench import report
from conch_bench.machine import describe_machine
from conch_bench.ratios import ArmRun, compute_ratios
from conch_bench.stats import WorkerResult, summarize


def _run(model: str, arm: str, concurrency: int, latency_ms: float, count: int) -> ArmRun:
    samples = np.full(count, latency_ms / 1e3)
    result = WorkerResult(samples, 0, [], 1.0, 0.2)
    return ArmRun(model, arm, summarize(arm, [result], mode="closed", concurrency=concurrency))


@pytest.fixture
def runs() -> list[ArmRun]:
    return [
        _run("mlp", "triton-grpc", 1, 1.0, 1000),
        _run("mlp", "triton-grpc", 64, 8.0, 8000),
        _run("mlp", "conch-rest", 1, 1.5, 660),
        _run("mlp", "conch-rest", 64, 16.0, 4000),
        _run("mlp", "conch-rest-nolimit", 1, 1.4, 700),
        _run("mlp", "conch-rest-nolimit", 64, 12.8, 5000),
        _run("mlp", "triton-grpc-nobatch", 64, 32.0, 2000),
        _run("mlp", "baseline-tuned", 64, 64.0, 1000),
    ]


def test_ratios_come_from_pairs_of_arms(runs: list[ArmRun]) -> None:
    ratios = {(r.model, r.name): r for r in compute_ratios(runs)}
    assert ratios[("mlp", "Conch REST over gRPC: added p50")].value == pytest.approx(500.0)
    assert ratios[("mlp", "max throughput conch-rest / triton-grpc")].value == pytest.approx(0.5)
    assert ratios[("mlp", "rate limit: added p50")].value == pytest.approx(100.0)
    loss = ratios[("mlp", "rate limit: throughput loss at saturation")]
    assert loss.value == pytest.approx(20.0) and loss.unit == "%"
    batching = ratios[("mlp", "triton-grpc / triton-grpc-nobatch: throughput at c=64")]
    assert batching.value == pytest.approx(4.0)
    nobatch_p99 = ratios[("mlp", "triton-grpc / triton-grpc-nobatch: p99 at c=64")]
    assert nobatch_p99.value == pytest.approx(0.25)
    tuned = ratios[("mlp", "conch-rest / baseline-tuned: throughput at c=64")]
    assert tuned.value == pytest.approx(4.0)


def test_reports_round_trip_and_show_deltas(runs: list[ArmRun], tmp_path: Path) -> None:
    ratios = compute_ratios(runs)
    document = report.results_document(
        runs,
        ratios,
        machine=describe_machine(),
        settings={"concurrencies": (1, 64), "duration_s": 1.0},
        command="conch bench suite --quick",
        created_at="2026-01-01T00:00:00+00:00",
        notes=["a note"],
    )
    document["bare_torch"] = [
        {
            "batch_size": 8,
            "calls_per_s": 100.0,
            "samples_per_s": 800.0,
            "p50_ms": 9.5,
            "p99_ms": 12.0,
            "device": "cpu",
        }
    ]
    results = tmp_path / "bench" / "results.json"
    report.write_json(results, document)
    assert json.loads(results.read_text())["runs"][0]["latency_ms"]["p50"] == pytest.approx(1.0)
    loaded = report.load_runs(results)
    assert loaded is not None and [r.summary for r in loaded] == [r.summary for r in runs]
    assert report.load_runs(tmp_path / "missing.json") is None

    faster = [_run("mlp", "triton-grpc", 1, 0.5, 2000)]
    deltas = report.delta_table(loaded, faster)
    assert deltas is not None
    console = Console(record=True, width=120)
    console.print(deltas)
    text = console.export_text()  # export clears the record: read it once
    assert "+100.0%" in text and "-50.0%" in text

    markdown = tmp_path / "BENCHMARKS.md"
    report.write_markdown(markdown, document, runs, ratios, [tmp_path / "bench" / "mlp.png"])
    text = markdown.read_text()
    assert "conch bench suite --quick" in text
    assert "| mlp | Conch REST over gRPC: added p50 | +500 µs |  |" in text
    assert "| conch-rest | 64 | 4,000 | 16.00 |" in text
    assert "| 0 | 0 | python |" in text  # the late and client columns
    assert "![mlp](bench/mlp.png)" in text
    assert "- concurrencies: 1, 64" in text
    assert "- a note" in text
    assert "| 8 | 100 | 800 | 9.500 | 12.000 |" in text
