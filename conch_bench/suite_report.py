"""The suite's reports: the tables printed, results.json, BENCHMARKS.md and its
plots, from one run's measurements (`write_reports`) or again from a saved
results.json (`render_from_results`, no measuring)."""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from conch_bench import report
from conch_bench.hot_path import HotPathRow
from conch_bench.hot_path_report import hot_path_ratios, hot_path_table, stall_failures
from conch_bench.instrumentation_report import (
    InstrumentationResult,
    instrumentation_ratios,
    instrumentation_table,
    verdict_lines,
)
from conch_bench.machine import describe_machine
from conch_bench.plot import MISSING, plot_model
from conch_bench.ratios import ArmRun, Ratio, compute_ratios
from conch_bench.stream_pass import stream_ratios


@dataclass
class SuiteResult:
    runs: list[ArmRun]
    notes: list[str]
    results_path: Path
    markdown_path: Path
    hot_path: list[HotPathRow] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # stalls in Conch: the run failed


def all_ratios(
    runs: list[ArmRun], hot: list[HotPathRow], instrumented: list[InstrumentationResult]
) -> list[Ratio]:
    """Every pass's ratios, in the order the report shows them."""
    ratios = compute_ratios(runs) + stream_ratios(runs) + hot_path_ratios(hot)
    return ratios + [r for result in instrumented for r in instrumentation_ratios(result)]


def write_reports(
    output_dir: Path,
    settings: dict[str, Any],
    console: Console,
    runs: list[ArmRun],
    notes: list[str],
    started: str,
    bare_torch: list[dict[str, Any]],
    hot: list[HotPathRow],
    instrumented: list[InstrumentationResult],
) -> SuiteResult:
    ratios = all_ratios(runs, hot, instrumented)
    console.print(report.summary_table(runs, title="conch bench suite"))
    report.print_errors(console, runs)
    if hot:
        console.print(hot_path_table(hot))
    for result in instrumented:
        console.print(instrumentation_table(result))
    if ratios:
        console.print(report.ratio_table(ratios))
    results_path = output_dir / "bench" / "results.json"
    previous = report.load_runs(results_path)
    if previous:
        deltas = report.delta_table(previous, runs)
        if deltas is not None:
            console.print(deltas)
    plots = _plots(output_dir, runs)
    if runs and not plots:
        notes.append(MISSING)
    command = "conch bench " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    document = report.results_document(
        runs,
        ratios,
        machine=describe_machine(),
        settings=settings,
        command=command if sys.argv[1:2] == ["bench"] else "conch bench suite",
        created_at=started,
        notes=notes,
    )
    document["bare_torch"] = bare_torch
    document["hot_path"] = [r.to_dict() for r in hot]
    document["instrumentation"] = [r.to_dict() for r in instrumented]
    report.write_json(results_path, document)
    markdown_path = output_dir / "BENCHMARKS.md"
    report.write_markdown(markdown_path, document, runs, ratios, plots)
    for note in notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    console.print(f"wrote {markdown_path} and {results_path}")
    judged = [r for result in instrumented for r in instrumentation_ratios(result)]
    for line in verdict_lines(judged):  # reported, as the other passes' targets
        console.print(f"[red]{line}[/red]" if line.startswith("FAIL") else line)
    failures = stall_failures(hot)
    for failure in failures:
        console.print(f"[red]FAIL stall check:[/red] {failure}")
    return SuiteResult(runs, notes, results_path, markdown_path, hot, failures)


def _plots(output_dir: Path, runs: list[ArmRun]) -> list[Path]:
    plots = []
    for model in dict.fromkeys(r.model for r in runs):
        path = output_dir / "bench" / f"{model}.png"
        title = f"{model}: latency and throughput vs concurrency"
        written = plot_model(path, title, [r for r in runs if r.model == model])
        if written is not None:
            plots.append(written)
    return plots


def render_from_results(output_dir: Path) -> Path:
    """Rewrite BENCHMARKS.md and the plots from an existing results.json (no measuring)."""
    results_path = output_dir / "bench" / "results.json"
    runs = report.load_runs(results_path)
    if runs is None:
        raise FileNotFoundError(f"no readable results at {results_path}")
    document = json.loads(results_path.read_text())
    hot = [HotPathRow.from_dict(r) for r in document.get("hot_path") or []]
    markdown_path = output_dir / "BENCHMARKS.md"
    instrumented = [
        InstrumentationResult.from_dict(r) for r in document.get("instrumentation") or []
    ]
    ratios = all_ratios(runs, hot, instrumented)
    report.write_markdown(markdown_path, document, runs, ratios, _plots(output_dir, runs))
    return markdown_path
