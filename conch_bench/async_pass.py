"""The async pass: seed 002's async predictions against the synchronous door, one run.

Each row is set against `POST /api/inference/predict` (the `conch-engine` arm),
measured in the same run on the same control plane:

- Throughput at saturation. ASYNC_IN_FLIGHT tasks are kept in flight (closed
  loop, split over client processes): each client "user" submits a task
  (`POST /api/inference/predict/async`, 202), polls `GET .../{task_id}` until it
  is `completed`, then submits the next. Throughput is tasks *seen completed* per
  second inside the window, whenever they were submitted: the steady-state
  completion rate, with no edge loss (a long task straddling a cut is neither
  lost at the start nor at the end).
  Why not "submit N as fast as possible, then time until all are done": that
  measures how fast a backlog drains, with submitting and collecting in separate
  phases, and its number moves with N (ramp-up, tail, the per-key bound of 1000
  queued tasks). A client of an async API submits and collects at once; keeping
  the queue full and counting completions measures what the server sustains,
  every request such a client makes included. Polling is part of that cost, so
  the client polls as the API invites it to: one waiting poll
  (`GET .../{task_id}?wait_ms=10000`) that the server answers as the task
  finishes, another only if it outlasts the wait. The notes give the GETs per
  task (1.00 when every task finished within one poll's wait).
- Batch amortisation: the same with ASYNC_ROWS-row tasks, against ASYNC_ROWS-row
  synchronous requests (wrk at the `conch-engine` arm's best concurrency), rows/s.
- Queue to completion at low load: one task in flight, the same waiting poll.
  Two distributions of the same tasks: `async-engine`, from the submit sent to the
  poll that saw the result (what a client waits: the poll's wake-up included), and
  `async-engine-queue`,
  the task's own `created_at` -> `completed_at` (the server's clock, millisecond
  precision: the queue, the worker's take and the model call, no polling noise).
  ratios.py judges the latter against the synchronous p50 at concurrency 1.
"""

from __future__ import annotations

from dataclasses import replace

from rich.console import Console

from conch_bench.async_load import TaskLoad, TaskPoint, run_tasks
from conch_bench.conch_arm import ConchEndpoint, probe
from conch_bench.loadgen import LoadError, LoadSpec, run_load
from conch_bench.models import BenchModel
from conch_bench.native import WrkError, find_wrk, request_spec, run_wrk
from conch_bench.ratios import (
    ASYNC_ARM,
    ASYNC_QUEUE_ARM,
    ASYNC_ROWS,
    ASYNC_ROWS_ARM,
    ENGINE_ROWS_ARM,
    ArmRun,
)
from conch_bench.stats import RunSummary
from conch_bench.targets import RestTarget

ASYNC_MODELS = ("tabular",)  # the models that get this pass
# Four times the task slots a replica runs at once (CONCH_TASK_WORKERS, 16): the queue
# does not run dry while users are between polls. Not more: past ~100 requests at
# once the async door answers 500 (redis-py 8's request pool refuses a 101st
# connection with MaxConnectionsError, which the async routes do not map).
ASYNC_IN_FLIGHT = 64


def async_pass(
    console: Console,
    model: BenchModel,
    conch: ConchEndpoint | None,
    notes: list[str],
    *,
    duration_s: float,
    warmup_s: float,
    processes: int,
    engine_concurrency: int,
) -> list[ArmRun]:
    """The async arms and the 100-row synchronous one; [] with a note saying why when
    the pass cannot run."""
    where = f"async pass for {model.key}"
    if conch is None:
        notes.append(f"{where}: skipped, no control plane (none started, no --conch-url)")
        return []
    if not model.features:
        notes.append(f"{where}: skipped, no feature-row body for {model.key}")
        return []
    single, rows = (conch.engine_target(model, conch.url, n) for n in (1, ASYNC_ROWS))
    for target in (_async(single), _async(rows), rows):
        problem = probe(target)
        if problem is not None:
            notes.append(f"{where}: skipped, a probe request failed: {problem}")
            return []
    console.print(f"{model.key}: async pass, tasks polled until completed ...")
    runs: list[ArmRun] = []
    for load in (
        TaskLoad(_async(single), 1, duration_s, warmup_s),
        TaskLoad(_async(single), ASYNC_IN_FLIGHT, duration_s, warmup_s, processes),
        TaskLoad(_async(rows), ASYNC_IN_FLIGHT, duration_s, warmup_s, processes, ASYNC_ROWS),
    ):
        arm = ASYNC_ARM if load.rows == 1 else ASYNC_ROWS_ARM
        try:
            point = run_tasks(load, label=f"{model.key}/{arm}")
        except LoadError as exc:  # the client failed, not the server: say so, measure on
            why = str(exc).strip().splitlines()[-1]  # a client's traceback ends with why
            notes.append(f"{where}: {arm} at {load.in_flight} in flight failed, {why}")
            continue
        runs.append(_shown(console, model.key, arm, point.seen))
        if load.rows == 1:
            queue = replace(point.queue, label=f"{model.key}/{ASYNC_QUEUE_ARM}")
            runs.append(_shown(console, model.key, ASYNC_QUEUE_ARM, queue))
        notes.append(f"{where}: {_polling(load, point)}")
    label = f"{model.key}/{ENGINE_ROWS_ARM}"
    sync_load = LoadSpec(
        concurrency=engine_concurrency,
        duration_s=duration_s,
        warmup_s=warmup_s,
        processes=min(processes, engine_concurrency),
    )
    sync = _sync_rows(rows, sync_load, label)
    if isinstance(sync, str):
        notes.append(f"{where}: {ENGINE_ROWS_ARM} failed, {sync}")
    else:
        runs.append(_shown(console, model.key, ENGINE_ROWS_ARM, sync))
    return runs


def _async(target: RestTarget) -> RestTarget:
    """The synchronous door's request, to the async door: the same body, 202."""
    return replace(target, url=f"{target.url}/async", expect_status=202)


def _polling(load: TaskLoad, point: TaskPoint) -> str:
    tasks = point.seen.requests
    per_task = f"{point.polls / tasks:.2f}" if tasks else "—"
    return (
        f"{load.rows}-row tasks at {load.in_flight} in flight: {tasks} completed in the window, "
        f"{per_task} GETs per task"
    )


def _sync_rows(target: RestTarget, load: LoadSpec, label: str) -> RunSummary | str:
    """The synchronous door with ASYNC_ROWS-row requests: wrk, as the conch-engine arm
    (the Python client without it); why not, as text."""
    spec = request_spec(target)
    if find_wrk() is None or spec is None:
        return run_load(target, load, label=label, batch_size=ASYNC_ROWS)
    try:
        return run_wrk(
            spec,
            concurrency=load.concurrency,
            duration_s=load.duration_s,
            warmup_s=load.warmup_s,
            threads=load.processes,
            label=label,
            batch_size=ASYNC_ROWS,
        )
    except WrkError as exc:
        return str(exc)


def _shown(console: Console, model: str, arm: str, s: RunSummary) -> ArmRun:
    console.print(
        f"{model:<12} {arm:<22} {'c=' + str(s.concurrency):<16} {s.throughput_rps:>9,.0f} /s     "
        f"p50 {s.latency_ms['p50']:8.2f} ms  p99 {s.latency_ms['p99']:8.2f} ms  "
        f"errors {s.errors}  {s.client} CPU {'/'.join(f'{c:.0%}' for c in s.client_cpu)}"
    )
    return ArmRun(model, arm, s)
