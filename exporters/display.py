"""The CLI's live view of an export: each step with its status and duration, then a summary."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from exporters.steps import ProgressHook, StepRecord

STEP_LABELS = {
    "convert": "convert to the serving format",
    "optimize": "optimize the graph (onnxruntime, basic level)",
    "write": "write model, config.pbtxt",
    "parity": "parity check through Triton",
    "publish": "write manifest, publish",
}
STATUS_MARKS = {"ok": "[green]✓[/]", "failed": "[red]✗[/]", "skipped": "[yellow]-[/]"}


@contextmanager
def show_steps(console: Console, title: str) -> Iterator[ProgressHook]:
    """A spinner naming the running step; each finished step is printed with its status and
    duration, and a summary table follows once the export ends, failed or not."""
    finished: list[StepRecord] = []
    try:
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
        ) as progress:
            task = progress.add_task(title, total=None)

            def hook(step: StepRecord) -> None:
                label = STEP_LABELS.get(step.name, step.name)  # a transform is named by itself
                if step.status == "running":
                    progress.update(task, description=f"{title}: {label}")
                    return
                finished.append(step)
                # Details quote error messages: escaped, so "[...]" in them is not markup.
                timing = escape(_timing(step))
                progress.console.print(
                    f"  {STATUS_MARKS[step.status]} {escape(label)} [dim]{timing}[/]",
                    highlight=False,
                )

            yield hook
    finally:
        if finished:
            console.print(_summary(finished))


def _timing(step: StepRecord) -> str:
    return f"({step.detail})" if step.status == "skipped" else f"{step.seconds:.2f}s"


def _summary(steps: list[StepRecord]) -> Table:
    table = Table("step", "status", "time", "detail", box=None, highlight=False)
    for step in steps:
        seconds = "" if step.status == "skipped" else f"{step.seconds:.2f}s"
        table.add_row(Text(step.name), step.status, seconds, Text(step.detail))
    table.add_row("total", "", f"{sum(step.seconds for step in steps):.2f}s", "")
    return table
