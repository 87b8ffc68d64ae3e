"""Ratios at a fixed concurrency, the client checks that can fail, the p50 target."""

from __future__ import annotations

import numpy as np
import pytest

from conch_bench.ratios import (
    CLIENT_CHECK_ARM,
    ENGINE_PYTHON_ARM,
    HTTP_CHECK_ARM,
    V2_PYTHON_ARM,
    ArmRun,
    client_verdict,
    compute_ratios,
)
from conch_bench.stats import RunSummary, WorkerResult, summarize


def _summary(
    arm: str, concurrency: int, latency_ms: float, count: int, client: str = "python"
) -> RunSummary:
    result = WorkerResult(np.full(count, latency_ms / 1e3), 0, [], 1.0, 0.2)
    summary = summarize(arm, [result], mode="closed", concurrency=concurrency)
    summary.client = client
    return summary


def _run(arm: str, c: int, latency_ms: float, count: int, client: str = "python") -> ArmRun:
    return ArmRun("tab", arm, _summary(arm, c, latency_ms, count, client))


def _by_name(runs: list[ArmRun]) -> dict[str, object]:
    return {r.name: r for r in compute_ratios(runs)}


def test_throughput_ratios_come_at_a_fixed_concurrency_too() -> None:
    runs = [
        _run("triton-grpc", 16, 1.0, 9000),  # best at 16
        _run("triton-grpc", 64, 8.0, 8000),
        _run("conch-rest", 16, 4.0, 3000),
        _run("conch-rest", 64, 16.0, 4000),  # best at 64
    ]
    ratios = _by_name(runs)
    best = ratios["max throughput conch-rest / triton-grpc"]
    assert best.value == pytest.approx(4000 / 9000)  # type: ignore[attr-defined]
    fixed = ratios["conch-rest / triton-grpc: throughput at c=64"]
    assert fixed.value == pytest.approx(0.5)  # type: ignore[attr-defined]
    assert "conch-rest / triton-grpc: p99 at c=64" in ratios


def test_the_http_client_check_fails_when_the_clients_disagree() -> None:
    wrk = _run("triton-http", 64, 3.0, 20000, client="wrk")
    python_limited = _run(HTTP_CHECK_ARM, 64, 12.0, 5000)
    check = _by_name([wrk, python_limited])[
        "client check: triton-http through Python / through wrk"
    ]
    assert check.passed is False  # type: ignore[attr-defined]
    assert "the python client limited" in check.detail  # type: ignore[attr-defined]

    agreeing = _run(HTTP_CHECK_ARM, 64, 3.1, 19500)
    check = _by_name([wrk, agreeing])["client check: triton-http through Python / through wrk"]
    assert check.passed is True  # type: ignore[attr-defined]


def test_verdicts_name_the_limiting_client() -> None:
    python = _summary("a", 64, 1.0, 5000)
    wrk = _summary("a", 64, 1.0, 20000, client="wrk")
    assert client_verdict(python, wrk, two_sided=True) == (False, "the python client limited a")
    assert client_verdict(wrk, python, two_sided=True)[0] is False
    assert client_verdict(wrk, python, two_sided=False)[0] is True  # fewer: not a client limit
    assert client_verdict(wrk, _summary("a", 64, 1.0, 21000), two_sided=True)[0] is True


def test_more_grpc_client_processes_gaining_throughput_fails_the_check() -> None:
    runs = [_run("triton-grpc", 64, 8.0, 8000), _run(CLIENT_CHECK_ARM, 64, 6.0, 10000)]
    check = _by_name(runs)["client check: gRPC throughput with 2x client processes"]
    assert check.passed is False  # type: ignore[attr-defined]


def test_conch_p50_at_one_against_the_tuned_baseline() -> None:
    runs = [_run("conch-rest", 1, 1.8, 500), _run("baseline-tuned", 1, 1.0, 900)]
    ratio = _by_name(runs)["conch-rest / baseline-tuned: p50 at concurrency 1"]
    assert ratio.value == pytest.approx(1.8)  # type: ignore[attr-defined]
    assert ratio.passed is False and ratio.target == "≤ 1.50x"  # type: ignore[attr-defined]
    assert "the baseline wins by 800 µs" in ratio.detail  # type: ignore[attr-defined]


def test_open_loop_runs_do_not_pose_as_closed_loop_points() -> None:
    result = WorkerResult(np.full(100, 0.002), 0, [], 1.0, 0.1)
    open_conch = summarize("c", [result], mode="open", concurrency=0, rate=100.0)
    open_base = summarize("b", [result], mode="open", concurrency=0, rate=100.0)
    runs = [
        _run("conch-rest", 1, 2.0, 100),
        ArmRun("tab", "conch-rest", open_conch),
        ArmRun("tab", "baseline-tuned", open_base),
    ]
    ratios = _by_name(runs)
    assert ratios["conch-rest / baseline-tuned: p99 open-loop at 100/s"].value == pytest.approx(1.0)  # type: ignore[attr-defined]
    assert not any("p50 at concurrency" in n for n in ratios)  # no closed baseline point


def test_doors_onto_the_one_core_are_judged_within_ten_percent() -> None:
    runs = [
        _run("conch-rest", 1, 1.00, 1000),
        _run("conch-rest", 64, 16.0, 4000),
        _run(ENGINE_PYTHON_ARM, 1, 1.05, 950),  # within 10%
        _run(ENGINE_PYTHON_ARM, 64, 16.0, 3900),
        _run(V2_PYTHON_ARM, 1, 1.30, 770),  # 24% slower than the engine door
        _run(V2_PYTHON_ARM, 64, 16.0, 4000),
        _run("conch-engine", 1, 0.90, 1100, client="wrk"),
        _run("conch-engine", 64, 12.0, 5000, client="wrk"),
        _run("conch-v2", 1, 0.92, 1080, client="wrk"),
        _run("conch-v2", 64, 14.0, 4000, client="wrk"),  # 0.80x the engine door's
    ]
    ratios = _by_name(runs)
    close = ratios[f"{ENGINE_PYTHON_ARM} / conch-rest: p50 at c=1"]
    assert close.value == pytest.approx(1.05) and close.passed is True  # type: ignore[attr-defined]
    far = ratios[f"{V2_PYTHON_ARM} / {ENGINE_PYTHON_ARM}: p50 at c=1"]
    assert far.passed is False  # type: ignore[attr-defined]
    saturated = ratios[f"{V2_PYTHON_ARM} / {ENGINE_PYTHON_ARM}: max throughput"]
    assert saturated.passed is True  # type: ignore[attr-defined]
    # wrk against wrk: never against a door the Python client drove.
    native = ratios["conch-v2 / conch-engine: max throughput"]
    assert native.value == pytest.approx(0.80) and native.passed is False  # type: ignore[attr-defined]
    assert ratios["conch-v2 / conch-engine: p50 at c=1"].passed is True  # type: ignore[attr-defined]
    assert not any(name.startswith("conch-engine / ") for name in ratios)


def test_the_v2_door_is_reported_against_tritons_own_http_endpoint() -> None:
    runs = [
        _run("triton-http", 1, 0.60, 1600, client="wrk"),
        _run("triton-http", 64, 5.0, 12000, client="wrk"),
        _run("conch-v2", 1, 1.10, 900, client="wrk"),
        _run("conch-v2", 64, 20.0, 3000, client="wrk"),
    ]
    ratios = _by_name(runs)
    added = ratios["v2 door over Triton HTTP: added p50"]
    assert added.value == pytest.approx(500)  # type: ignore[attr-defined]  # µs
    best = ratios["max throughput conch-v2 / triton-http"]
    assert best.value == pytest.approx(0.25)  # type: ignore[attr-defined]
