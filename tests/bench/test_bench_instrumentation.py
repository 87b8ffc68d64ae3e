"""The instrumentation pass: its verdicts, its arms' environments, and a short real run."""

from __future__ import annotations

import math

import pytest
from rich.console import Console

from conch_bench.conch_arm import ConchEndpoint
from conch_bench.instrumentation_pass import arm_env, instrumentation_pass
from conch_bench.instrumentation_report import (
    ARMS,
    BARE,
    HIGH,
    LOW,
    SHIPPED,
    TRACED,
    TRACED_ALL,
    InstrumentationResult,
    Point,
    instrumentation_markdown,
    instrumentation_ratios,
    verdict_lines,
)
from conch_bench.models import BenchModel
from conch_bench.ratios import Ratio
from tests.bench.conftest import options_from_cli

BARE_RPS, BARE_P50_MS = 1000.0, 20.0


def _point(arm: str, c: int, r: int, rps: float, p50_ms: float, errors: int = 0) -> Point:
    return Point(arm, c, r, int(rps), errors, rps, p50_ms, 3 * p50_ms, 500.0)


def _result(arm: str, rps: list[float], p50_ms: list[float], errors: int = 0) -> dict[str, Ratio]:
    """`arm` against a steady bare arm, one round per value; its ratios by name."""
    result = InstrumentationResult("tab", len(rps), 0.01)
    for r, (arm_rps, arm_p50) in enumerate(zip(rps, p50_ms, strict=True)):
        for c in (HIGH, LOW):
            result.points += [
                _point(BARE, c, r, BARE_RPS, BARE_P50_MS),
                _point(arm, c, r, arm_rps, arm_p50, errors if r == 0 else 0),
            ]
    return {r.name: r for r in instrumentation_ratios(result)}


def _tput(arm: str) -> str:
    return f"{arm} / {BARE}: req/s at c={HIGH}"


def _p50(arm: str, c: int = HIGH) -> str:
    return f"{arm} - {BARE}: p50 at c={c}"


@pytest.mark.parametrize("arm", [SHIPPED, TRACED])
def test_within_the_targets_passes(arm: str) -> None:
    ratios = _result(arm, [960.0] * 3, [BARE_P50_MS + 0.040] * 3)
    assert ratios[_tput(arm)].value == pytest.approx(0.96)
    assert ratios[_tput(arm)].passed is True
    assert ratios[_p50(arm)].value == pytest.approx(40.0)
    assert ratios[_p50(arm)].passed is True
    assert ratios[_p50(arm, LOW)].passed is None  # reported, not judged


@pytest.mark.parametrize("arm", [SHIPPED, TRACED])
def test_over_the_targets_fails(arm: str) -> None:
    ratios = _result(arm, [940.0] * 3, [BARE_P50_MS + 0.060] * 3)
    assert ratios[_tput(arm)].passed is False
    assert ratios[_p50(arm)].passed is False
    lines = verdict_lines(list(ratios.values()))
    assert f"FAIL instrumentation tab: {_tput(arm)} 0.940x (target ≥ 0.95x)" in lines
    assert f"FAIL instrumentation tab: {_p50(arm)} +60 µs (target ≤ +50 µs)" in lines


def test_the_median_of_the_rounds_is_judged_not_one_noisy_round() -> None:
    # One round hit by the machine's other work; the other two within the targets.
    ratios = _result(SHIPPED, [600.0, 970.0, 980.0], [BARE_P50_MS + 9.0, 20.01, 20.02])
    assert ratios[_tput(SHIPPED)].value == pytest.approx(0.97)
    assert ratios[_p50(SHIPPED)].value == pytest.approx(20.0)
    assert ratios[_tput(SHIPPED)].passed and ratios[_p50(SHIPPED)].passed


def test_errors_fail_the_verdict_however_fast() -> None:
    ratios = _result(TRACED, [1000.0] * 3, [BARE_P50_MS] * 3, errors=1)
    assert ratios[_tput(TRACED)].passed is False and ratios[_p50(TRACED)].passed is False


def test_every_request_traced_is_reported_not_judged() -> None:
    ratios = _result(TRACED_ALL, [500.0] * 3, [40.0] * 3)
    assert ratios[_tput(TRACED_ALL)].value == pytest.approx(0.5)
    assert ratios[_tput(TRACED_ALL)].passed is None and ratios[_p50(TRACED_ALL)].passed is None


def test_without_the_bare_arm_nothing_passes() -> None:
    result = InstrumentationResult("tab", 1, 0.01, [_point(SHIPPED, HIGH, 0, 990.0, 20.0)])
    ratios = {r.name: r for r in instrumentation_ratios(result)}
    assert math.isnan(ratios[_tput(SHIPPED)].value) and ratios[_tput(SHIPPED)].passed is False


def test_the_arms_differ_only_in_their_instrumentation() -> None:
    envs = {arm: arm_env(arm, "http://127.0.0.1:1") for arm in ARMS}
    assert envs[BARE]["CONCH_ACCESS_LOG"] == "false"
    assert all(envs[arm]["CONCH_ACCESS_LOG"] == "true" for arm in ARMS if arm != BARE)
    assert envs[BARE]["OTEL_SDK_DISABLED"] == envs[SHIPPED]["OTEL_SDK_DISABLED"] == "true"
    assert envs[TRACED]["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert envs[TRACED]["OTEL_TRACES_SAMPLER_ARG"] == "0.01"
    assert envs[TRACED_ALL]["OTEL_TRACES_SAMPLER"] == "always_on"
    assert envs[TRACED]["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == "http://127.0.0.1:1/v1/traces"


@pytest.mark.parametrize(("flag", "expected"), [([], True), (["--no-instrumentation"], False)])
def test_the_option_reaches_the_suite(
    flag: list[str], expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert options_from_cli(flag, monkeypatch).instrumentation is expected


@pytest.mark.slow
def test_a_short_pass_measures_every_arm_and_only_the_traced_ones_export(
    conch: ConchEndpoint, registrable: BenchModel
) -> None:
    notes: list[str] = []
    result = instrumentation_pass(
        Console(), registrable, conch, notes, rounds=1, duration_s=0.5, warmup_s=0.1,
        processes=1, trace_ratio=0.25,  # a few hundred requests: 1% might sample none
    )  # fmt: skip
    assert result is not None, notes
    measured = {(p.arm, p.concurrency, p.round) for p in result.points}
    assert measured == {(a, c, r) for a in ARMS for c in (HIGH, LOW) for r in range(1)}
    for point in result.points:
        assert point.errors == 0 and point.requests > 0, point
        assert point.cpu_us is not None and point.cpu_us > 0
    # Counted after the planes stopped, so every plane has flushed what it had.
    assert result.spans.get(BARE, 0) == 0 and result.spans.get(SHIPPED, 0) == 0
    assert result.spans[TRACED] > 0
    assert result.spans[TRACED_ALL] > result.spans[TRACED]  # every request vs a quarter
    assert set(result.spans) <= {TRACED, TRACED_ALL}  # nothing from an unnamed plane
    judged = [r for r in instrumentation_ratios(result) if r.passed is not None]
    assert len(judged) == 4 and all(not math.isnan(r.value) for r in judged)
    assert any(TRACED_ALL in line for line in instrumentation_markdown([result]))
