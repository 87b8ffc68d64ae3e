"""The suite runner end to end on the stand-in models: arms, reports, deltas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from conch_bench.suite import SuiteOptions, run_suite

pytestmark = pytest.mark.slow


def test_quick_suite_writes_both_reports(tmp_path: Path) -> None:
    options = SuiteOptions(
        repository=tmp_path / "repository",
        output_dir=tmp_path / "docs",
        concurrencies=(4,),
        duration_s=0.6,
        warmup_s=0.2,
        processes=1,
        models=("tabular",),
        arms=(
            "triton-grpc",
            "triton-grpc-nobatch",
            "baseline-naive",
            "baseline-tuned",
            "conch-rest",
        ),
        use_demo=False,
        start_conch=False,
        bare_torch=False,
    )
    console = Console(record=True, width=160)
    result = run_suite(options, console)
    measured = {(r.arm, r.summary.concurrency) for r in result.runs}
    arms = ("triton-grpc", "triton-grpc-nobatch", "baseline-naive", "baseline-tuned")
    closed = {(arm, 4) for arm in (*arms, "triton-grpc-2x-clients")}
    assert measured == closed | {(arm, 0) for arm in arms}  # 0: the open-loop pass
    rates = {r.summary.rate for r in result.runs if r.summary.mode == "open"}
    assert len(rates) == 1  # every arm offered the same rate
    check = next(r.summary for r in result.runs if r.arm == "triton-grpc-2x-clients")
    assert check.processes == 2
    assert all(r.summary.errors == 0 and r.summary.requests > 0 for r in result.runs)
    assert any("conch-rest" in note for note in result.notes)  # skipped, and says so

    document = json.loads(result.results_path.read_text())
    names = {r["name"] for r in document["ratios"]}
    assert "triton-grpc / triton-grpc-nobatch: throughput at c=4" in names
    assert "triton-grpc / baseline-tuned: p99 at c=4" in names
    assert "baseline-naive / baseline-tuned: throughput at c=4" in names
    assert "client check: gRPC throughput with 2x client processes" in names
    assert any(name.startswith("triton-grpc / baseline-tuned: p99 open-loop") for name in names)
    markdown = result.markdown_path.read_text()
    assert "## tabular" in markdown and "| baseline-tuned | 4 |" in markdown
    assert "| baseline-tuned | open-loop " in markdown
    assert result.markdown_path == tmp_path / "docs" / "BENCHMARKS.md"
