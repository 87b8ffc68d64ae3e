"""The instrumentation pass's numbers, targets and tables (instrumentation_pass.py runs it).

Each arm is compared with the bare arm round by round (the rounds interleave the
arms, so drift on a busy machine hits both sides of a pair alike) and the median
over rounds is reported: throughput ratio and p50 difference at saturation
(c=HIGH), p50 difference at c=LOW, control-plane CPU per request. The issue's
targets hold the shipped and the 1%-traced arms; the every-request arm is
reported, not judged.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.table import Table

from conch_bench.ratios import Ratio

BARE, SHIPPED = "instr-bare", "instr-shipped"
TRACED, TRACED_ALL = "instr-traced-1pct", "instr-traced-all"
ARMS = {
    BARE: "access log off, tracing off (metrics are always on: no switch)",
    SHIPPED: "as shipped: JSON access log on, tracing off",
    TRACED: "access log on, traces exported (parentbased_traceidratio)",
    TRACED_ALL: "access log on, every request traced and exported (always_on)",
}
JUDGED = (SHIPPED, TRACED)
TRACED_ARMS = (TRACED, TRACED_ALL)
LOW, HIGH = 1, 64
THROUGHPUT_TARGET = 0.95  # c=HIGH req/s, at least this share of the bare arm's
ADDED_P50_US = 50.0  # c=HIGH p50, at most this much over the bare arm's
TRACE_RATIO = 0.01  # the sampling docs/OBSERVABILITY.md recommends at saturation


@dataclass(frozen=True)
class Point:
    """One arm at one concurrency in one round."""

    arm: str
    concurrency: int
    round: int
    requests: int
    errors: int
    throughput_rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float | None  # the control plane's CPU per request (warm-up included)


@dataclass
class InstrumentationResult:
    model: str
    rounds: int
    trace_ratio: float
    points: list[Point] = field(default_factory=list)
    spans: dict[str, int] = field(default_factory=dict)  # received by the sink, per arm

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InstrumentationResult:
        fields = dict(data)
        fields["points"] = [Point(**p) for p in fields.get("points", [])]
        return cls(**fields)


def _paired(
    result: InstrumentationResult,
    arm: str,
    concurrency: int,
    value: Callable[[Point, Point], float],
) -> float:
    """Median over rounds of value(arm's point, bare's point); nan when no round has both."""
    at = {(p.arm, p.round): p for p in result.points if p.concurrency == concurrency}
    values = [
        value(at[(arm, r)], at[(BARE, r)])
        for r in range(result.rounds)
        if (arm, r) in at and (BARE, r) in at and at[(arm, r)].requests and at[(BARE, r)].requests
    ]
    return statistics.median(values) if values else math.nan


def _errors(result: InstrumentationResult, arm: str) -> int:
    return sum(p.errors for p in result.points if p.arm == arm)


def _median(result: InstrumentationResult, arm: str, concurrency: int, what: str) -> float:
    values = [
        getattr(p, what)
        for p in result.points
        if p.arm == arm and p.concurrency == concurrency and p.requests
    ]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else math.nan


def instrumentation_ratios(result: InstrumentationResult) -> list[Ratio]:
    """Each instrumented arm against the bare one: medians over rounds of the pairs."""
    out: list[Ratio] = []
    rounds = f"median over {result.rounds} interleaved rounds"
    for arm in (SHIPPED, TRACED, TRACED_ALL):
        judged = arm in JUDGED
        errors = _errors(result, arm) + _errors(result, BARE)
        tput = _paired(result, arm, HIGH, lambda a, b: a.throughput_rps / b.throughput_rps)
        p50 = _paired(result, arm, HIGH, lambda a, b: (a.p50_ms - b.p50_ms) * 1e3)
        p50_low = _paired(result, arm, LOW, lambda a, b: (a.p50_ms - b.p50_ms) * 1e3)
        cpu = _paired(result, arm, HIGH, lambda a, b: _minus(a.cpu_us, b.cpu_us))
        extra = f", {errors} errors" if errors else ""
        out += [
            _ratio(f"{arm} / {BARE}: req/s at c={HIGH}", result.model, tput, "x",
                   f"{rounds}{extra}", "≥", THROUGHPUT_TARGET, judged, errors),
            _ratio(f"{arm} - {BARE}: p50 at c={HIGH}", result.model, p50, "µs",
                   f"{rounds}{extra}", "≤", ADDED_P50_US, judged, errors),
            _ratio(f"{arm} - {BARE}: p50 at c={LOW}", result.model, p50_low, "µs", rounds),
            _ratio(f"{arm} - {BARE}: control-plane CPU per request at c={HIGH}", result.model,
                   cpu, "µs", f"{rounds}, /proc, warm-up counted at the window's rate"),
        ]  # fmt: skip
    return out


def _minus(a: float | None, b: float | None) -> float:
    return math.nan if a is None or b is None else a - b


def _ratio(
    name: str,
    model: str,
    value: float,
    unit: str,
    detail: str,
    sense: str = "",
    limit: float = math.nan,
    judged: bool = False,
    errors: int = 0,
) -> Ratio:
    if not judged:
        return Ratio(name, model, value, unit, detail)
    shown = f"{limit:.2f}x" if unit == "x" else f"+{limit:g} µs"
    within = value >= limit if sense == "≥" else value <= limit  # nan: False
    return Ratio(name, model, value, unit, detail, f"{sense} {shown}", within and errors == 0)


def verdict_lines(ratios: Sequence[Ratio]) -> list[str]:
    """PASS/FAIL per judged number, for the console."""
    return [
        f"{'PASS' if r.passed else 'FAIL'} instrumentation {r.model}: {r.name} "
        f"{_value(r)} (target {r.target})"
        for r in ratios
        if r.passed is not None
    ]


def _value(r: Ratio) -> str:
    return f"{r.value:.3f}x" if r.unit == "x" else f"{r.value:+.0f} µs"


def _cells(result: InstrumentationResult, arm: str) -> list[str]:
    spans = str(result.spans.get(arm, 0))
    return [
        f"{_median(result, arm, HIGH, 'throughput_rps'):,.0f}",
        f"{_median(result, arm, HIGH, 'p50_ms'):.2f}",
        f"{_median(result, arm, HIGH, 'p99_ms'):.2f}",
        f"{_median(result, arm, LOW, 'p50_ms'):.3f}",
        f"{_median(result, arm, HIGH, 'cpu_us'):,.0f}",
        spans,
        str(_errors(result, arm)),
    ]


_COLUMNS = (
    f"req/s c={HIGH}", f"p50 ms c={HIGH}", f"p99 ms c={HIGH}", f"p50 ms c={LOW}",
    "CPU µs/req", "spans received", "errors",
)  # fmt: skip


def instrumentation_table(result: InstrumentationResult) -> Table:
    table = Table(
        title=f"instrumentation pass, {result.model} (medians over {result.rounds} rounds)"
    )
    table.add_column("arm")
    for column in _COLUMNS:
        table.add_column(column, justify="right")
    for arm in ARMS:
        table.add_row(arm, *_cells(result, arm))
    return table


def instrumentation_markdown(results: Sequence[InstrumentationResult]) -> list[str]:
    lines: list[str] = []
    for result in results:
        lines += [
            "",
            f"## Instrumentation, {result.model}",
            "",
            f"Four control planes side by side, conch-rest's door, one row, the arms "
            f"interleaved in {result.rounds} rounds; medians per arm (the judged ratios "
            f"above are medians of per-round pairs). Traced sampling ratio: "
            f"{result.trace_ratio:g}.",
            "",
            "| arm | configuration | " + " | ".join(_COLUMNS) + " |",
            "|---|---|" + "---:|" * len(_COLUMNS),
        ]
        lines += [f"| {arm} | {what} | " + " | ".join(_cells(result, arm)) + " |"
                  for arm, what in ARMS.items()]  # fmt: skip
    return lines
