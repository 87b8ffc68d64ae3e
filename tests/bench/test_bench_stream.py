"""The stream row: its verdict, and a short pass on the real stack where every row's
result comes back once and in order, over HTTP and over the WebSocket."""

from __future__ import annotations

import numpy as np
import pytest
from rich.console import Console

from conch_bench.conch_arm import ConchEndpoint
from conch_bench.models import BenchModel
from conch_bench.ratios import ArmRun
from conch_bench.stats import WorkerResult, summarize
from conch_bench.stream_load import StreamRun, feature_rows, run_stream
from conch_bench.stream_pass import JUDGED_ARM, PREDICT_ARM, STREAM_ARMS, stream_pass, stream_ratios
from tests.bench.conftest import FEATURES, options_from_cli

JUDGED = f"stream rows/s: {JUDGED_ARM} / {PREDICT_ARM}"


def _run(arm: str, per_s: float, *, rows: int = 1, errors: int = 0) -> ArmRun:
    result = WorkerResult(np.full(int(per_s), 0.002), errors, [], 1.0, 0.2)
    return ArmRun(
        "tab", arm, summarize(arm, [result], mode="closed", concurrency=16, batch_size=rows)
    )


@pytest.mark.parametrize(("stream_rows_per_s", "passed"), [(3000, True), (2999, False)])
def test_the_judged_stream_row_wants_three_times_the_predict_rows(
    stream_rows_per_s: float, passed: bool
) -> None:
    runs = [_run(PREDICT_ARM, 1000), _run(JUDGED_ARM, stream_rows_per_s)]
    ratios = {r.name: r for r in stream_ratios(runs)}
    judged = ratios[JUDGED]
    assert judged.value == pytest.approx(stream_rows_per_s / 1000)
    assert (judged.passed, judged.target) == (passed, "≥ 3.00x")
    unjudged = [r for r in ratios.values() if r.name != JUDGED]
    assert len(unjudged) == len(STREAM_ARMS) - 1 and all(r.passed is None for r in unjudged)


def test_errors_or_a_missing_judged_arm_fail_the_row() -> None:
    errors = stream_ratios([_run(PREDICT_ARM, 1000), _run(JUDGED_ARM, 9000, errors=2)])
    assert next(r for r in errors if r.name == JUDGED).passed is False
    missing = stream_ratios([_run(PREDICT_ARM, 1000)])
    assert next(r for r in missing if r.name == JUDGED).passed is False
    batched = stream_ratios([_run(PREDICT_ARM, 1000), _run(JUDGED_ARM, 100, rows=64)])
    assert next(r for r in batched if r.name == JUDGED).value == pytest.approx(6.4)  # rows/s


def test_without_a_control_plane_the_pass_is_skipped_with_a_note() -> None:
    notes: list[str] = []
    model = BenchModel("tabular", "absent", onnx_path=None, rest_template="", features=4)
    assert stream_pass(Console(), model, None, notes, duration_s=1) == []
    assert notes == [
        "stream pass for tabular: skipped, no control plane (none started, no --conch-url)"
    ]


@pytest.mark.slow
def test_a_short_pass_reads_every_rows_result_once_and_in_order(
    conch: ConchEndpoint, registrable: BenchModel
) -> None:
    notes: list[str] = []
    runs = stream_pass(Console(), registrable, conch, notes, duration_s=1.0, senders=4)
    by_arm = {r.arm: r.summary for r in runs}
    assert set(by_arm) == {PREDICT_ARM, *STREAM_ARMS}, notes
    for arm, summary in by_arm.items():
        assert summary.errors == 0, (arm, summary.first_errors)  # out of order is an error
        assert summary.requests > 0
    for arm in STREAM_ARMS:
        # Every row sent came back: the results read equal the rows the sends carried.
        summary = by_arm[arm]
        read = next(n for n in notes if n.startswith(f"stream pass for tabular: {arm}:"))
        assert int(read.split(": ")[-1].split()[0]) == summary.requests * summary.batch_size
    assert any(r.name == JUDGED for r in stream_ratios(runs))


@pytest.mark.slow
def test_concurrent_sends_never_make_the_reader_skip_a_row(
    conch: ConchEndpoint, registrable: BenchModel
) -> None:
    """Sixteen senders on one stream, ids accepted out of order: still every result."""
    model_id = conch.model_ids[registrable.key]
    run = StreamRun(conch.url, conch.api_key, model_id, feature_rows(FEATURES), 16, 0.5)
    summary, results = run_stream(run, "skip-check")
    assert summary.errors == 0, summary.first_errors
    assert results == summary.requests > 0


@pytest.mark.parametrize(("flag", "expected"), [([], True), (["--no-stream"], False)])
def test_the_stream_option_reaches_the_suite(
    flag: list[str], expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert options_from_cli(flag, monkeypatch).streams is expected
