"""`conch bench ...`: load generator, plain-FastAPI baseline, suite, bare-torch reference.

Heavy imports (numpy, tritonclient, torch) happen inside the commands, so the
rest of the CLI starts fast.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from conch_manifest.locations import PROJECT_ROOT, state_dir

bench_app = typer.Typer(
    help="Measure serving performance: load generator, baseline, benchmark suite.",
    no_args_is_help=True,
)
# Piped output (make bench | tee) still gets the full tables.
console = Console(width=None if sys.stdout.isatty() else 160)


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from exc
    if not values or min(values) < 1:
        raise typer.BadParameter("values must be integers >= 1")
    return values


def _words(text: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    words = tuple(w.strip() for w in text.split(",") if w.strip())
    unknown = [w for w in words if w not in allowed]
    if unknown:
        raise typer.BadParameter(f"unknown {unknown}; choose from {', '.join(allowed)}")
    return words


@bench_app.command("run")
def run_command(
    door: Annotated[str, typer.Option(help="grpc | http (Triton, binary tensors) | rest (JSON)")],
    url: Annotated[
        str, typer.Option(help="Triton host:port, or the full REST URL (http://.../predict)")
    ],
    model: Annotated[str, typer.Option(help="Triton model name (grpc/http doors)")] = "",
    concurrency: Annotated[
        str, typer.Option(help="closed loop: in-flight requests, e.g. 1,16,64")
    ] = "1",
    rate: Annotated[
        float, typer.Option(help="open loop: requests/s in total (overrides concurrency)")
    ] = 0.0,
    poisson: Annotated[
        bool, typer.Option(help="open loop: exponential gaps between sends")
    ] = False,
    duration: Annotated[float, typer.Option(help="measured seconds per point")] = 10.0,
    warmup: Annotated[float, typer.Option(help="seconds sent but not measured, first")] = 2.0,
    processes: Annotated[
        str,
        typer.Option(
            help="client processes; a list (1,4) repeats the run: is the client the limit?"
        ),
    ] = "2",
    batch_size: Annotated[int, typer.Option(help="rows per request")] = 1,
    int_high: Annotated[
        int, typer.Option(help="integer inputs drawn from [0, N) (e.g. user count)")
    ] = 2,
    body: Annotated[
        str, typer.Option(help="rest: JSON template; $DATA = batch x features floats, $USER_ID")
    ] = '{"data": $DATA}',
    features: Annotated[int, typer.Option(help="rest: columns of $DATA")] = 16,
    user_id: Annotated[
        list[str] | None, typer.Option(help="rest: values cycled into $USER_ID")
    ] = None,
    header: Annotated[
        list[str] | None, typer.Option(help="rest: 'Name: value', repeatable")
    ] = None,
    method: Annotated[str, typer.Option(help="rest: HTTP method")] = "POST",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write the results as JSON")
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="write a PNG (needs matplotlib)")] = None,
) -> None:
    """Load one target and print throughput and p50/p90/p99/p99.9 latency."""
    from conch_bench import report
    from conch_bench.loadgen import LoadSpec, run_load
    from conch_bench.plot import MISSING, plot_model
    from conch_bench.ratios import ArmRun
    from conch_bench.targets import RestTarget, Target, render_bodies, triton_target

    target: Target
    if door in ("grpc", "http"):
        if not model:
            raise typer.BadParameter("--model is required for the grpc and http doors")
        target = triton_target(door, url, model, batch_size=batch_size, int_high=int_high)  # type: ignore[arg-type]
    elif door == "rest":
        headers = dict(h.split(":", 1) for h in header or [])
        bodies = render_bodies(body, rows=batch_size, features=features, user_ids=user_id or ())
        target = RestTarget(
            url=url,
            bodies=bodies,
            method=method,
            headers={k.strip(): v.strip() for k, v in headers.items()},
        )
    else:
        raise typer.BadParameter("--door must be grpc, http or rest")
    runs = []
    points = [0] if rate > 0 else list(_ints(concurrency))
    for n_processes in _ints(processes):
        for point in points:
            spec = LoadSpec(
                mode="open" if rate > 0 else "closed",
                concurrency=point,
                rate=rate,
                poisson=poisson,
                duration_s=duration,
                warmup_s=warmup,
                processes=n_processes if rate > 0 else min(n_processes, point),
            )
            summary = run_load(target, spec, label=door, batch_size=batch_size)
            runs.append(ArmRun(model or url, f"{door} x{spec.processes} proc", summary))
    console.print(report.summary_table(runs, title=f"conch bench run ({door})"))
    report.print_errors(console, runs)
    report.print_client_notes(console, runs)
    if json_out is not None:
        report.write_json(json_out, {"runs": [r.to_dict() for r in runs]})
    if plot is not None and plot_model(plot, f"{door} {model or url}", runs) is None:
        console.print(f"[yellow]{MISSING}[/yellow]")


@bench_app.command("suite")
def suite_command(
    quick: Annotated[
        bool, typer.Option(help="smoke run: 1.5 s points, concurrency 1,16,64")
    ] = False,
    concurrency: Annotated[str, typer.Option(help="closed-loop points")] = "1,16,64,256",
    duration: Annotated[float, typer.Option(help="measured seconds per point")] = 10.0,
    warmup: Annotated[float, typer.Option(help="unmeasured seconds per point")] = 2.0,
    processes: Annotated[int, typer.Option(help="client processes per point")] = 2,
    batch_size: Annotated[int, typer.Option(help="rows per request")] = 1,
    models: Annotated[
        str, typer.Option(help="tabular,mlp,recommender")
    ] = "tabular,mlp,recommender",
    arms: Annotated[str, typer.Option(help="arms to run (default: all)")] = "",
    instance_kind: Annotated[str, typer.Option(help="cpu | gpu: Triton instance kind")] = "cpu",
    workers: Annotated[
        int, typer.Option(help="uvicorn workers of the baseline (match Conch's)")
    ] = 1,
    conch_url: Annotated[
        str | None,
        typer.Option(
            help="an external control plane (rate limit on); default: the suite starts one"
        ),
    ] = None,
    conch_url_nolimit: Annotated[str | None, typer.Option(help="same, rate limiting off")] = None,
    api_key: Annotated[
        str, typer.Option(envvar="CONCH_BENCH_API_KEY", help="X-API-Key for Conch")
    ] = "",
    conch_model: Annotated[
        list[str] | None,
        typer.Option(help="KEY=MODEL_ID Conch model id per bench model, repeatable"),
    ] = None,
    repository: Annotated[Path | None, typer.Option(help="bench model repository")] = None,
    output_dir: Annotated[
        Path | None, typer.Option(help="default: docs/ (quick: .conch/bench/)")
    ] = None,
    demo: Annotated[
        bool, typer.Option(help="use the demo models (conch_embedded.demo) when available")
    ] = True,
    bare_torch: Annotated[
        bool, typer.Option(help="also time the MLP called directly with torch")
    ] = True,
    client_check: Annotated[
        bool,
        typer.Option(
            help="re-run gRPC's best point with 2x client processes, triton-http's through Python"
        ),
    ] = True,
    open_loop: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="open-loop pass per model at this share of the slowest arm's best req/s (0: off)",
        ),
    ] = 0.5,
    priority: Annotated[
        bool,
        typer.Option(
            help="with conch-engine: low and urgent requests side by side on the tabular "
            "model's priority twin, at saturation (needs wrk)"
        ),
    ] = True,
    async_predictions: Annotated[
        bool,
        typer.Option(
            "--async/--no-async",
            help="with conch-engine: async tasks on the tabular model against the synchronous "
            "door (throughput at saturation, 100-row tasks, queue to completion at c=1)",
        ),
    ] = True,
    streams: Annotated[
        bool,
        typer.Option(
            "--stream/--no-stream",
            help="with conch-engine: rows/s through one stream (buffer_size 64; 1 and 64 rows "
            "per send, and the WebSocket) against single-row predict calls, same concurrency",
        ),
    ] = True,
    hot_path: Annotated[
        bool,
        typer.Option(
            help="with conch-rest: Conch, Triton's own HTTP endpoint and the tuned baseline "
            "under hey at concurrency 1 and 64 (per-request timings, CPU per request from "
            "/proc, stall check: a stall in Conch fails the run; needs hey)"
        ),
    ] = True,
    instrumentation: Annotated[
        bool,
        typer.Option(
            help="with conch-rest: four more control planes on the tabular model (access log "
            "and traces off, as shipped, traces at 1% to a local OTLP endpoint, every request "
            "traced), interleaved in rounds at concurrency 64 and 1, against the cost targets"
        ),
    ] = True,
    instrumentation_rounds: Annotated[
        int, typer.Option(min=1, help="instrumentation pass: rounds the --duration is split into")
    ] = 5,
    note: Annotated[
        list[str] | None, typer.Option(help="context recorded in the report, repeatable")
    ] = None,
    start_conch: Annotated[
        bool, typer.Option(help="start Conch control planes for the conch-rest arms")
    ] = True,
    device_info: Annotated[
        bool, typer.Option("--device-info", help="print the machine first")
    ] = False,
) -> None:
    """Every arm x model x concurrency in one run; writes BENCHMARKS.md and results.json."""
    from conch_bench.conch_arm import ConchEndpoint
    from conch_bench.suite import ALL_ARMS, ALL_MODELS, SuiteOptions, run_suite

    if device_info:
        device_info_command()
    if instance_kind not in ("cpu", "gpu"):
        raise typer.BadParameter("--instance-kind must be cpu or gpu")
    conch = None
    if conch_url:
        ids = dict(item.split("=", 1) for item in conch_model or [])
        conch = ConchEndpoint(conch_url, api_key, conch_url_nolimit, ids)
    if quick:
        duration, warmup = min(duration, 1.5), min(warmup, 0.5)
        if concurrency == "1,16,64,256":
            concurrency = "1,16,64"
    options = SuiteOptions(
        repository=repository or state_dir() / "bench" / "model_repository",
        output_dir=output_dir or (state_dir() / "bench" if quick else PROJECT_ROOT / "docs"),
        concurrencies=_ints(concurrency),
        duration_s=duration,
        warmup_s=warmup,
        processes=processes,
        batch_size=batch_size,
        models=_words(models, ALL_MODELS),
        arms=_words(arms, ALL_ARMS) if arms else ALL_ARMS,
        instance_kind="gpu" if instance_kind == "gpu" else "cpu",
        workers=workers,
        use_demo=demo,
        conch=conch,
        start_conch=start_conch,
        client_check=client_check,
        open_loop_fraction=open_loop,
        priority=priority,
        async_predictions=async_predictions,
        streams=streams,
        hot_path=hot_path,
        instrumentation=instrumentation,
        instrumentation_rounds=instrumentation_rounds,
        bare_torch=bare_torch,
        notes=tuple(note or ()),
    )
    result = run_suite(options, console)
    if result.failures:  # the one check that fails the run: a stall is not noise
        console.print(
            f"[red]stall check failed in {len(result.failures)} Conch point(s): "
            "responses held together (see the hot-path table)[/red]"
        )
        raise typer.Exit(1)


@bench_app.command("report")
def report_command(
    output_dir: Annotated[Path, typer.Option(help="where results.json lives (in bench/)")] = (
        PROJECT_ROOT / "docs"
    ),
) -> None:
    """Re-render BENCHMARKS.md and the plots from bench/results.json, without measuring."""
    from conch_bench.suite_report import render_from_results

    console.print(f"wrote {render_from_results(output_dir)}")


@bench_app.command("baseline")
def baseline_command(
    model: Annotated[Path, typer.Option(help="the ONNX file to serve")],
    port: Annotated[int, typer.Option()] = 8090,
    workers: Annotated[int, typer.Option()] = 1,
) -> None:
    """Serve the plain FastAPI + onnxruntime baseline in the foreground (POST /predict)."""
    import uvicorn

    os.environ["CONCH_BASELINE_MODEL"] = str(model.resolve())
    uvicorn.run(
        "conch_bench.baseline:create_app",
        factory=True,
        port=port,
        workers=workers,
        access_log=False,
    )


@bench_app.command("bare-torch")
def bare_torch_command(
    batch_sizes: Annotated[str, typer.Option(help="batch sizes")] = "1,8,64,256",
    duration: Annotated[float, typer.Option(help="measured seconds per batch size")] = 2.0,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1 ...")] = "cpu",
    threads: Annotated[int | None, typer.Option(help="torch intra-op threads")] = None,
    torchscript: Annotated[
        Path | None, typer.Option(help="a TorchScript MLP; default: built here")
    ] = None,
) -> None:
    """The MLP called directly with torch: the physical reference for the served arms."""
    from conch_bench.baretorch import run_bare_torch

    results = run_bare_torch(
        _ints(batch_sizes),
        duration_s=duration,
        device=device,
        threads=threads,
        torchscript=torchscript,
    )
    table = Table(title=f"bare torch MLP on {device}")
    for column in ("batch", "calls/s", "samples/s", "p50 ms", "p99 ms"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            str(r.batch_size),
            f"{r.calls_per_s:,.0f}",
            f"{r.samples_per_s:,.0f}",
            f"{r.p50_ms:.3f}",
            f"{r.p99_ms:.3f}",
        )
    console.print(table)


@bench_app.command("calls")
def calls_command(
    model: Annotated[str, typer.Option(help="a model loaded in that Triton")],
    grpc_url: Annotated[str, typer.Option(help="Triton gRPC host:port")] = "127.0.0.1:8001",
    http_url: Annotated[str, typer.Option(help="Triton HTTP host:port")] = "127.0.0.1:8000",
    calls: Annotated[int, typer.Option(min=1, help="sequential calls per round")] = 2000,
    rounds: Annotated[int, typer.Option(min=1, help="rounds, alternating the clients")] = 3,
) -> None:
    """Wall and CPU time of one Triton call from the control plane's process, per protocol."""
    from tritonclient.utils import InferenceServerException

    from conch_bench.calls import run_calls
    from control_plane.core.errors import ConchError

    try:
        costs = run_calls(grpc_url, http_url, model, calls, rounds)
    except (InferenceServerException, ConchError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    table = Table(title=f"one sequential call to {model} (median of {rounds} rounds)")
    for column in ("protocol", "wall µs", "CPU µs"):
        table.add_column(column, justify="right")
    for cost in costs:
        table.add_row(cost.client, f"{cost.wall_us:,.0f}", f"{cost.cpu_us:,.0f}")
    console.print(table)


@bench_app.command("device-info")
def device_info_command() -> None:
    """Print the machine description the reports include (CPU, nproc, memory, GPUs)."""
    from conch_bench.machine import describe_machine

    console.print_json(json.dumps(describe_machine()))


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root CLI."""
    app.add_typer(bench_app, name="bench")
