"""The priority row: its verdict, the `__priority` twin it runs on, two wrk side by side."""

from __future__ import annotations

import shutil
from pathlib import Path

import joblib
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from rich.console import Console
from sklearn.linear_model import LogisticRegression

from conch_bench.models import (
    BenchModel,
    add_priority_variant,
    build_bench_models,
    export_tabular,
    read_config,
)
from conch_bench.native import WRK_INSTALL_HINT, HttpRequestSpec, WrkError, request_spec
from conch_bench.priority import Stream, priority_pass, run_side_by_side
from conch_bench.ratios import (
    PRIORITY_LOW_ARM,
    PRIORITY_URGENT_ARM,
    ArmRun,
    Ratio,
    compute_ratios,
)
from conch_bench.stats import WorkerResult, summarize
from conch_bench.targets import triton_target
from conch_embedded.process import free_port
from conch_embedded.triton_server import EmbeddedTriton
from conch_manifest.layout import load_manifest, verify_files
from conch_manifest.priorities import DEFAULT_PRIORITY_LEVEL, PRIORITY_LEVEL_COUNT, PRIORITY_LEVELS
from exporters.session import ExportSession
from exporters.sklearn_exporter import export_sklearn

NAME = "priority: urgent p99 / low p99 at saturation"
needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed")


def _run(arm: str, connections: int, p99_ms: float, errors: int = 0) -> ArmRun:
    result = WorkerResult(np.full(100, p99_ms / 1e3), errors, [], 1.0, 0.2)
    summary = summarize(arm, [result], mode="closed", concurrency=connections)
    summary.client = "wrk"
    return ArmRun("tab", arm, summary)


def _priority_ratio(low_ms: float, urgent_ms: float, urgent_errors: int = 0) -> Ratio:
    runs = [
        _run(PRIORITY_LOW_ARM, 48, low_ms),
        _run(PRIORITY_URGENT_ARM, 8, urgent_ms, urgent_errors),
    ]
    return next(r for r in compute_ratios(runs) if r.name == NAME)


def test_urgent_at_under_half_of_lows_p99_passes() -> None:
    ratio = _priority_ratio(low_ms=40.0, urgent_ms=12.0)
    assert ratio.value == pytest.approx(0.3) and ratio.target == "≤ 0.50x"
    assert ratio.passed is True
    assert "8 connections" in ratio.detail and "48 connections" in ratio.detail


@pytest.mark.parametrize("urgent_ms", [21.0, 40.0, 80.0])  # just over the bound, FIFO, worse
def test_urgent_not_overtaking_fails(urgent_ms: float) -> None:
    ratio = _priority_ratio(low_ms=40.0, urgent_ms=urgent_ms)
    assert ratio.value == pytest.approx(urgent_ms / 40.0)
    assert ratio.passed is False


def test_errors_fail_the_verdict_however_fast_they_came_back() -> None:
    ratio = _priority_ratio(low_ms=40.0, urgent_ms=2.0, urgent_errors=5)
    assert ratio.passed is False and "5 errors" in ratio.detail


def test_without_both_arms_there_is_no_priority_ratio() -> None:
    runs = [_run(PRIORITY_LOW_ARM, 48, 40.0)]
    assert all(r.name != NAME for r in compute_ratios(runs))


def test_the_twin_config_declares_the_levels_and_keeps_the_rest(tmp_path: Path) -> None:
    models = build_bench_models(
        tmp_path, use_demo=False, keys=("tabular",), priority_keys=("tabular",)
    )
    model = models[0]
    assert model.priority_name == f"{model.triton_name}__priority"
    text = (tmp_path / model.priority_name / "config.pbtxt").read_text()
    assert f"priority_levels: {PRIORITY_LEVEL_COUNT}" in text
    assert f"default_priority_level: {DEFAULT_PRIORITY_LEVEL}" in text
    source, twin = (
        read_config(tmp_path / model.triton_name),
        read_config(tmp_path / model.priority_name),
    )
    assert twin.name == model.priority_name
    assert source.dynamic_batching.priority_levels == 0  # the source stays as exported
    expected = source.dynamic_batching.max_queue_delay_microseconds
    assert twin.dynamic_batching.max_queue_delay_microseconds == expected
    assert list(twin.input) == list(source.input) and twin.max_batch_size == source.max_batch_size
    original = tmp_path / model.triton_name / "1" / "model.onnx"
    assert (
        tmp_path / model.priority_name / "1" / "model.onnx"
    ).stat().st_ino == original.stat().st_ino


def test_no_twin_unless_asked(tmp_path: Path) -> None:
    (model,) = build_bench_models(tmp_path, use_demo=False, keys=("tabular",))
    assert model.priority_name is None
    assert not (tmp_path / f"{model.triton_name}__priority").exists()


@pytest.mark.slow
def test_an_exported_models_twin_has_a_manifest_conch_can_register(
    model_repository: Path, tmp_path: Path
) -> None:
    x = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    joblib.dump(LogisticRegression().fit(x, x[:, 0] > 0), tmp_path / "model.joblib")
    with ExportSession(model_repository) as session:
        exported = export_sklearn(
            tmp_path / "model.joblib",
            name="bench-priority-twin",
            repository=model_repository,
            sample=x[:8],
            session=session,
        )
    source = load_manifest(model_repository, exported.triton_name)
    twin_name = add_priority_variant(model_repository, exported.triton_name)
    twin = load_manifest(model_repository, twin_name)
    # What registration checks (registry/service.py): its own name, intact files.
    assert twin.triton_name == twin_name
    assert verify_files(model_repository, twin) == []
    assert twin.files["config.pbtxt"] != source.files["config.pbtxt"]
    assert load_manifest(model_repository, exported.triton_name) == source  # not written through
    assert verify_files(model_repository, source) == []


@pytest.mark.slow
def test_triton_serves_the_twin_at_every_level(
    model_repository: Path, triton: EmbeddedTriton
) -> None:
    model = export_tabular(model_repository, name="bench_test_priority_tabular")
    twin = add_priority_variant(model_repository, model.triton_name)
    rows = np.ones((1, model.features), dtype=np.float32)
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        client.load_model(twin)
        for level in PRIORITY_LEVELS.values():
            infer_input = grpcclient.InferInput("X", list(rows.shape), "FP32")
            infer_input.set_data_from_numpy(rows)
            answer = client.infer(twin, [infer_input], priority=level)
            assert answer.as_numpy("probabilities").shape == (1, 2)
    finally:
        client.unload_model(twin)
        client.close()


@pytest.mark.slow
@needs_wrk
def test_two_wrk_run_side_by_side_each_with_its_own_numbers(
    triton: EmbeddedTriton, bench_tabular: BenchModel
) -> None:
    spec = request_spec(triton_target("http", triton.http_url, bench_tabular.triton_name))
    assert spec is not None
    streams = [Stream("many", spec, 6), Stream("few", spec, 2)]
    many, few = run_side_by_side(streams, duration_s=1, warmup_s=0, threads=2)
    assert (many.label, many.concurrency, few.label, few.concurrency) == ("many", 6, "few", 2)
    for summary in (many, few):
        assert summary.errors == 0, summary.first_errors
        assert summary.requests > 10 and summary.client == "wrk"
        assert 0 < summary.latency_ms["p50"] <= summary.latency_ms["p99"]
        assert summary.duration_s == pytest.approx(1.0, abs=0.2)
    assert few.processes == 2 and len(few.client_cpu) == 2


@needs_wrk
def test_a_wrk_that_cannot_connect_is_an_error_not_a_result() -> None:
    spec = HttpRequestSpec(f"http://127.0.0.1:{free_port()}/absent", (b"{}",))  # nobody listens
    with pytest.raises(WrkError):
        run_side_by_side(
            [Stream("a", spec, 1), Stream("b", spec, 1)], duration_s=1, warmup_s=0, threads=1
        )


def test_without_wrk_the_pass_is_skipped_with_the_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (model,) = build_bench_models(
        tmp_path, use_demo=False, keys=("tabular",), priority_keys=("tabular",)
    )
    monkeypatch.setenv("PATH", str(tmp_path))  # no wrk on it
    notes: list[str] = []
    assert priority_pass(Console(), model, None, notes, duration_s=1, warmup_s=0, threads=1) == []
    assert notes == [f"priority pass for tabular: skipped, {WRK_INSTALL_HINT}"]
