"""Reports: a rich table for the terminal, results.json, docs/BENCHMARKS.md, deltas.

results.json is the record later runs compare against: each run prints how
throughput and p50/p99 moved per (model, arm, concurrency) since the last one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from conch_bench.hot_path import HotPathRow
from conch_bench.hot_path_report import hot_path_markdown
from conch_bench.instrumentation_report import InstrumentationResult, instrumentation_markdown
from conch_bench.machine import machine_markdown
from conch_bench.ratios import ArmRun, Ratio
from conch_bench.stats import RunSummary

RESULTS_SCHEMA = 1

METHOD = (
    "## Method",
    "",
    "Closed loop: a fixed number of requests in flight (the concurrency). The Python",
    "client (`conch_bench/loadgen.py`) splits them over client processes, each an",
    "asyncio loop; `triton-http` is driven by `wrk` (C, `conch_bench/native.py`)",
    "sending the same binary-tensor body, because the Python client tops out near",
    "5k req/s. Latency from send to answer; the warm-up is sent but not measured.",
    "Percentiles are nearest-rank over the merged raw samples (wrk: its histogram).",
    "Client CPU is each client process's (wrk: thread's) CPU over the window: near",
    "100 % means the client may be the bottleneck. *late*: requests sent in the",
    "window but answered after it (at most one per connection); they count in the",
    "percentiles, since the slowest requests are the likeliest to straddle the cut,",
    "but not in req/s. wrk cannot report its late requests: they are dropped.",
    "",
    "Open loop (rows `open-loop N/s`): every arm offered the same fixed rate, half",
    "the slowest arm's best closed-loop throughput; each latency counts from the",
    "scheduled send, so a stalled server pays for the requests it delayed.",
    "",
    "Throughput ratios appear at each arm's best concurrency (`max throughput`,",
    "different concurrencies) and at one fixed concurrency (`at c=N`).",
    "",
    "| arm | what is measured |",
    "|---|---|",
    "| triton-grpc | Triton directly, KServe v2 gRPC, binary tensors, dynamic batching on |",
    "| triton-http | Triton directly, KServe v2 HTTP with the binary tensor extension, wrk |",
    "| triton-grpc-nobatch | the same model file under a config without `dynamic_batching` |",
    "| conch-rest | Conch's REST API: API key, slot choice (recommenders), rate limiter on |",
    "| conch-rest-manykeys | the same with 1,000 API keys cycled per request (one limiter "
    "bucket each) |",
    "| conch-rest-nolimit | the same with `CONCH_RATE_LIMIT_ENABLED=false` |",
    "| conch-engine | seed 002's `POST /api/inference/predict` (model named in the body), "
    "same rows, rate limiter on; wrk |",
    "| conch-v2 | Conch's Open Inference Protocol door (`/v2/models/{name}/infer`) with the "
    "body triton-http sends, an API key, rate limiter on; wrk |",
    "| conch-engine-python, conch-v2-python | the same two doors through the Python client, "
    "to compare with conch-rest |",
    "| priority-low, priority-urgent | conch-engine on the model's `__priority` twin (config "
    "with Triton's priority levels), two wrk at once: most connections send "
    '`"priority": "low"`, a few `"urgent"` (`conch_bench/priority.py`) |',
    "| async-engine | tasks through `POST /api/inference/predict/async`, polled until "
    "completed (`conch_bench/async_pass.py`): *req/s* is tasks completed per second, "
    "latency from the submit to the poll that saw the result |",
    "| async-engine-queue | the same tasks by their own `created_at` → `completed_at` "
    "(server clock, millisecond precision) |",
    "| async-engine-100rows, conch-engine-100rows | 100-row tasks, and 100-row synchronous "
    "requests (wrk at conch-engine's best concurrency): rows/s = req/s x 100 |",
    "| triton-grpc-2x-clients | triton-grpc at its best concurrency with twice the client "
    "processes: a client check |",
    "| triton-http-python | triton-http at wrk's best concurrency through the Python client: "
    "a client check (must agree with wrk within the noise) |",
    "| triton-http-hey, conch-rest-hey, baseline-tuned-hey | the hot-path pass: triton-http, "
    "conch-rest and baseline-tuned at concurrency 1 and 64 under `hey` (see Hot path) |",
    "| baseline-naive | plain FastAPI + onnxruntime in-process, defaults (`def` handler, "
    "spinning ORT pool, pydantic) (`conch_bench/baseline.py`) |",
    "| baseline-tuned | the same model as a competent engineer would serve it: ORT on one "
    "thread without spinning, `async` handler + small executor, orjson; Conch's ratios "
    "compare against this one |",
)


def _ms(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}"


def _cpu(summary: RunSummary) -> str:
    return "/".join(f"{c:.0%}" for c in summary.client_cpu)


def load_label(summary: RunSummary) -> str:
    """Closed loop: the concurrency; open loop: the offered rate, labelled as such."""
    return str(summary.concurrency) if summary.mode == "closed" else f"open-loop {summary.rate:g}/s"


def _check(ratio: Ratio) -> str:
    if ratio.passed is None:
        return ""
    return f"{'ok' if ratio.passed else 'FAIL'} ({ratio.target})"


def summary_table(runs: Sequence[ArmRun], title: str = "results") -> Table:
    table = Table(title=title)
    for column in ("model", "arm", "conc.", "req/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms"):
        table.add_column(column, justify="right" if column[0] in "crp" else "left")
    table.add_column("errors", justify="right")
    table.add_column("late", justify="right")
    table.add_column("client", justify="left")
    table.add_column("client CPU", justify="right")
    for run in runs:
        s = run.summary
        errors = f"[red]{s.errors}[/red]" if s.errors else "0"
        late = f"[yellow]{s.late}[/yellow]" if s.late else "0"
        cpu = f"[yellow]{_cpu(s)}[/yellow]" if s.client_saturated else _cpu(s)
        table.add_row(
            run.model,
            run.arm,
            load_label(s),
            f"{s.throughput_rps:,.0f}",
            *(_ms(s.latency_ms[k]) for k in ("p50", "p90", "p99", "p99.9")),
            errors,
            late,
            s.client,
            cpu,
        )
    return table


def print_errors(console: Console, runs: Sequence[ArmRun]) -> None:
    for run in runs:
        for message in run.summary.first_errors:
            console.print(f"[red]{run.model}/{run.arm} {load_label(run.summary)}:[/red] {message}")


def print_client_notes(console: Console, runs: Sequence[ArmRun]) -> None:
    """Open-loop send lag (charged to latency anyway) and client saturation warnings."""
    for run in runs:
        s = run.summary
        if s.mode == "open":
            console.print(
                f"open loop {run.arm}: max send lag {s.max_send_lag_ms:.1f} ms, "
                f"dropped {s.dropped} (max in flight reached)"
            )
    if any(r.summary.client_saturated for r in runs):
        console.print("[yellow]a client process used ~a full core: add --processes[/yellow]")


def ratio_table(ratios: Sequence[Ratio]) -> Table:
    table = Table(title="ratios (same run)")
    for column in ("model", "ratio", "value", "check", "from"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for r in ratios:
        check = _check(r)
        if r.passed is False:
            check = f"[red]{check}[/red]"
        table.add_row(r.model, r.name, _ratio_value(r), check, r.detail)
    return table


def _setting(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _ratio_value(ratio: Ratio) -> str:
    if ratio.unit == "x":
        return f"{ratio.value:.2f}x"
    if ratio.unit == "ms":
        return f"{ratio.value:+.2f} ms"
    if ratio.unit == "count":
        return f"{ratio.value:.0f}"
    return f"{ratio.value:+.0f} {ratio.unit}" if ratio.unit == "µs" else f"{ratio.value:.1f} %"


def results_document(
    runs: Sequence[ArmRun],
    ratios: Sequence[Ratio],
    *,
    machine: dict[str, Any],
    settings: dict[str, Any],
    command: str,
    created_at: str,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    return {
        "schema": RESULTS_SCHEMA,
        "created_at": created_at,
        "command": command,
        "machine": machine,
        "settings": settings,
        "runs": [r.to_dict() for r in runs],
        "ratios": [r.to_dict() for r in ratios],
        "notes": list(notes),
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # NaN (no samples) is not JSON: write null instead.
    text = json.dumps(_no_nan(document), indent=2, ensure_ascii=False)
    path.write_text(text + "\n")


def _no_nan(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


def load_runs(path: Path) -> list[ArmRun] | None:
    """The runs of a previous results.json, or None when there is none (or it is unreadable)."""
    try:
        document = json.loads(path.read_text())
        runs = [ArmRun.from_dict(_nan_back(r)) for r in document["runs"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return runs


def _nan_back(run: dict[str, Any]) -> dict[str, Any]:
    latency = {k: (float("nan") if v is None else v) for k, v in run["latency_ms"].items()}
    return {**run, "latency_ms": latency}


def delta_table(previous: Sequence[ArmRun], current: Sequence[ArmRun]) -> Table | None:
    """Relative change of throughput, p50 and p99 for every run present in both."""
    before = {(r.model, r.arm, load_label(r.summary)): r.summary for r in previous}
    table = Table(title="change since the previous results.json")
    for column in ("model", "arm", "conc.", "req/s", "p50", "p99"):
        table.add_column(
            column, justify="right" if column in ("conc.", "req/s", "p50", "p99") else "left"
        )
    rows = 0
    for run in current:
        old = before.get((run.model, run.arm, load_label(run.summary)))
        if old is None:
            continue
        new = run.summary
        table.add_row(
            run.model,
            run.arm,
            load_label(new),
            _change(old.throughput_rps, new.throughput_rps, higher_is_better=True),
            _change(old.latency_ms["p50"], new.latency_ms["p50"], higher_is_better=False),
            _change(old.latency_ms["p99"], new.latency_ms["p99"], higher_is_better=False),
        )
        rows += 1
    return table if rows else None


def _change(old: float, new: float, *, higher_is_better: bool) -> str:
    if not old or math.isnan(old) or math.isnan(new):
        return "—"
    pct = (new - old) / old * 100
    better = pct > 0 if higher_is_better else pct < 0
    colour = "green" if better else "red"
    return f"[{colour}]{pct:+.1f}%[/{colour}]" if abs(pct) >= 5 else f"{pct:+.1f}%"


def write_markdown(
    path: Path,
    document: dict[str, Any],
    runs: Sequence[ArmRun],
    ratios: Sequence[Ratio],
    plots: Sequence[Path] = (),
) -> None:
    settings = document["settings"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `conch bench suite`; do not edit by hand. Every ratio below comes",
        "from two arms measured in the same run, on the same machine, one after the other.",
        "",
        f"Run at {document['created_at']} with:",
        "",
        "```",
        document["command"],
        "```",
        "",
        "## Machine",
        "",
        *machine_markdown(document["machine"]),
        "",
        "## Settings",
        "",
        *(f"- {key}: {_setting(value)}" for key, value in settings.items()),
        "",
        *METHOD,
        "",
        "## Ratios",
        "",
        "| model | ratio | value | check | from |",
        "|---|---|---:|---|---|",
        *(
            f"| {r.model} | {r.name} | {_ratio_value(r)} | {_check(r)} | {r.detail} |"
            for r in ratios
        ),
    ]
    if not ratios:
        lines.append("| — | no pair of arms measured | | | |")
    for model in dict.fromkeys(r.model for r in runs):
        lines += [
            "",
            f"## {model}",
            "",
            "| arm | concurrency | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | errors "
            "| late | client | client CPU |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
        ]
        for run in (r for r in runs if r.model == model):
            s = run.summary
            cells = " | ".join(_ms(s.latency_ms[k]) for k in ("p50", "p90", "p99", "p99.9"))
            lines.append(
                f"| {run.arm} | {load_label(s)} | {s.throughput_rps:,.0f} | {cells} | "
                f"{s.errors} | {s.late} | {s.client} | {_cpu(s)} |"
            )
        for plot in plots:
            if plot.stem == model:
                lines += ["", f"![{model}]({plot.relative_to(path.parent).as_posix()})"]
    lines += hot_path_markdown([HotPathRow.from_dict(r) for r in document.get("hot_path") or []])
    lines += instrumentation_markdown(
        [InstrumentationResult.from_dict(r) for r in document.get("instrumentation") or []]
    )
    lines += _bare_torch_section(document.get("bare_torch") or [])
    if document.get("notes"):
        lines += ["", "## Notes", "", *(f"- {note}" for note in document["notes"])]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _bare_torch_section(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The MLP called directly with torch: what the hardware gives with no server at all."""
    if not rows:
        return []
    lines = [
        "",
        "## Bare torch (physical reference)",
        "",
        f"The MLP's forward pass called in-process on {rows[0].get('device', 'cpu')}, "
        "no server (`conch bench bare-torch`).",
        "",
        "| batch | calls/s | samples/s | p50 ms | p99 ms |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['batch_size']} | {r['calls_per_s']:,.0f} | {r['samples_per_s']:,.0f} | "
            f"{r['p50_ms']:.3f} | {r['p99_ms']:.3f} |"
        )
    return lines
