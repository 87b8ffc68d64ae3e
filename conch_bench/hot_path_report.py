"""The hot-path pass's targets (the issue's), each from two arms of one run, and
its tables: the terminal's and the report's section.

Conch (`conch-rest-hey`) against Triton's own HTTP endpoint (`triton-http-hey`)
and against the tuned hand-written server (`baseline-tuned-hey`): throughput and
p99 at concurrency 64, p50 at concurrency 1, its own p99/p50, and zero stall
clusters. The references' stalls are reported, not judged: a stall in Triton's
own endpoint says the machine was busy, not that Conch is fine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.table import Table

from conch_bench.hot_path import HotPathRow
from conch_bench.ratios import TUNED, Ratio

TRITON_ARM, CONCH_ARM, TUNED_ARM = "triton-http-hey", "conch-rest-hey", f"{TUNED}-hey"
HOT_ARMS = {"triton-http": TRITON_ARM, "conch-rest": CONCH_ARM, TUNED: TUNED_ARM}
CONCH_ARMS = (CONCH_ARM,)  # a stall in one of these fails the suite
LOW, HIGH = 1, 64
TRITON_THROUGHPUT = 0.5  # c=64 req/s, at least this share of Triton's
TRITON_P99 = 3.0  # c=64 p99, at most this many times Triton's
TAIL_SPREAD = 2.5  # c=64 p99 / p50
ADDED_P50_MS = 0.25  # c=1 p50 over Triton's
TUNED_THROUGHPUT = 1.5  # c=64 req/s over the baseline's
TUNED_P99 = 1.0  # c=64 p99 over the baseline's
TUNED_P50 = 1.5  # c=1 p50 over the baseline's


def stall_failures(rows: Sequence[HotPathRow]) -> list[str]:
    """One line per Conch point with a stall: these fail the suite."""
    return [
        f"{r.model}/{r.arm} c={r.concurrency}: {len(r.stalls)} stall cluster(s) "
        f"({describe_stalls(r)})"
        for r in rows
        if r.arm in CONCH_ARMS and r.stalls
    ]


def describe_stalls(row: HotPathRow) -> str:
    return ", ".join(
        f"at {s.start_s:.1f} s {s.size} responses over {s.span_ms:.0f} ms, "
        f"worst {s.worst_ms:.0f} ms"
        for s in row.stalls
    )


def hot_path_ratios(rows: Sequence[HotPathRow]) -> list[Ratio]:
    out = []
    for model in dict.fromkeys(r.model for r in rows):
        found = {(r.arm, r.concurrency): r for r in rows if r.model == model and r.requests}
        conch_low, conch_high = found.get((CONCH_ARM, LOW)), found.get((CONCH_ARM, HIGH))
        for ref, low_ref, high_ref in (
            ("Triton direct", found.get((TRITON_ARM, LOW)), found.get((TRITON_ARM, HIGH))),
            (TUNED, found.get((TUNED_ARM, LOW)), found.get((TUNED_ARM, HIGH))),
        ):
            out += _against(model, ref, conch_low, conch_high, low_ref, high_ref)
        if conch_high is not None and conch_high.latency_ms["p50"] > 0:
            value = conch_high.latency_ms["p99"] / conch_high.latency_ms["p50"]
            detail = _ms(conch_high, "p99") + " / " + _ms(conch_high, "p50")
            out.append(_judged(f"{CONCH_ARM} p99 / p50 at c={HIGH}", model, value, detail,
                               "≤", TAIL_SPREAD))  # fmt: skip
        out += _stall_rows(model, rows)
        out += _cpu_row(model, conch_high)
    return out


def _against(
    model: str,
    ref: str,
    low: HotPathRow | None,
    high: HotPathRow | None,
    low_ref: HotPathRow | None,
    high_ref: HotPathRow | None,
) -> list[Ratio]:
    """Conch's c=HIGH throughput and p99, and c=LOW p50, against one reference arm."""
    direct = ref == "Triton direct"
    out = []
    if high is not None and high_ref is not None and high_ref.throughput_rps > 0:
        value = high.throughput_rps / high_ref.throughput_rps
        detail = f"{high.throughput_rps:,.0f} req/s / {high_ref.throughput_rps:,.0f} req/s"
        bound = TRITON_THROUGHPUT if direct else TUNED_THROUGHPUT
        name = f"{CONCH_ARM} / {high_ref.arm}: throughput at c={HIGH}"
        out.append(_judged(name, model, value, detail, "≥", bound))
    if high is not None and high_ref is not None and high_ref.latency_ms["p99"] > 0:
        value = high.latency_ms["p99"] / high_ref.latency_ms["p99"]
        detail = f"{_ms(high, 'p99')} / {_ms(high_ref, 'p99')}"
        name = f"{CONCH_ARM} / {high_ref.arm}: p99 at c={HIGH}"
        out.append(_judged(name, model, value, detail, "≤", TRITON_P99 if direct else TUNED_P99))
    if low is not None and low_ref is not None and low_ref.latency_ms["p50"] > 0:
        detail = f"{_ms(low, 'p50')} vs {_ms(low_ref, 'p50')}; hey's CSV has 0.1 ms resolution"
        if direct:
            added = low.latency_ms["p50"] - low_ref.latency_ms["p50"]
            name = f"{CONCH_ARM} - {low_ref.arm}: added p50 at c={LOW}"
            passed = added <= ADDED_P50_MS
            target = f"≤ {ADDED_P50_MS:g} ms"
            out.append(Ratio(name, model, added, "ms", detail, target=target, passed=passed))
        else:
            value = low.latency_ms["p50"] / low_ref.latency_ms["p50"]
            name = f"{CONCH_ARM} / {low_ref.arm}: p50 at c={LOW}"
            out.append(_judged(name, model, value, detail, "≤", TUNED_P50))
    return out


def _stall_rows(model: str, rows: Sequence[HotPathRow]) -> list[Ratio]:
    """Conch's stall clusters, judged (zero); the references', reported."""
    out = []
    for arm in HOT_ARMS.values():
        points = [r for r in rows if r.model == model and r.arm == arm and r.requests]
        if not points:
            continue
        count = sum(len(r.stalls) for r in points)
        seen = "; ".join(f"c={r.concurrency}: {describe_stalls(r)}" for r in points if r.stalls)
        detail = seen or "none at " + ", ".join(
            f"c={r.concurrency} (slow > {r.slow_ms:.1f} ms, ≥ {r.stall_size} together)"
            for r in points
        )
        name = f"{arm}: stall clusters"
        if arm in CONCH_ARMS:
            out.append(Ratio(name, model, count, "count", detail, target="= 0", passed=count == 0))
        else:
            out.append(Ratio(name, model, count, "count", detail))
    return out


def _cpu_row(model: str, high: HotPathRow | None) -> list[Ratio]:
    """Where a request's CPU goes at c=HIGH: the control plane against Triton."""
    front = None if high is None else high.cpu_us.get("front")
    triton = None if high is None else high.cpu_us.get("triton")
    if front is None or triton is None or triton <= 0:
        return []
    detail = f"{front:.0f} µs / {triton:.0f} µs CPU per request (/proc, process trees)"
    name = f"{CONCH_ARM}: control-plane CPU / Triton CPU per request at c={HIGH}"
    return [Ratio(name, model, front / triton, "x", detail)]


def _judged(name: str, model: str, value: float, detail: str, op: str, bound: float) -> Ratio:
    passed = value >= bound if op == "≥" else value <= bound
    return Ratio(name, model, value, "x", detail, target=f"{op} {bound:.2f}x", passed=passed)


def _ms(row: HotPathRow, q: str) -> str:
    return f"{row.arm} {q} {row.latency_ms[q]:.2f} ms"


COLUMNS = (
    "arm", "c", "req/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms",
    "CPU µs/req control plane*", "CPU µs/req Triton", "CPU µs/req load generator", "stalls",
)  # fmt: skip
METHOD = (
    "Each point: an unmeasured `hey` run (the suite's warm-up, at least 1 s), then the",
    "measured one, `hey -z <duration> -c <c> -o csv` (closed loop, one request in flight",
    "per worker). Percentiles are nearest-rank over every response in hey's per-request",
    "CSV (0.1 ms resolution); req/s counts 2xx responses over first send to last answer.",
    "CPU µs/req: utime+stime from /proc of each server with all its descendants (Triton's",
    "Python backend stubs, uvicorn workers) read just before and after the measured run,",
    "over the requests answered; the load generator's from hey's own rusage.",
    "*On `baseline-tuned-hey` the first CPU column is the baseline server itself; on",
    "`triton-http-hey` it is the idle control plane.",
    "Stalls: responses slower than 5x the run's median, grouped by completion time",
    "(consecutive ones at most 20 ms apart), counted when a group holds at least",
    "max(4, c/4) responses; completions in the first 0.5 s (connections being opened)",
    "are left out. A stall in a Conch arm fails the suite.",
)


def _cells(row: HotPathRow) -> list[str]:
    latency = [_number(row.latency_ms[q], ".2f") for q in ("p50", "p90", "p99", "p99.9")]
    cpu = [_number(row.cpu_us.get(k), ",.0f") for k in ("front", "triton", "load_generator")]
    stalls = str(len(row.stalls)) + (" FAIL" if row.stalls and row.arm in CONCH_ARMS else "")
    return [row.arm, str(row.concurrency), f"{row.throughput_rps:,.0f}", *latency, *cpu, stalls]


def _number(value: float | None, spec: str) -> str:
    return "—" if value is None or math.isnan(value) else format(value, spec)


def console_line(row: HotPathRow) -> str:
    cells = dict(zip(COLUMNS, _cells(row), strict=True))
    return (
        f"{row.model:<12} {row.arm:<22} c={row.concurrency:<4} {cells['req/s']:>9} req/s  "
        f"p50 {cells['p50 ms']} ms  p99 {cells['p99 ms']} ms  CPU µs/req: front "
        f"{cells[COLUMNS[7]]}, Triton {cells[COLUMNS[8]]}, hey {cells[COLUMNS[9]]}  "
        f"stalls {len(row.stalls)}"
    )


def hot_path_table(rows: Sequence[HotPathRow]) -> Table:
    table = Table(title="hot path (hey): per-request timings, CPU per request, stalls")
    table.add_column("model")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "arm" else "right")
    for row in rows:
        cells = _cells(row)
        if row.stalls and row.arm in CONCH_ARMS:
            cells[-1] = f"[red]{cells[-1]}[/red]"
        table.add_row(row.model, *cells)
    return table


def hot_path_markdown(rows: Sequence[HotPathRow]) -> list[str]:
    """The report's hot-path section: a table per model, then the clusters found."""
    if not rows:
        return []
    lines = ["", "## Hot path (hey)", "", *METHOD]
    for model in dict.fromkeys(r.model for r in rows):
        mine = [r for r in rows if r.model == model]
        lines += ["", f"### {model}", "", "| " + " | ".join(COLUMNS) + " |"]
        lines.append("|---|" + "---:|" * (len(COLUMNS) - 1))
        lines += ["| " + " | ".join(_cells(r)) + " |" for r in mine]
        found = [r for r in mine if r.stalls or r.non_2xx]
        if found:
            lines.append("")
        for r in found:
            errors = f"; {r.non_2xx} non-2xx responses" if r.non_2xx else ""
            clusters = describe_stalls(r) if r.stalls else "no stalls"
            lines.append(f"- {r.arm} c={r.concurrency}: {clusters}{errors}")
    return lines
