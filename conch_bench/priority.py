"""The priority pass: low and urgent requests side by side, on one model, at saturation.

Two wrk processes run at the same time against seed 002's engine door
(`POST /api/inference/predict`) on the model's `__priority` twin (models.py: the
same model file, a config declaring Triton's priority levels): one sends
`"priority": "low"` on most of the connections, the other `"priority": "urgent"`
on a few. Together they saturate the model, so Triton's queue holds both kinds
of request and its scheduler decides who waits. Each reports its own latency
distribution; the ratio (ratios.py) wants urgent's p99 at most half of low's.

Each wrk is reaped with `wait4`, so each arm's client CPU is its own process's,
not the sum of both (which `RUSAGE_CHILDREN` would give).
"""

from __future__ import annotations

import math
import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from conch_bench.conch_arm import ConchEndpoint, probe
from conch_bench.models import BenchModel
from conch_bench.native import (
    WRK_INSTALL_HINT,
    HttpRequestSpec,
    WrkError,
    find_wrk,
    lua_script,
    parse_wrk,
    request_spec,
    to_summary,
)
from conch_bench.ratios import PRIORITY_PAIRS, ArmRun
from conch_bench.stats import RunSummary

PRIORITY_MODELS = ("tabular",)  # the models that get a `__priority` twin and this pass
LOW_CONNECTIONS = 48  # most of the load: the queue urgent requests should overtake
URGENT_CONNECTIONS = 8


@dataclass(frozen=True)
class Stream:
    """One of the wrk processes run side by side."""

    label: str
    spec: HttpRequestSpec
    connections: int


def priority_pass(
    console: Console,
    model: BenchModel,
    conch: ConchEndpoint | None,
    notes: list[str],
    *,
    duration_s: float,
    warmup_s: float,
    threads: int,
    batch_size: int = 1,
) -> list[ArmRun]:
    """`priority-low` and `priority-urgent`, measured at the same time; [] with a note
    saying why when the pass cannot run."""
    why = _unavailable(model, conch)
    if why is not None:
        notes.append(f"priority pass for {model.key}: skipped, {why}")
        return []
    assert conch is not None  # _unavailable said so
    runs: list[ArmRun] = []
    for on_twin, (low_arm, urgent_arm) in zip((False, True), PRIORITY_PAIRS.values(), strict=True):
        streams = []
        for arm, priority, connections in (
            (low_arm, "low", LOW_CONNECTIONS),
            (urgent_arm, "urgent", URGENT_CONNECTIONS),
        ):
            target = conch.engine_target(
                model, conch.url, batch_size, priority=priority, on_twin=on_twin
            )
            problem = probe(target)
            spec = request_spec(target)
            if problem is not None or spec is None:
                notes.append(f"priority pass for {model.key}: skipped, a probe failed: {problem}")
                return runs
            streams.append(Stream(f"{model.key}/{arm}", spec, connections))
        served = model.priority_name if on_twin else model.triton_name
        console.print(
            f"{model.key}: priority pass, {LOW_CONNECTIONS} low and {URGENT_CONNECTIONS} "
            f"urgent connections at once on {served} ..."
        )
        try:
            low, urgent = run_side_by_side(
                streams,
                duration_s=duration_s,
                warmup_s=warmup_s,
                threads=threads,
                batch_size=batch_size,
            )
        except WrkError as exc:
            notes.append(f"priority pass for {model.key}: failed, {exc}")
            return runs
        runs += [ArmRun(model.key, low_arm, low), ArmRun(model.key, urgent_arm, urgent)]
    return runs


def _unavailable(model: BenchModel, conch: ConchEndpoint | None) -> str | None:
    if find_wrk() is None:
        return WRK_INSTALL_HINT
    if conch is None:
        return "no control plane (none started, no --conch-url)"
    if model.priority_name is None or model.key not in conch.priority_ids:
        return f"no `__priority` twin of {model.triton_name} registered with the control plane"
    return None


def run_side_by_side(
    streams: Sequence[Stream],
    *,
    duration_s: float,
    warmup_s: float,
    threads: int,
    batch_size: int = 1,
    wrk: str | None = None,
) -> list[RunSummary]:
    """Every stream's wrk started together, for a warm-up (discarded), then measured."""
    binary = wrk or find_wrk()
    if binary is None:
        raise WrkError(WRK_INSTALL_HINT)
    with tempfile.TemporaryDirectory(prefix="conch-wrk-pair-") as tmp:
        scripts = [_script(Path(tmp) / str(i), s.spec) for i, s in enumerate(streams)]

        def argvs(seconds: float) -> list[list[str]]:
            return [
                [
                    binary,
                    f"-t{_threads(threads, s)}",
                    f"-c{s.connections}",
                    f"-d{max(1, math.ceil(seconds))}s",
                    *("--latency", "--timeout", "60s", "-s", str(script), s.spec.url),
                ]
                for s, script in zip(streams, scripts, strict=True)
            ]

        if warmup_s > 0:
            _together(argvs(warmup_s), warmup_s)
        results = _together(argvs(duration_s), duration_s)
    return [
        to_summary(
            parse_wrk(output),
            label=stream.label,
            concurrency=stream.connections,
            threads=_threads(threads, stream),
            cpu_s=cpu_s,
            batch_size=batch_size,
        )
        for stream, (output, cpu_s) in zip(streams, results, strict=True)
    ]


def _threads(threads: int, stream: Stream) -> int:
    return max(1, min(threads, stream.connections))  # wrk wants a connection per thread


def _script(directory: Path, spec: HttpRequestSpec) -> Path:
    directory.mkdir()
    paths = [directory / f"body{i}" for i in range(len(spec.bodies))]
    for path, body in zip(paths, spec.bodies, strict=True):
        path.write_bytes(body)
    script = directory / "request.lua"
    script.write_text(lua_script(spec, paths))
    return script


def _together(argvs: list[list[str]], seconds: float) -> list[tuple[str, float]]:
    """Run the wrk commands at once (each lasts `seconds`); their stdout and CPU seconds."""
    processes = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for argv in argvs
    ]
    try:
        deadline = time.monotonic() + seconds + 90
        cpu = [_reap(p, deadline) for p in processes]
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                process.wait()
    out = []
    for process, cpu_s in zip(processes, cpu, strict=True):
        assert process.stdout is not None and process.stderr is not None
        stdout, stderr = process.stdout.read(), process.stderr.read()
        process.stdout.close()
        process.stderr.close()
        if process.returncode != 0:
            raise WrkError(f"wrk exited {process.returncode}: {stderr.strip()[-300:]}")
        out.append((stdout, cpu_s))
    return out


def _reap(process: subprocess.Popen[str], deadline: float) -> float:
    """Wait for one wrk; its own CPU seconds from wait4's rusage."""
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid == process.pid:
            # Reaped here, not by Popen: tell it, so it neither waits nor warns.
            process.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            raise WrkError(f"wrk (pid {process.pid}) ran 90 s past its duration")
        time.sleep(0.05)
