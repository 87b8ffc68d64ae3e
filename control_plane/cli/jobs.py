"""`conch jobs`: async predictions from the command line (list, show, cancel, watch).

Each command calls the REST API through `conch.client` (`--url`, `--api-key`).
A key sees the tasks it submitted; an admin key, every task of its project (of
every project, for a key of no project). `watch` reads the queues, which span
every project: it needs the read scope and a key of no single project.
"""

from __future__ import annotations

import time
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import httpx
import typer
from rich import box
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from conch.client import Client
from control_plane.cli.api_client import ApiKeyOption, UrlOption, console, exit_on_failure, send

jobs_app = typer.Typer(
    help="Async prediction tasks: list, show and cancel them; watch the queues.",
    no_args_is_help=True,
)

# In the order a task moves through them.
STATUS_STYLES = {
    "queued": "yellow",
    "running": "cyan",
    "completed": "green",
    "failed": "red",
    "cancelled": "dim",
}
PRIORITIES = ("urgent", "high", "normal", "low")
WORKERS_SHOWN = 20  # a replica that stopped stays in the group: the least idle first


class Status(StrEnum):
    queued = "queued"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


@jobs_app.command("list")
def jobs_list(
    url: UrlOption,
    api_key: ApiKeyOption,
    status: Annotated[Status | None, typer.Option(help="Only tasks in this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many.")] = 50,
) -> None:
    """Recent tasks, newest first, as a table: the key's own, or an admin key's project's
    (predict scope)."""
    wanted = None if status is None else status.value
    answer = send(url, api_key, lambda conch: conch.list_tasks(status=wanted, limit=limit))
    console.print(task_table(answer["tasks"]))


@jobs_app.command("show")
def jobs_show(task_id: str, url: UrlOption, api_key: ApiKeyOption) -> None:
    """A task as JSON: status, times, attempts, its result or error, its callback's
    delivery (predict scope)."""
    console.print_json(data=send(url, api_key, lambda conch: conch.get_task(task_id)))


@jobs_app.command("cancel")
def jobs_cancel(task_id: str, url: UrlOption, api_key: ApiKeyOption) -> None:
    """Cancel a queued task and print it; refused (409) once a worker started it (predict
    scope)."""
    console.print_json(data=send(url, api_key, lambda conch: conch.cancel_task(task_id)))


@jobs_app.command("watch")
def jobs_watch(
    url: UrlOption,
    api_key: ApiKeyOption,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between refreshes.")] = 1.0,
    count: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many views (default: Ctrl-C).")
    ] = None,
) -> None:
    """A live view of the queues: tasks waiting per priority, running, completed per
    second, and each worker (read scope, a key for no single project). Ctrl-C stops it."""
    try:
        with exit_on_failure(url), Client(url, api_key, timeout_s=max(interval, 5.0)) as conch:
            queues = conch.task_queues()  # a wrong URL or key: one line, exit 1
            with Live(queues_view(queues, url), console=console, auto_refresh=False) as live:
                shown = 1
                while count is None or shown < count:
                    time.sleep(interval)
                    problem = None
                    try:
                        queues = conch.task_queues()
                    except httpx.TransportError as exc:  # a replica restarting: keep watching
                        problem = f"cannot reach {url}: {exc} (the last answer is shown)"
                    live.update(queues_view(queues, url, problem), refresh=True)
                    shown += 1
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends: the last view stays on screen


def task_table(tasks: list[dict[str, Any]]) -> RenderableType:
    if not tasks:
        return Text("no tasks", style="dim")
    table = Table(
        caption=f"{len(tasks)} task(s), newest first; times in UTC",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
    )
    # The id is what `show` and `cancel` take: never cut short.
    table.add_column("task", no_wrap=True, min_width=len(tasks[0]["task_id"]))
    for column in ("status", "priority", "model", "created", "waited", "ran"):
        table.add_column(column, overflow="fold")
    table.add_column("tries", justify="right")
    table.add_column("callback")
    for task in tasks:
        status = task["status"]
        callback = task.get("callback") or {}
        table.add_row(
            task["task_id"],
            Text(status, style=STATUS_STYLES.get(status, "")),
            task["priority"],
            f"{task['model_id']} (#{task['resolved_model_id']})",
            task["created_at"][5:19].replace("T", " "),  # MM-DD HH:MM:SS
            _between(task["created_at"], task.get("started_at")),
            _between(task.get("started_at"), task.get("completed_at")),
            str(task["attempts"]),
            callback.get("status", ""),
        )
    return table


def queues_view(queues: dict[str, Any], url: str, problem: str | None = None) -> RenderableType:
    depths = Table(title="waiting per priority", title_justify="left")
    depths.add_column("priority")
    depths.add_column("waiting", justify="right")
    for level in PRIORITIES:
        depths.add_row(level, str(queues["depths"].get(level, 0)))
    workers = Table(title="workers", title_justify="left")
    workers.add_column("consumer")
    workers.add_column("holding", justify="right")
    workers.add_column("idle", justify="right")
    for worker in queues["workers"][:WORKERS_SHOWN]:
        workers.add_row(worker["name"], str(worker["pending"]), _seconds(worker["idle_ms"] / 1000))
    hidden = len(queues["workers"]) - WORKERS_SHOWN
    if hidden > 0:
        workers.caption = f"and {hidden} more, idle longer (replicas that stopped)"
    summary = Text.assemble(
        (f"{url}  ", "bold"),
        f"running {queues['running']}  ",
        f"completed {queues['completion_rate_per_s']:.2f}/s (last minute)  ",
        (time.strftime("%H:%M:%S"), "dim"),
    )
    parts: list[RenderableType] = [summary, depths, workers]
    if problem is not None:
        parts.append(Text(problem, style="red"))
    return Group(*parts)


def _between(start: str | None, end: str | None) -> str:
    if not start or not end:
        return ""
    elapsed = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    return _seconds(elapsed.total_seconds())


def _seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")
