"""The async rows: their verdicts, the task client, and the pass on the real stack."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from rich.console import Console

from conch_bench.async_load import TaskLoad, queue_seconds, run_tasks
from conch_bench.async_pass import ASYNC_IN_FLIGHT, async_pass
from conch_bench.conch_arm import ConchEndpoint
from conch_bench.models import BenchModel
from conch_bench.ratios import (
    ASYNC_ARM,
    ASYNC_QUEUE_ARM,
    ASYNC_ROWS,
    ASYNC_ROWS_ARM,
    ENGINE_ARM,
    ENGINE_PYTHON_ARM,
    ENGINE_ROWS_ARM,
    ArmRun,
    Ratio,
    compute_ratios,
)
from conch_bench.report import ratio_table
from conch_bench.stats import WorkerResult, summarize
from tests.bench.conftest import options_from_cli

THROUGHPUT = "async / sync: max throughput, 1-row tasks"
LATENCY = "async queue→completion p50 - sync p50 at c=1"
SEEN = "async submit→result seen p50 - sync p50 at c=1"


def _run(
    arm: str, c: int, *, per_s: float, p50_ms: float, errors: int = 0, rows: int = 1
) -> ArmRun:
    """`per_s` requests (or tasks) in a one-second window, every one taking `p50_ms`."""
    result = WorkerResult(np.full(int(per_s), p50_ms / 1e3), errors, [], 1.0, 0.2)
    summary = summarize(arm, [result], mode="closed", concurrency=c, batch_size=rows)
    return ArmRun("tab", arm, summary)


def _ratios(*runs: ArmRun) -> dict[str, Ratio]:
    return {r.name: r for r in compute_ratios(list(runs))}


def _sync(best_per_s: float = 3000.0, p50_ms: float = 1.8) -> list[ArmRun]:
    return [
        _run(ENGINE_ARM, 1, per_s=500, p50_ms=p50_ms),
        _run(ENGINE_ARM, 64, per_s=best_per_s, p50_ms=20.0),  # the best point
    ]


@pytest.mark.parametrize(("tasks_per_s", "passed"), [(1500, True), (2400, True), (1400, False)])
def test_async_throughput_is_judged_against_the_best_sync_point(
    tasks_per_s: float, passed: bool
) -> None:
    ratio = _ratios(*_sync(), _run(ASYNC_ARM, 256, per_s=tasks_per_s, p50_ms=90.0))[THROUGHPUT]
    assert ratio.value == pytest.approx(tasks_per_s / 3000)
    assert (ratio.passed, ratio.target) == (passed, "≥ 0.50x")
    assert "256 in flight" in ratio.detail and "(c=64)" in ratio.detail


def test_errors_fail_the_throughput_however_many_tasks_completed() -> None:
    tasks = _run(ASYNC_ARM, 256, per_s=2900, p50_ms=90.0, errors=3)
    ratio = _ratios(*_sync(), tasks)[THROUGHPUT]
    assert ratio.passed is False and "3 errors" in ratio.detail


def test_a_pass_where_no_task_completed_fails_rather_than_vanishing() -> None:
    nothing = _run(ASYNC_ARM, 256, per_s=0, p50_ms=1.0, errors=40)
    ratio = _ratios(*_sync(), nothing)[THROUGHPUT]
    assert (ratio.value, ratio.passed) == (0.0, False)
    assert "no task completed" in ratio.detail


def test_without_the_sync_door_there_is_no_async_verdict() -> None:
    ratios = _ratios(_run(ASYNC_ARM, 256, per_s=900, p50_ms=90.0))
    assert THROUGHPUT not in ratios and LATENCY not in ratios


@pytest.mark.parametrize(("queue_ms", "passed"), [(4.0, True), (6.8, True), (6.9, False)])
def test_queue_to_completion_at_low_load_is_judged_over_the_sync_p50(
    queue_ms: float, passed: bool
) -> None:
    queue = _run(ASYNC_QUEUE_ARM, 1, per_s=200, p50_ms=queue_ms)
    ratio = _ratios(*_sync(p50_ms=1.8), queue)[LATENCY]
    assert ratio.value == pytest.approx(queue_ms - 1.8)
    assert (ratio.unit, ratio.target, ratio.passed) == ("ms", "≤ 5 ms", passed)


def test_errors_fail_the_latency_verdict() -> None:
    queue = _run(ASYNC_QUEUE_ARM, 1, per_s=200, p50_ms=2.0, errors=1)
    assert _ratios(*_sync(), queue)[LATENCY].passed is False


def test_what_the_polling_client_saw_is_reported_against_the_python_sync_client() -> None:
    runs = [
        *_sync(p50_ms=1.8),
        _run(ENGINE_PYTHON_ARM, 1, per_s=400, p50_ms=2.5),
        _run(ASYNC_QUEUE_ARM, 1, per_s=100, p50_ms=4.0),
        _run(ASYNC_ARM, 1, per_s=100, p50_ms=9.0),
    ]
    seen = _ratios(*runs)[SEEN]
    assert seen.value == pytest.approx(9.0 - 2.5) and seen.passed is None
    assert ENGINE_PYTHON_ARM in seen.detail
    assert _ratios(*runs)[LATENCY].value == pytest.approx(4.0 - 1.8)  # wrk's, the tighter


def test_batch_amortisation_is_in_rows_per_second() -> None:
    runs = [
        _run(ASYNC_ARM, 256, per_s=1000, p50_ms=90.0),
        _run(ASYNC_ROWS_ARM, 256, per_s=300, p50_ms=300.0, rows=ASYNC_ROWS),
        _run(ENGINE_ROWS_ARM, 64, per_s=400, p50_ms=150.0, rows=ASYNC_ROWS),
    ]
    ratios = _ratios(*runs)
    versus_sync = ratios[f"async / sync: rows/s, {ASYNC_ROWS}-row tasks"]
    assert versus_sync.value == pytest.approx(0.75) and versus_sync.passed is None
    assert "30,000 rows/s" in versus_sync.detail and "40,000 rows/s" in versus_sync.detail
    amortised = ratios[f"async batch amortisation: rows/s, {ASYNC_ROWS}-row / 1-row tasks"]
    assert amortised.value == pytest.approx(30.0)


def test_the_ratio_table_shows_milliseconds_and_the_failed_check() -> None:
    ratios = list(_ratios(*_sync(), _run(ASYNC_QUEUE_ARM, 1, per_s=100, p50_ms=9.0)).values())
    console = Console(record=True, width=250)
    console.print(ratio_table(ratios))
    text = console.export_text()
    assert "+7.20 ms" in text and "FAIL (≤ 5 ms)" in text


def test_a_tasks_own_timestamps_give_its_queue_to_completion_time() -> None:
    task = {"created_at": "2026-01-02T03:04:05.120Z", "completed_at": "2026-01-02T03:04:06.003Z"}
    assert queue_seconds(task) == pytest.approx(0.883)


def test_without_a_control_plane_the_pass_is_skipped_with_a_note(
    bench_model_without_server: BenchModel,
) -> None:
    notes: list[str] = []
    runs = async_pass(
        Console(), bench_model_without_server, None, notes,
        duration_s=1, warmup_s=0, processes=1, engine_concurrency=1,
    )  # fmt: skip
    assert runs == []
    assert notes == [
        "async pass for tabular: skipped, no control plane (none started, no --conch-url)"
    ]


@pytest.mark.parametrize(("flag", "expected"), [([], True), (["--no-async"], False)])
def test_the_async_option_reaches_the_suite(
    flag: list[str], expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert options_from_cli(flag, monkeypatch).async_predictions is expected


@pytest.fixture
def bench_model_without_server() -> BenchModel:
    return BenchModel("tabular", "absent", onnx_path=None, rest_template="", features=4)


@pytest.mark.slow
def test_the_pass_measures_every_async_row_on_the_real_stack(
    conch: ConchEndpoint, registrable: BenchModel
) -> None:
    notes: list[str] = []
    runs = async_pass(
        Console(), registrable, conch, notes,
        duration_s=1.0, warmup_s=0.3, processes=2, engine_concurrency=8,
    )  # fmt: skip
    by_arm = {(r.arm, r.summary.concurrency): r.summary for r in runs}
    assert set(by_arm) == {
        (ASYNC_ARM, 1), (ASYNC_QUEUE_ARM, 1), (ASYNC_ARM, ASYNC_IN_FLIGHT),
        (ASYNC_QUEUE_ARM, ASYNC_IN_FLIGHT), (ASYNC_ROWS_ARM, ASYNC_IN_FLIGHT), (ENGINE_ROWS_ARM, 8),
    }  # fmt: skip
    for summary in by_arm.values():
        assert summary.errors == 0, summary.first_errors
        assert summary.requests > 0 and summary.throughput_rps > 0
    low_seen, low_queue = by_arm[(ASYNC_ARM, 1)], by_arm[(ASYNC_QUEUE_ARM, 1)]
    assert low_queue.requests == low_seen.requests  # the same tasks, two clocks
    # The task's own queue -> completion is inside what the client waited for it.
    assert low_queue.latency_ms["p50"] <= low_seen.latency_ms["p50"]
    assert by_arm[(ASYNC_ROWS_ARM, ASYNC_IN_FLIGHT)].batch_size == ASYNC_ROWS
    assert any("GETs per task" in note for note in notes), notes
    judged = _ratios(*runs, *(replace(r, model="tabular") for r in _sync()))
    assert THROUGHPUT in judged and LATENCY in judged


@pytest.mark.slow
def test_a_refused_submit_is_a_measured_error_not_a_crash(
    conch: ConchEndpoint, registrable: BenchModel
) -> None:
    target = conch.engine_target(registrable, conch.url, 1)
    wrong_key = replace(
        target, url=f"{target.url}/async", headers={"X-API-Key": "conch_wrong"}, expect_status=202
    )
    point = run_tasks(TaskLoad(wrong_key, 2, duration_s=0.5, warmup_s=0.0), label="refused")
    assert point.seen.requests == 0 and point.seen.errors > 0
    assert point.seen.first_errors[0].startswith("DoorError: submit: HTTP 401")
