"""The hot path under `hey`: per-request timings, stall clusters, CPU per request.

wrk reports a histogram, where a stop-the-world pause in a server is only a
fatter tail. Debian's `hey -o csv` writes one line per response (its latency and
when it was sent), so a pause shows as what it is: many responses finishing slow
at the same moment, every request in flight held at once. Around the measured
run the CPU time of the serving processes is read from /proc, each with all its
descendants (Triton's Python backend stubs, uvicorn's workers), so a request's
cost in the control plane can be set beside its cost in Triton.

hey's CSV has 0.1 ms resolution and leaves out requests that failed without a
response (connection errors); a run where nothing was answered reports 0 req/s.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from conch_bench.native import HttpRequestSpec
from conch_bench.stats import PERCENTILES, FloatArray, RunSummary, percentile, percentile_key

HEY_INSTALL_HINT = "hey not found on PATH (Debian/Ubuntu: apt-get install -y hey)"
HEY_COLUMNS = (
    "response-time",
    "DNS+dialup",
    "DNS",
    "Request-write",
    "Response-delay",
    "Response-read",
    "status-code",
    "offset",
)
HEY_RESOLUTION_S = 1e-4  # it prints seconds with four decimals
SLOW_FACTOR = 5.0  # a response this many times the run's median is slow
CLUSTER_GAP_S = 0.020  # slow completions at most this far apart belong together
MIN_STALL = 4  # a cluster is a stall from max(MIN_STALL, concurrency / 4) responses
# The measured run opens its connections afresh (a new hey process): completions in
# its first half second are left out of the stall check, not of the percentiles.
SETUP_S = 0.5
_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


class HeyError(RuntimeError):
    """hey did not run, or printed no CSV this parser understands."""


def find_hey() -> str | None:
    return shutil.which("hey")


@dataclass(frozen=True)
class HeySamples:
    """One hey run, a row per answered request, in seconds from hey's start."""

    latency_s: FloatArray
    start_s: FloatArray  # hey's `offset`: when the request was sent
    status: npt.NDArray[np.int64]

    @property
    def completion_s(self) -> FloatArray:
        return self.start_s + self.latency_s


def parse_hey_csv(text: str) -> HeySamples:
    lines = text.strip().splitlines()
    if not lines or tuple(lines[0].strip().split(",")) != HEY_COLUMNS:
        head = lines[0][:120] if lines else ""
        raise HeyError(f"not hey's CSV (expected the header {','.join(HEY_COLUMNS)}): {head!r}")
    rows = (
        np.loadtxt(io.StringIO("\n".join(lines[1:])), delimiter=",", ndmin=2)
        if len(lines) > 1
        else np.empty((0, len(HEY_COLUMNS)))
    )
    return HeySamples(
        latency_s=rows[:, 0].astype(np.float64),
        start_s=rows[:, 7].astype(np.float64),
        status=rows[:, 6].astype(np.int64),
    )


@dataclass(frozen=True)
class Stall:
    """Slow responses finishing together: the server held what was in flight."""

    start_s: float  # first slow completion, seconds into the measured run
    size: int
    worst_ms: float
    span_ms: float  # first to last slow completion


def stall_size(concurrency: int) -> int:
    return max(MIN_STALL, math.ceil(concurrency / 4))


def slow_threshold_s(samples: HeySamples) -> float:
    median = percentile(samples.latency_s, 50) if samples.latency_s.size else math.nan
    return SLOW_FACTOR * max(median, HEY_RESOLUTION_S)


def find_stalls(samples: HeySamples, concurrency: int, *, skip_s: float = SETUP_S) -> list[Stall]:
    """Clusters of slow completions (each ≤ CLUSTER_GAP_S after the previous one)
    holding at least `stall_size(concurrency)` responses."""
    if samples.latency_s.size == 0:
        return []
    since = samples.completion_s - samples.start_s.min()
    slow = (samples.latency_s > slow_threshold_s(samples)) & (since >= skip_s)
    order = np.argsort(since[slow], kind="stable")
    at, latency = since[slow][order], samples.latency_s[slow][order]
    stalls = []
    for group in np.split(np.arange(at.size), np.flatnonzero(np.diff(at) > CLUSTER_GAP_S) + 1):
        if group.size >= stall_size(concurrency):
            first, last = float(at[group[0]]), float(at[group[-1]])
            worst = float(latency[group].max())
            stalls.append(Stall(first, int(group.size), worst * 1e3, (last - first) * 1e3))
    return stalls


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds of it and of its reaped children), from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # After the ")" closing the command name: state, ppid, ..., utime is the 12th.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue  # exited while we looked
        utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
        table[int(entry.name)] = (int(fields[1]), (utime + stime + cutime + cstime) * _TICK_S)
    return table


def tree_cpu_s(pids: Mapping[str, int | None]) -> dict[str, float | None]:
    """CPU seconds of each process with all its descendants; None where it is gone.

    Reaped children count in their parent's cutime/cstime, living ones by their own
    times: a worker that exits between two readings moves, it is not lost."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    out: dict[str, float | None] = {}
    for role, root in pids.items():
        if root is None or root not in table:
            out[role] = None
            continue
        total, stack = 0.0, [root]
        while stack:
            pid = stack.pop()
            total += table[pid][1]
            stack += children.get(pid, [])
        out[role] = total
    return out


def run_hey(
    spec: HttpRequestSpec, *, concurrency: int, duration_s: float, hey: str | None = None
) -> tuple[HeySamples, float]:
    """One closed-loop hey run (`-c` workers, one request in flight each): the
    answered requests and hey's own CPU seconds (wait4's rusage)."""
    binary = hey or find_hey()
    if binary is None:
        raise HeyError(HEY_INSTALL_HINT)
    headers = {k: v for k, v in spec.headers.items() if k.lower() != "content-type"}
    content_type = next(
        (v for k, v in spec.headers.items() if k.lower() == "content-type"), "text/plain"
    )
    with tempfile.TemporaryDirectory(prefix="conch-hey-") as tmp:
        body, out = Path(tmp) / "body", Path(tmp) / "out.csv"
        body.write_bytes(spec.bodies[0])  # hey sends one body: the first
        argv = [binary, "-z", f"{duration_s:g}s", "-c", str(concurrency), "-o", "csv"]
        argv += ["-m", spec.method, "-T", content_type, "-D", str(body)]
        for name, value in headers.items():
            argv += ["-H", f"{name}: {value}"]
        with out.open("wb") as stdout:  # a file, not a pipe: the CSV is megabytes
            process = subprocess.Popen([*argv, spec.url], stdout=stdout, stderr=subprocess.PIPE)
        code, cpu_s = _reap(process, deadline=time.monotonic() + duration_s + 90)
        assert process.stderr is not None
        stderr = process.stderr.read().decode(errors="replace")
        process.stderr.close()
        if code != 0:
            raise HeyError(f"hey exited {code}: {stderr.strip()[-300:]}")
        return parse_hey_csv(out.read_text()), cpu_s


def _reap(process: subprocess.Popen[bytes], deadline: float) -> tuple[int, float]:
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid == process.pid:
            # Reaped here, not by Popen: tell it, so it neither waits nor warns.
            process.returncode = os.waitstatus_to_exitcode(status)
            return process.returncode, usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise HeyError(f"hey (pid {process.pid}) ran 90 s past its duration")
        time.sleep(0.05)


@dataclass
class HotPathRow:
    """One arm at one concurrency under hey, with the servers' CPU per request."""

    model: str
    arm: str
    concurrency: int
    requests: int  # answered, any status
    non_2xx: int
    window_s: float  # first send to last completion
    throughput_rps: float  # 2xx responses per second of the window
    latency_ms: dict[str, float]  # p50, p90, p99, p99.9, mean, max
    # CPU µs per answered request: "front" (the control plane, or the baseline
    # server on its own arm), "triton", "load_generator"; None: not measured.
    cpu_us: dict[str, float | None]
    front: str  # what "front" was
    slow_ms: float  # SLOW_FACTOR x the median
    stall_size: int
    stalls: list[Stall] = field(default_factory=list)
    warmup_s: float = 0.0  # an unmeasured hey run first, this long

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HotPathRow:
        fields = dict(data)
        fields["stalls"] = [Stall(**s) for s in fields.get("stalls", [])]
        fields["latency_ms"] = {
            k: math.nan if v is None else v for k, v in fields["latency_ms"].items()
        }
        return cls(**fields)

    def summary(self) -> RunSummary:
        """The row in the suite's own tables (client "hey")."""
        cpu = self.cpu_us.get("load_generator")
        busy = cpu * self.throughput_rps / 1e6 if cpu is not None else 0.0
        return RunSummary(
            label=f"{self.model}/{self.arm}",
            mode="closed",
            concurrency=self.concurrency,
            rate=None,
            processes=1,
            duration_s=self.window_s,
            requests=self.requests - self.non_2xx,
            errors=self.non_2xx,
            throughput_rps=self.throughput_rps,
            latency_ms=dict(self.latency_ms),
            client_cpu=[busy],
            first_errors=[f"hey: {self.non_2xx} non-2xx responses"] if self.non_2xx else [],
            client="hey",
        )


def measure(
    spec: HttpRequestSpec,
    *,
    model: str,
    arm: str,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    processes: Mapping[str, int | None],
    front: str,
    hey: str | None = None,
) -> HotPathRow:
    """A warm-up hey (discarded), then the measured one with /proc read around it;
    `processes` maps "front" and "triton" to the pids whose trees are read."""
    if warmup_s > 0:
        run_hey(spec, concurrency=concurrency, duration_s=warmup_s, hey=hey)
    before = tree_cpu_s(processes)
    samples, hey_cpu_s = run_hey(spec, concurrency=concurrency, duration_s=duration_s, hey=hey)
    after = tree_cpu_s(processes)
    answered = int(samples.latency_s.size)
    cpu_us: dict[str, float | None] = {}
    for role in processes:
        start, end = before[role], after[role]
        if start is None or end is None or answered == 0:
            cpu_us[role] = None  # gone, or nothing to divide by
        else:
            cpu_us[role] = (end - start) / answered * 1e6
    cpu_us["load_generator"] = hey_cpu_s / answered * 1e6 if answered else None
    ok = int(np.count_nonzero((samples.status >= 200) & (samples.status < 300)))
    window = float(samples.completion_s.max() - samples.start_s.min()) if answered else 0.0
    latency = {percentile_key(q): percentile(samples.latency_s, q) * 1e3 for q in PERCENTILES}
    latency["mean"] = float(samples.latency_s.mean() * 1e3) if answered else math.nan
    latency["max"] = float(samples.latency_s.max() * 1e3) if answered else math.nan
    return HotPathRow(
        model=model,
        arm=arm,
        concurrency=concurrency,
        requests=answered,
        non_2xx=answered - ok,
        window_s=window,
        throughput_rps=ok / window if window > 0 else 0.0,
        latency_ms=latency,
        cpu_us=cpu_us,
        front=front,
        slow_ms=slow_threshold_s(samples) * 1e3 if answered else math.nan,
        stall_size=stall_size(concurrency),
        stalls=find_stalls(samples, concurrency),
        warmup_s=warmup_s,
    )
