"""`conch bench suite`: every arm against every model, side by side in one run.

One embedded Triton serves the bench repository (each model plus its
`__nobatch` twin); the plain-FastAPI baseline runs beside it as a uvicorn
subprocess; Conch's REST arms go to a control plane given by URL. Arms run one
after another on the same machine, so their ratios are comparable.

Load generators: triton-http, conch-v2 and conch-engine are driven by `wrk`
(native.py), the others by the Python client (loadgen.py: gRPC, per-request
keys, mixed bodies); conch-v2 and conch-engine are measured through the Python
client too, to compare with conch-rest. Each model ends
with an open-loop pass: every arm offered the same fixed rate, a fraction of the
slowest arm's best throughput, for latency under load without coordinated
omission. With conch-engine, the tabular model also gets a priority pass
(priority.py): low and urgent requests side by side at saturation, under wrk;
and an async pass (async_pass.py): tasks submitted and polled, against the
synchronous door at saturation, with 100-row tasks, and one at a time; and a
stream pass (stream_pass.py): rows/s through one stream against single-row
predict calls, same client and concurrency. With conch-rest, each float-row
model gets a hot-path pass (hot_path_pass.py): Conch, Triton's own HTTP endpoint
and the tuned baseline under hey at concurrency 1 and 64, with CPU per request
and a stall check; a stall in Conch fails the suite.
With conch-rest, the tabular model also gets an instrumentation pass
(instrumentation_pass.py): control planes with the access log and traces off, as
shipped, and traced, interleaved in rounds, against the issue's cost targets.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from conch_bench.async_pass import ASYNC_MODELS, async_pass
from conch_bench.baseline import BaselineServer, Variant
from conch_bench.conch_arm import ConchEndpoint, conch_stack, probe
from conch_bench.hot_path import HotPathRow
from conch_bench.hot_path_pass import hot_path_pass, hot_path_runs
from conch_bench.instrumentation_pass import (
    DEFAULT_ROUNDS,
    INSTRUMENTATION_MODELS,
    instrumentation_pass,
)
from conch_bench.instrumentation_report import (
    InstrumentationResult,
)
from conch_bench.loadgen import LoadSpec, run_load
from conch_bench.models import BenchModel, InstanceKind, build_bench_models
from conch_bench.native import WRK_INSTALL_HINT, WrkError, find_wrk, request_spec, run_wrk
from conch_bench.priority import PRIORITY_MODELS, priority_pass
from conch_bench.ratios import (
    CLIENT_CHECK_ARM,
    ENGINE_ARM,
    HTTP_CHECK_ARM,
    PYTHON_TWINS,
    ArmRun,
)
from conch_bench.stats import RunSummary
from conch_bench.stream_pass import STREAM_MODELS, stream_pass
from conch_bench.suite_report import SuiteResult, write_reports
from conch_bench.targets import Protocol, RestTarget, Target, render_bodies, triton_target
from conch_embedded.triton_server import EmbeddedTriton
from conch_manifest.locations import PROJECT_ROOT

ALL_ARMS = (
    "triton-grpc",
    "triton-http",
    "triton-grpc-nobatch",
    "conch-rest",
    "conch-rest-manykeys",
    "conch-rest-nolimit",
    "conch-engine",
    "conch-v2",
    "baseline-naive",
    "baseline-tuned",
)
ALL_MODELS = ("tabular", "mlp", "recommender")
_CONCH_ARMS = {
    "conch-rest", "conch-rest-manykeys", "conch-rest-nolimit", "conch-engine", "conch-v2",
}  # fmt: skip
# Driven by wrk; skipped without it. The Conch doors among them are measured again
# through the Python client (PYTHON_TWINS) to compare with conch-rest.
_NATIVE_ARMS = {"triton-http", "conch-v2", "conch-engine"}


@dataclass(frozen=True)
class SuiteOptions:
    repository: Path
    output_dir: Path  # BENCHMARKS.md here, results.json and plots in bench/
    concurrencies: tuple[int, ...] = (1, 16, 64, 256)
    duration_s: float = 10.0
    warmup_s: float = 2.0
    processes: int = 2
    batch_size: int = 1
    models: tuple[str, ...] = ALL_MODELS
    arms: tuple[str, ...] = ALL_ARMS
    instance_kind: InstanceKind = "cpu"
    workers: int = 1  # uvicorn workers of the baseline (and, by convention, of Conch's arm)
    use_demo: bool = True
    conch: ConchEndpoint | None = None  # an external control plane; None: start our own
    start_conch: bool = True
    bare_torch: bool = True  # the MLP called directly with torch, for reference
    client_check: bool = True  # gRPC's best point with 2x clients; HTTP's through Python
    open_loop_fraction: float = 0.5  # of the slowest arm's best throughput; 0: no open loop
    priority: bool = True  # with conch-engine: low and urgent side by side (priority.py)
    async_predictions: bool = True  # with conch-engine: async tasks vs sync (async_pass.py)
    streams: bool = True  # with conch-engine: one stream vs 1-row predict (stream_pass.py)
    hot_path: bool = True  # with conch-rest: hey, CPU per request, stalls (hot_path_pass.py)
    instrumentation: bool = True  # with conch-rest: logs/traces off vs on (instrumentation_pass.py)
    instrumentation_rounds: int = DEFAULT_ROUNDS  # each point's duration split over them
    notes: tuple[str, ...] = ()  # context for the report (e.g. "machine shared with CI")

    def settings(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("conch")
        data.pop("notes")  # recorded under "notes"
        data["conch_url"] = self.conch.url if self.conch else None
        return {k: (_shown(v) if isinstance(v, Path) else v) for k, v in data.items()}


def _shown(path: Path) -> str:
    """Paths inside the checkout relative to it: the report must not depend on where it lives."""
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def run_suite(options: SuiteOptions, console: Console) -> SuiteResult:
    started = datetime.now(UTC).isoformat(timespec="seconds")
    console.print(f"building models in {options.repository} ...")
    models = build_bench_models(
        options.repository,
        instance_kind=options.instance_kind,
        use_demo=options.use_demo,
        keys=options.models,
        priority_keys=PRIORITY_MODELS if _wants_priority(options) else (),
    )
    notes = [*options.notes] + [
        f"model {key}: not available in this build"
        for key in options.models
        if key not in {m.key for m in models}
    ]
    names = [n for m in models for n in (m.triton_name, m.nobatch_name)]
    names += [m.priority_name for m in models if m.priority_name is not None]
    triton = EmbeddedTriton.on_free_ports(options.repository, load_models=names)
    runs: list[ArmRun] = []
    hot: list[HotPathRow] = []
    instrumented: list[InstrumentationResult] = []
    console.print(f"starting Triton with {', '.join(names)} ...")
    with triton, ExitStack() as stack:
        conch = options.conch
        if conch is None and _CONCH_ARMS & set(options.arms) and options.start_conch:
            console.print("starting the Conch control planes (rate limit on / off) ...")
            try:
                conch = stack.enter_context(
                    conch_stack(triton, options.repository, models, workers=options.workers)
                )
            except Exception as exc:  # the suite still measures every other arm
                notes.append(f"conch-rest arms skipped: control plane did not start ({exc})")
        arms = _available_arms(options, notes)
        for model in models:
            for arm in arms:
                with _arm_target(arm, model, triton, options, conch, notes) as target:
                    if target is None:
                        continue
                    for concurrency in options.concurrencies:
                        runs.append(_measure(console, model, arm, target, concurrency, options))
                    if arm == "triton-grpc" and options.client_check:
                        runs.append(_client_check(console, model, target, runs, options))
                    if arm == "triton-http" and options.client_check:
                        runs.append(_http_client_check(console, model, target, runs, options))
                    twin = PYTHON_TWINS.get(arm)
                    if twin is not None:
                        for concurrency in options.concurrencies:
                            runs.append(
                                _measure(
                                    console, model, twin, target, concurrency, options,
                                    native=False,
                                )
                            )  # fmt: skip
            if model.priority_name is not None:
                runs += _priority_pass(console, model, conch, options, notes)
            if _wants_async(options, model):
                runs += _async_pass(console, model, conch, options, notes, runs)
            if options.streams and ENGINE_ARM in options.arms and model.key in STREAM_MODELS:
                runs += stream_pass(console, model, conch, notes, duration_s=options.duration_s)
            if options.hot_path and "conch-rest" in options.arms:
                rows = hot_path_pass(
                    console, model, triton, conch, notes, duration_s=options.duration_s,
                    warmup_s=options.warmup_s, workers=options.workers,
                    batch_size=options.batch_size,
                )  # fmt: skip
                hot += rows
                runs += hot_path_runs(rows)
            if _wants_instrumentation(options, model):
                instrumented += _instrumentation_pass(console, model, conch, options, notes)
            if options.open_loop_fraction > 0:
                runs += _open_loop_pass(console, model, arms, triton, options, conch, runs)
    bare = _bare_torch(console, options) if options.bare_torch and "mlp" in options.models else []
    return write_reports(
        options.output_dir, options.settings(), console, runs, notes, started, bare, hot,
        instrumented,
    )  # fmt: skip


def _wants_instrumentation(options: SuiteOptions, model: BenchModel) -> bool:
    """Measured on conch-rest's door: it comes with the conch-rest arm."""
    return (
        options.instrumentation
        and "conch-rest" in options.arms
        and model.key in INSTRUMENTATION_MODELS
    )


def _instrumentation_pass(
    console: Console,
    model: BenchModel,
    conch: ConchEndpoint | None,
    options: SuiteOptions,
    notes: list[str],
) -> list[InstrumentationResult]:
    """Each arm gets the suite's point duration in all, split over the rounds."""
    rounds = max(1, options.instrumentation_rounds)
    result = instrumentation_pass(
        console, model, conch, notes, rounds=rounds,
        duration_s=max(1.0, options.duration_s / rounds), warmup_s=min(options.warmup_s, 1.0),
        processes=options.processes, workers=options.workers, batch_size=options.batch_size,
    )  # fmt: skip
    return [] if result is None else [result]


def _wants_priority(options: SuiteOptions) -> bool:
    """The priority pass measures the engine door: it comes with the conch-engine arm."""
    return options.priority and "conch-engine" in options.arms


def _priority_pass(
    console: Console,
    model: BenchModel,
    conch: ConchEndpoint | None,
    options: SuiteOptions,
    notes: list[str],
) -> list[ArmRun]:
    runs = priority_pass(
        console,
        model,
        conch,
        notes,
        duration_s=options.duration_s,
        warmup_s=options.warmup_s,
        threads=options.processes,
        batch_size=options.batch_size,
    )
    for run in runs:
        _print(console, model.key, run.arm, f"c={run.summary.concurrency}", run.summary)
    return runs


def _wants_async(options: SuiteOptions, model: BenchModel) -> bool:
    """The async pass compares with the engine door: it comes with the conch-engine arm."""
    return options.async_predictions and ENGINE_ARM in options.arms and model.key in ASYNC_MODELS


def _async_pass(
    console: Console,
    model: BenchModel,
    conch: ConchEndpoint | None,
    options: SuiteOptions,
    notes: list[str],
    runs: list[ArmRun],
) -> list[ArmRun]:
    """100-row synchronous requests go at the conch-engine arm's best concurrency."""
    engine = [r.summary for r in runs if r.model == model.key and r.arm == ENGINE_ARM]
    measured = [s for s in engine if s.requests > 0]
    best = max(measured, key=lambda s: s.throughput_rps, default=None)
    return async_pass(
        console,
        model,
        conch,
        notes,
        duration_s=options.duration_s,
        warmup_s=options.warmup_s,
        processes=options.processes,
        engine_concurrency=max(options.concurrencies) if best is None else best.concurrency,
    )


def _available_arms(options: SuiteOptions, notes: list[str]) -> list[str]:
    if find_wrk() is not None:
        return list(options.arms)
    skipped = [a for a in options.arms if a in _NATIVE_ARMS]
    if skipped:
        notes.append(
            f"{', '.join(skipped)}: skipped, {WRK_INSTALL_HINT}; the Python client tops out "
            "near 5k req/s and would measure itself, not Triton"
        )
    return [a for a in options.arms if a not in _NATIVE_ARMS]


def _bare_torch(console: Console, options: SuiteOptions) -> list[dict[str, Any]]:
    """After the servers are gone, so nothing else competes for the device."""
    from conch_bench.baretorch import run_bare_torch

    device = "cuda" if options.instance_kind == "gpu" else "cpu"
    console.print(f"bare torch MLP on {device} ...")
    results = run_bare_torch(
        (1, 8, 64, 256), duration_s=min(options.duration_s, 2.0), device=device
    )
    return [{**asdict(r), "device": device} for r in results]


def _client_check(
    console: Console, model: BenchModel, target: Target, runs: list[ArmRun], options: SuiteOptions
) -> ArmRun:
    """gRPC at its best concurrency again, with twice the client processes.

    The same throughput shows the client was not the limit; more shows it was.
    """
    grpc = [r.summary for r in runs if r.model == model.key and r.arm == "triton-grpc"]
    best = max(grpc, key=lambda s: s.throughput_rps).concurrency
    processes = 2 * options.processes
    return _measure(console, model, CLIENT_CHECK_ARM, target, best, options, processes=processes)


def _http_client_check(
    console: Console, model: BenchModel, target: Target, runs: list[ArmRun], options: SuiteOptions
) -> ArmRun:
    """triton-http at wrk's best concurrency again, through the Python client.

    The two must agree within the noise; otherwise the report names the client
    that limited it.
    """
    http = [r.summary for r in runs if r.model == model.key and r.arm == "triton-http"]
    best = max(http, key=lambda s: s.throughput_rps).concurrency
    return _measure(console, model, HTTP_CHECK_ARM, target, best, options, native=False)


def _open_loop_pass(
    console: Console,
    model: BenchModel,
    arms: list[str],
    triton: EmbeddedTriton,
    options: SuiteOptions,
    conch: ConchEndpoint | None,
    runs: list[ArmRun],
) -> list[ArmRun]:
    """Every measured arm at one fixed rate: a fraction of the slowest arm's best."""
    measured = [a for a in arms if any(r.model == model.key and r.arm == a for r in runs)]
    bests = [
        max(r.summary.throughput_rps for r in runs if r.model == model.key and r.arm == arm)
        for arm in measured
    ]
    if not bests or min(bests) <= 0:
        return []
    rate = float(max(1, round(min(bests) * options.open_loop_fraction)))
    spec = LoadSpec(
        mode="open",
        rate=rate,
        duration_s=options.duration_s,
        warmup_s=options.warmup_s,
        processes=options.processes,
    )
    out = []
    for arm in measured:
        with _arm_target(arm, model, triton, options, conch, []) as target:
            if target is None:
                continue
            summary = run_load(
                target, spec, label=f"{model.key}/{arm}", batch_size=options.batch_size
            )
            _print(console, model.key, arm, f"open-loop {rate:g}/s", summary)
            out.append(ArmRun(model.key, arm, summary))
    return out


def _print(console: Console, model: str, arm: str, load: str, s: RunSummary) -> None:
    extra = f"  late {s.late}" if s.late else ""
    console.print(
        f"{model:<12} {arm:<22} {load:<16} {s.throughput_rps:>9,.0f} req/s  "
        f"p50 {s.latency_ms['p50']:8.2f} ms  p99 {s.latency_ms['p99']:8.2f} ms  "
        f"errors {s.errors}{extra}  {s.client} CPU {'/'.join(f'{c:.0%}' for c in s.client_cpu)}"
    )


def _measure(
    console: Console,
    model: BenchModel,
    arm: str,
    target: Target,
    concurrency: int,
    options: SuiteOptions,
    *,
    processes: int | None = None,
    native: bool | None = None,
) -> ArmRun:
    label = f"{model.key}/{arm}"
    workers = min(processes or options.processes, concurrency)
    http = request_spec(target) if (arm in _NATIVE_ARMS if native is None else native) else None
    if http is not None:
        try:
            summary = run_wrk(
                http,
                concurrency=concurrency,
                duration_s=options.duration_s,
                warmup_s=options.warmup_s,
                threads=workers,
                label=label,
                batch_size=options.batch_size,
            )
        except WrkError as exc:  # a failed point is an errored run, not a crashed suite
            summary = _failed(label, concurrency, str(exc))
    else:
        spec = LoadSpec(
            concurrency=concurrency,
            duration_s=options.duration_s,
            warmup_s=options.warmup_s,
            processes=workers,
        )
        summary = run_load(target, spec, label=label, batch_size=options.batch_size)
    _print(console, model.key, arm, f"c={concurrency}", summary)
    return ArmRun(model.key, arm, summary)


def _failed(label: str, concurrency: int, message: str) -> RunSummary:
    nan = float("nan")
    return RunSummary(
        label=label,
        mode="closed",
        concurrency=concurrency,
        rate=None,
        processes=0,
        duration_s=0.0,
        requests=0,
        errors=1,
        throughput_rps=0.0,
        latency_ms={k: nan for k in ("p50", "p90", "p99", "p99.9", "mean", "max")},
        client_cpu=[],
        first_errors=[message],
        client="wrk",
    )


@contextmanager
def _arm_target(
    arm: str,
    model: BenchModel,
    triton: EmbeddedTriton,
    options: SuiteOptions,
    conch: ConchEndpoint | None,
    notes: list[str],
) -> Iterator[Target | None]:
    """The target for one arm, with whatever server it needs running meanwhile."""
    batch = options.batch_size
    if arm in ("triton-grpc", "triton-http", "triton-grpc-nobatch"):
        protocol: Protocol = "http" if arm == "triton-http" else "grpc"
        url = triton.http_url if protocol == "http" else triton.grpc_url
        name = model.nobatch_name if arm.endswith("nobatch") else model.triton_name
        yield triton_target(protocol, url, name, batch_size=batch, int_high=model.int_high)
        return
    if arm in ("baseline-naive", "baseline-tuned"):
        if model.onnx_path is None or not model.features:
            notes.append(f"{arm}: no plain-FastAPI arm for {model.key} (not a float-row model)")
            yield None
            return
        variant: Variant = "tuned" if arm == "baseline-tuned" else "naive"
        with ExitStack() as stack:
            server = stack.enter_context(
                BaselineServer(model.onnx_path, workers=options.workers, variant=variant)
            )
            bodies = render_bodies(model.rest_template, rows=batch, features=model.features)
            yield RestTarget(url=f"{server.url}/predict", bodies=bodies)
        return
    if arm == "conch-engine" and not model.features:
        notes.append(f"{arm}: no feature-row body for {model.key}")
        yield None
        return
    limited = arm != "conch-rest-nolimit"
    base = None if conch is None else (conch.url if limited else conch.url_nolimit)
    if conch is None or base is None:
        why = (
            "no control plane (none started, no --conch-url)"
            if conch is None
            else ("no --conch-url-nolimit given")
        )
        if f"{arm}: skipped, {why}" not in notes:
            notes.append(f"{arm}: skipped, {why}")
        yield None
        return
    many = arm == "conch-rest-manykeys"
    if many and not conch.many_keys:
        notes.append(f"{arm}: skipped, an external control plane comes with one key")
        yield None
        return
    if arm == "conch-v2":
        # Triton's own binary-tensor body, sent to Conch's door with a key.
        tensors = triton_target("http", triton.http_url, model.triton_name, batch_size=batch)
        target = conch.v2_target(tensors, base)
    elif arm == "conch-engine":
        target = conch.engine_target(model, base, batch)
    else:
        target = conch.target(model, base, batch, many_keys=many)
    problem = probe(target)
    if problem is not None:
        notes.append(f"{arm} for {model.key}: skipped, a probe request failed: {problem}")
        yield None
        return
    yield target
