"""A native load generator for HTTP arms: Debian's `wrk`, driven by a Lua script.

Our Python client tops out near 5k req/s per process, below what Triton's HTTP
endpoint serves, so an HTTP arm measured only through it measures the client.
`wrk` (C, epoll, one event loop per thread) sends the very bytes the Python
client sends: for Triton, the KServe v2 body with the binary tensor extension
(built by tritonclient itself), for REST targets the pre-rendered JSON bodies.

wrk runs closed loop (`-c` connections, one request in flight on each). Its
`--latency` text gives p50/p90/p99; the script's `done()` hook prints exact
counts and p99.9 too, and the parser prefers those when present. Durations are
whole seconds (wrk's `-d`); the duration wrk reports is the window used.
"""

from __future__ import annotations

import math
import re
import resource
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from conch_bench.stats import RunSummary
from conch_bench.targets import RestTarget, Target

WRK_INSTALL_HINT = "wrk not found on PATH (Debian/Ubuntu: apt-get install -y wrk)"

# Lua: bodies from files (binary-safe), cycled when there are several; headers
# set once; done() prints exact counts and percentiles (microseconds).
_SCRIPT = """\
local bodies = {}
for _, path in ipairs({%(paths)s}) do
  local f = assert(io.open(path, "rb")); bodies[#bodies + 1] = f:read("*a"); f:close()
end
wrk.method = "%(method)s"
%(headers)s
wrk.body = bodies[1]
local i = 0
if #bodies > 1 then
  request = function()
    i = i %% #bodies + 1
    return wrk.format(nil, nil, nil, bodies[i])
  end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("CONCH_COUNTS %%d %%d %%d %%d %%d %%d %%d\\n", summary.requests,
    summary.duration, e.connect, e.read, e.write, e.status, e.timeout))
  for _, p in ipairs({50, 90, 99, 99.9}) do
    io.write(string.format("CONCH_P %%g %%d\\n", p, latency:percentile(p)))
  end
  io.write(string.format("CONCH_MEAN %%f %%d\\n", latency.mean, latency.max))
end
"""


@dataclass(frozen=True)
class HttpRequestSpec:
    """What wrk sends: one URL, method, headers, and the bodies it cycles."""

    url: str
    bodies: tuple[bytes, ...]
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class WrkResult:
    requests: int  # everything answered, non-2xx included (wrk counts them)
    duration_s: float
    non_2xx: int
    socket_errors: dict[str, int]  # connect, read, write, timeout
    latency_ms: dict[str, float]  # p50, p90, p99, p99.9 (nan when not printed), mean, max
    requests_per_s: float

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())

    @property
    def ok(self) -> int:
        return max(self.requests - self.non_2xx, 0)


class WrkError(RuntimeError):
    """wrk did not run, or printed nothing this parser understands."""


def find_wrk() -> str | None:
    return shutil.which("wrk")


def request_spec(target: Target) -> HttpRequestSpec | None:
    """The HTTP request a target stands for; None for gRPC (wrk speaks HTTP/1.1 only)."""
    if isinstance(target, RestTarget):
        headers = {"Content-Type": "application/json", **target.headers}
        if target.key_header and target.keys:
            return None  # a key per request: the Python client cycles them
        return HttpRequestSpec(target.url, target.bodies, target.method, headers)
    if target.protocol != "http":
        return None
    import tritonclient.http as httpclient

    inputs = []
    for tensor in target.inputs:
        infer_input = httpclient.InferInput(tensor.name, list(tensor.data.shape), tensor.datatype)
        infer_input.set_data_from_numpy(tensor.data, binary_data=True)
        inputs.append(infer_input)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=True) for n in target.outputs]
    body, json_size = httpclient.InferenceServerClient.generate_request_body(
        inputs, outputs=outputs or None
    )
    headers = {"Content-Type": "application/octet-stream"}
    if json_size is not None:
        headers["Inference-Header-Content-Length"] = str(json_size)
    url = f"http://{target.url}/v2/models/{target.model}/infer"
    return HttpRequestSpec(url, (bytes(body),), "POST", headers)


def lua_script(spec: HttpRequestSpec, body_paths: list[Path]) -> str:
    def quoted(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    headers = "\n".join(f"wrk.headers[{quoted(k)}] = {quoted(v)}" for k, v in spec.headers.items())
    paths = ", ".join(quoted(str(p)) for p in body_paths)
    return _SCRIPT % {"paths": paths, "method": spec.method, "headers": headers}


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise WrkError(f"unreadable wrk duration {text!r}")
    return float(match[1]) * _UNITS[match[2]]


def parse_wrk(output: str) -> WrkResult:
    """wrk's `--latency` text, with the exact lines of our `done()` hook when present."""
    total = re.search(r"(\d+) requests in ([\d.]+\w+),", output)
    if total is None:
        raise WrkError(f"no request count in wrk's output: {output[-300:]!r}")
    requests, duration_s = int(total[1]), _duration_ms(total[2]) / 1e3
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    names = ("connect", "read", "write", "timeout")
    errors = {n: int(socket[i + 1]) if socket else 0 for i, n in enumerate(names)}
    latency = {f"p{q}": math.nan for q in ("50", "90", "99", "99.9")}
    for q, value in re.findall(r"^\s+(50|90|99)%\s+([\d.]+\w+)\s*$", output, re.M):
        latency[f"p{q}"] = _duration_ms(value)
    stats = re.search(r"Latency\s+([\d.]+\w+)\s+[\d.]+\w+\s+([\d.]+\w+)", output)
    latency["mean"] = _duration_ms(stats[1]) if stats else math.nan
    latency["max"] = _duration_ms(stats[2]) if stats else math.nan
    result = WrkResult(
        requests=requests,
        duration_s=duration_s,
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=errors,
        latency_ms=latency,
        requests_per_s=float(rate[1]) if rate else requests / duration_s,
    )
    _apply_hook_lines(output, result)
    return result


def _apply_hook_lines(output: str, result: WrkResult) -> None:
    """The done() hook's integers are exact where the text is rounded (and has p99.9)."""
    counts = re.search(r"^CONCH_COUNTS ((?:\d+ ?){7})$", output, re.M)
    if counts:
        requests, duration_us, connect, read, write, status, timeout = map(int, counts[1].split())
        result.requests, result.duration_s, result.non_2xx = requests, duration_us / 1e6, status
        result.socket_errors = {
            "connect": connect,
            "read": read,
            "write": write,
            "timeout": timeout,
        }
        result.requests_per_s = requests / result.duration_s if result.duration_s else 0.0
    for q, micros in re.findall(r"^CONCH_P ([\d.]+) (\d+)$", output, re.M):
        result.latency_ms[f"p{q}"] = int(micros) / 1e3
    mean = re.search(r"^CONCH_MEAN ([\d.]+) (\d+)$", output, re.M)
    if mean:
        result.latency_ms["mean"], result.latency_ms["max"] = (
            float(mean[1]) / 1e3,
            int(mean[2]) / 1e3,
        )


def to_summary(
    result: WrkResult,
    *,
    label: str,
    concurrency: int,
    threads: int,
    cpu_s: float,
    batch_size: int = 1,
) -> RunSummary:
    messages = []
    if result.non_2xx:
        messages.append(f"wrk: {result.non_2xx} non-2xx/3xx responses")
    failed = {k: v for k, v in result.socket_errors.items() if v}
    if failed:
        messages.append("wrk socket errors: " + ", ".join(f"{k} {v}" for k, v in failed.items()))
    per_thread = cpu_s / result.duration_s / threads if result.duration_s > 0 else 0.0
    return RunSummary(
        label=label,
        mode="closed",
        concurrency=concurrency,
        rate=None,
        processes=threads,
        duration_s=result.duration_s,
        requests=result.ok,
        errors=result.errors,
        throughput_rps=result.ok / result.duration_s if result.duration_s > 0 else 0.0,
        latency_ms=dict(result.latency_ms),
        client_cpu=[per_thread] * threads,
        first_errors=messages,
        batch_size=batch_size,
        client="wrk",
    )


def run_wrk(
    spec: HttpRequestSpec,
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    threads: int,
    label: str,
    batch_size: int = 1,
    wrk: str | None = None,
) -> RunSummary:
    """A warm-up run (discarded), then the measured one; CPU from the child's rusage."""
    binary = wrk or find_wrk()
    if binary is None:
        raise WrkError(WRK_INSTALL_HINT)
    threads = max(1, min(threads, concurrency))
    with tempfile.TemporaryDirectory(prefix="conch-wrk-") as tmp:
        paths = [Path(tmp) / f"body{i}" for i in range(len(spec.bodies))]
        for path, body in zip(paths, spec.bodies, strict=True):
            path.write_bytes(body)
        script = Path(tmp) / "request.lua"
        script.write_text(lua_script(spec, paths))

        def wrk_run(seconds: float) -> tuple[str, float]:
            argv = [binary, f"-t{threads}", f"-c{concurrency}", f"-d{max(1, math.ceil(seconds))}s"]
            argv += ["--latency", "--timeout", "60s", "-s", str(script), spec.url]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 90)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if done.returncode != 0:
                raise WrkError(f"wrk exited {done.returncode}: {done.stderr.strip()[-300:]}")
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            return done.stdout, cpu

        if warmup_s > 0:
            wrk_run(warmup_s)
        output, cpu_s = wrk_run(duration_s)
    return to_summary(
        parse_wrk(output),
        label=label,
        concurrency=concurrency,
        threads=threads,
        cpu_s=cpu_s,
        batch_size=batch_size,
    )
