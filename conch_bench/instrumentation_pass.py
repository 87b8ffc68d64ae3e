"""The instrumentation pass of `conch bench suite`: what metrics, access logs and
traces cost on the prediction hot path, side by side in one run.

It comes with the conch-rest arm. Four more control planes are started beside the
suite's (conch_arm.another_plane: the same database, Redis, Triton, key and
registered model), differing only in their instrumentation (instrumentation_report.ARMS):
bare (access log off, tracing off; Prometheus metrics have no switch, so every arm
keeps them), as shipped (JSON access log on), traces exported at the recommended
1% sampling, and every request traced. The traced planes export to a local OTLP
endpoint (otlp_sink.py) that counts what it receives per arm.

The load is conch-rest's: the Python client (loadgen.py), one row, one key, the
limiter on, at c=64 (saturation) and c=1. The arms are interleaved in short
rounds (at c=64 a b c d, then at c=1 a b c d, then the next round), so drift on a
busy machine hits them alike; instrumentation_report.py takes medians of the
per-round pairs and judges them against the issue's targets.
"""

from __future__ import annotations

from contextlib import ExitStack

from rich.console import Console

from conch_bench.conch_arm import ConchEndpoint, another_plane, probe
from conch_bench.hot_path import tree_cpu_s
from conch_bench.instrumentation_report import (
    ARMS,
    BARE,
    HIGH,
    LOW,
    SHIPPED,
    TRACE_RATIO,
    TRACED,
    InstrumentationResult,
    Point,
)
from conch_bench.loadgen import LoadSpec, run_load
from conch_bench.models import BenchModel
from conch_bench.otlp_sink import ARM_ATTRIBUTE, SpanSink
from conch_bench.targets import RestTarget
from conch_embedded.process import ProcessStartError

INSTRUMENTATION_MODELS = ("tabular",)  # one model is enough: the cost is per request
DEFAULT_ROUNDS = 5


def arm_env(arm: str, sink: str, trace_ratio: float = TRACE_RATIO) -> dict[str, str]:
    """The environment one arm's control plane gets on top of the suite's."""
    env = {
        "CONCH_TASK_WORKERS": "0",  # as the suite's second plane: no async work competing
        "LOG_LEVEL": "INFO",  # whatever the shell says: the access line is an INFO record
        "OTEL_RESOURCE_ATTRIBUTES": f"{ARM_ATTRIBUTE}={arm}",  # read only when tracing
    }
    if arm in (BARE, SHIPPED):
        # A shell's OTEL_EXPORTER_OTLP_ENDPOINT must not turn tracing on here.
        access_log = "false" if arm == BARE else "true"
        return {**env, "CONCH_ACCESS_LOG": access_log, "OTEL_SDK_DISABLED": "true"}
    sampler = (
        ("parentbased_traceidratio", f"{trace_ratio:g}") if arm == TRACED else ("always_on", "")
    )
    return {
        **env,
        "CONCH_ACCESS_LOG": "true",
        "OTEL_SDK_DISABLED": "false",
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{sink}/v1/traces",
        "OTEL_TRACES_SAMPLER": sampler[0],
        "OTEL_TRACES_SAMPLER_ARG": sampler[1],
    }


def instrumentation_pass(
    console: Console,
    model: BenchModel,
    conch: ConchEndpoint | None,
    notes: list[str],
    *,
    rounds: int,
    duration_s: float,
    warmup_s: float,
    processes: int,
    workers: int = 1,
    batch_size: int = 1,
    trace_ratio: float = TRACE_RATIO,
) -> InstrumentationResult | None:
    """Every arm at HIGH and LOW, `rounds` times interleaved; None with a note saying
    why when the pass cannot run."""
    where = f"instrumentation pass for {model.key}"
    if conch is None or not conch.env:
        notes.append(f"{where}: skipped, needs the control plane the suite starts")
        return None
    result = InstrumentationResult(model.key, rounds, trace_ratio)
    with SpanSink() as sink:
        with ExitStack() as planes:
            console.print(f"{model.key}: instrumentation pass, starting {len(ARMS)} control planes")
            targets: dict[str, tuple[RestTarget, int | None]] = {}
            for arm in ARMS:
                overrides = arm_env(arm, sink.endpoint, trace_ratio)
                try:
                    url, pid = planes.enter_context(
                        another_plane(conch, arm, overrides, workers=workers)
                    )
                except ProcessStartError as exc:
                    notes.append(f"{where}: skipped, {arm} did not start: {exc}")
                    return None
                target = conch.target(model, url, batch_size)
                problem = probe(target)
                if problem is not None:
                    notes.append(f"{where}: skipped, a probe of {arm} failed: {problem}")
                    return None
                targets[arm] = (target, pid)
            for r in range(rounds):
                for concurrency in (HIGH, LOW):
                    for arm, (target, pid) in targets.items():
                        point = _measure(
                            target, pid, arm, concurrency, r, duration_s=duration_s,
                            warmup_s=warmup_s, processes=processes, batch_size=batch_size,
                            label=f"{model.key}/{arm}",
                        )  # fmt: skip
                        result.points.append(point)
                        console.print(_line(model.key, rounds, point))
        # The planes have stopped: each flushed its spans on the way out.
        result.spans = sink.counts()
    return result


def _measure(
    target: RestTarget,
    pid: int | None,
    arm: str,
    concurrency: int,
    round_: int,
    *,
    duration_s: float,
    warmup_s: float,
    processes: int,
    batch_size: int,
    label: str,
) -> Point:
    spec = LoadSpec(
        concurrency=concurrency,
        duration_s=duration_s,
        warmup_s=warmup_s,
        processes=min(processes, concurrency),
    )
    before = tree_cpu_s({"front": pid})["front"]
    summary = run_load(target, spec, label=label, batch_size=batch_size)
    after = tree_cpu_s({"front": pid})["front"]
    # /proc is read around the whole run, warm-up included: count the warm-up's
    # requests at the window's rate.
    served = summary.throughput_rps * (warmup_s + duration_s)
    cpu_us = (
        None if before is None or after is None or served <= 0 else (after - before) / served * 1e6
    )
    return Point(
        arm=arm,
        concurrency=concurrency,
        round=round_,
        requests=summary.requests,
        errors=summary.errors,
        throughput_rps=summary.throughput_rps,
        p50_ms=summary.latency_ms["p50"],
        p99_ms=summary.latency_ms["p99"],
        cpu_us=cpu_us,
    )


def _line(model: str, rounds: int, p: Point) -> str:
    cpu = "" if p.cpu_us is None else f"  CPU {p.cpu_us:,.0f} µs/req"
    return (
        f"{model:<12} {p.arm:<18} round {p.round + 1}/{rounds} c={p.concurrency:<3} "
        f"{p.throughput_rps:>8,.0f} req/s  p50 {p.p50_ms:7.3f} ms  p99 {p.p99_ms:7.2f} ms  "
        f"errors {p.errors}{cpu}"
    )
