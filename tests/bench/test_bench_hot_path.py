"""The hot-path pass: hey's CSV, stall clusters, CPU from /proc, targets, one real run."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from conch_bench.hot_path import (
    HEY_COLUMNS,
    HeyError,
    HotPathRow,
    Stall,
    find_stalls,
    measure,
    parse_hey_csv,
    stall_size,
    tree_cpu_s,
)
from conch_bench.hot_path_report import (
    CONCH_ARM,
    TRITON_ARM,
    TUNED_ARM,
    hot_path_markdown,
    hot_path_ratios,
    stall_failures,
)
from conch_bench.native import HttpRequestSpec

needs_hey = pytest.mark.skipif(
    shutil.which("hey") is None, reason="hey not installed (apt-get install -y hey)"
)


def hey_csv(rows: Sequence[tuple[float, float]], status: int = 200) -> str:
    """hey's CSV for (response-time, offset) pairs, four decimals as hey prints them."""
    lines = [",".join(HEY_COLUMNS)]
    lines += [f"{rt:.4f},0.0000,0.0000,0.0000,{rt:.4f},0.0000,{status},{at:.4f}" for rt, at in rows]
    return "\n".join(lines) + "\n"


def steady(concurrency: int, seconds: float, latency_s: float) -> list[tuple[float, float]]:
    """A closed loop at a constant latency: each worker sends when its last answer came."""
    per_worker = int(seconds / latency_s)
    return [
        (latency_s, w * latency_s / concurrency + i * latency_s)
        for w in range(concurrency)
        for i in range(per_worker)
    ]


def test_parse_reads_latency_offset_and_status() -> None:
    samples = parse_hey_csv(hey_csv([(0.0012, 0.01), (0.0030, 0.02)], status=503))
    assert samples.latency_s.tolist() == [0.0012, 0.0030]
    assert samples.start_s.tolist() == [0.01, 0.02]
    assert samples.status.tolist() == [503, 503]
    assert np.allclose(samples.completion_s, [0.0112, 0.023])
    assert parse_hey_csv(hey_csv([])).latency_s.size == 0  # nothing answered


def test_parse_refuses_other_output() -> None:
    with pytest.raises(HeyError, match="not hey's CSV"):
        parse_hey_csv("Summary:\n  Total: 1.0 secs\n")


def test_every_request_in_flight_held_at_once_is_one_stall() -> None:
    rows = steady(64, 8.0, 0.027)
    # At 4 s all 64 requests in flight are held ~200 ms and answered together.
    rows += [(0.200 + i * 1e-4, 4.0) for i in range(64)]
    (stall,) = find_stalls(parse_hey_csv(hey_csv(rows)), 64)
    assert stall.size == 64
    assert stall.start_s == pytest.approx(4.2, abs=0.01)
    assert stall.worst_ms == pytest.approx(206.3, abs=0.2)


def test_scattered_slow_responses_are_no_stall() -> None:
    rows = steady(64, 8.0, 0.027)
    rows += [(0.200, 1.0 + 0.1 * i) for i in range(60)]  # 60 slow ones, 100 ms apart
    assert find_stalls(parse_hey_csv(hey_csv(rows)), 64) == []


def test_fewer_than_the_threshold_together_are_no_stall() -> None:
    assert stall_size(1) == 4 and stall_size(64) == 16
    rows = steady(64, 8.0, 0.027) + [(0.200, 4.0)] * 15
    assert find_stalls(parse_hey_csv(hey_csv(rows)), 64) == []
    one_at_a_time = steady(1, 2.0, 0.001) + [(0.050, 1.0 + 0.05 * i) for i in range(3)]
    assert find_stalls(parse_hey_csv(hey_csv(one_at_a_time)), 1) == []
    four = steady(1, 2.0, 0.001) + [(0.010, 1.0 + 0.01 * i) for i in range(4)]
    assert [s.size for s in find_stalls(parse_hey_csv(hey_csv(four)), 1)] == [4]


def test_connection_setup_is_left_out_of_the_stall_check() -> None:
    rows = steady(64, 4.0, 0.027) + [(0.200, 0.0)] * 64  # the first answers, while dialing
    samples = parse_hey_csv(hey_csv(rows))
    assert find_stalls(samples, 64) == []
    assert len(find_stalls(samples, 64, skip_s=0.0)) == 1


BURN = """
import sys, time
end = time.process_time() + 0.3
while time.process_time() < end:
    pass
print("burnt", flush=True)
sys.stdin.read()  # alive until the test closes stdin
"""


def test_tree_cpu_counts_a_living_child_then_the_reaped_one() -> None:
    me = os.getpid()
    (before,) = tree_cpu_s({"me": me}).values()
    child = subprocess.Popen(
        [sys.executable, "-c", BURN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline() == "burnt\n"
    (alive,) = tree_cpu_s({"me": me}).values()
    assert before is not None and alive is not None
    assert alive - before >= 0.25  # the child's 0.3 s, as a descendant
    child.communicate("")
    (reaped,) = tree_cpu_s({"me": me}).values()
    assert reaped is not None and reaped >= alive - 0.02  # moved to our cutime, not lost
    assert tree_cpu_s({"gone": child.pid, "none": None}) == {"gone": None, "none": None}


def row(
    arm: str, concurrency: int, rps: float, p50: float, p99: float, **extra: object
) -> HotPathRow:
    fields: dict[str, object] = dict(
        model="tabular",
        arm=arm,
        concurrency=concurrency,
        requests=1000,
        non_2xx=0,
        window_s=8.0,
        throughput_rps=rps,
        latency_ms={"p50": p50, "p90": p50, "p99": p99, "p99.9": p99, "mean": p50, "max": p99},
        cpu_us={"front": 120.0, "triton": 60.0, "load_generator": 20.0},
        front="control plane",
        slow_ms=5 * p50,
        stall_size=stall_size(concurrency),
    )
    return HotPathRow(**{**fields, **extra})  # type: ignore[arg-type]


def test_targets_are_judged_and_a_conch_stall_fails() -> None:
    stall = Stall(start_s=1.5, size=64, worst_ms=240.0, span_ms=3.0)
    rows = [
        row(TRITON_ARM, 1, 2000, 0.5, 0.8),
        row(TRITON_ARM, 64, 10000, 6.0, 12.0, stalls=[stall]),
        row(CONCH_ARM, 1, 1500, 0.7, 1.2),
        row(CONCH_ARM, 64, 6000, 10.0, 20.0),
        row(TUNED_ARM, 1, 1700, 0.6, 0.9),
        row(TUNED_ARM, 64, 3000, 20.0, 30.0),
    ]
    ratios = {r.name: r for r in hot_path_ratios(rows)}
    assert ratios[f"{CONCH_ARM} / {TRITON_ARM}: throughput at c=64"].passed is True  # 0.6x
    assert ratios[f"{CONCH_ARM} / {TRITON_ARM}: p99 at c=64"].passed is True  # 1.67x
    assert ratios[f"{CONCH_ARM} - {TRITON_ARM}: added p50 at c=1"].value == pytest.approx(0.2)
    assert ratios[f"{CONCH_ARM} p99 / p50 at c=64"].passed is True  # 2.0
    assert ratios[f"{CONCH_ARM} / {TUNED_ARM}: throughput at c=64"].passed is True  # 2.0x
    assert ratios[f"{CONCH_ARM} / {TUNED_ARM}: p50 at c=1"].passed is True  # 1.17x
    assert ratios[f"{CONCH_ARM}: stall clusters"].passed is True
    triton = ratios[f"{TRITON_ARM}: stall clusters"]
    assert triton.value == 1 and triton.passed is None  # reported, not judged
    assert stall_failures(rows) == []  # Triton's stall does not fail Conch's run

    rows[3] = row(CONCH_ARM, 64, 6000, 10.0, 180.0, stalls=[stall, stall])
    ratios = {r.name: r for r in hot_path_ratios(rows)}
    assert ratios[f"{CONCH_ARM}: stall clusters"].passed is False
    assert ratios[f"{CONCH_ARM} p99 / p50 at c=64"].passed is False
    (failure,) = stall_failures(rows)
    assert "c=64: 2 stall cluster(s)" in failure and "worst 240 ms" in failure

    lines = hot_path_markdown([HotPathRow.from_dict(r.to_dict()) for r in rows])
    text = "\n".join(lines)
    assert "## Hot path (hey)" in text and "### tabular" in text
    assert f"| {CONCH_ARM} | 64 | 6,000 | 10.00 |" in text and "| 2 FAIL |" in text


SERVER = """
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as hey expects
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")
    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@pytest.fixture
def tiny_server() -> Iterator[tuple[str, int]]:
    process = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}/predict", process.pid
    finally:
        process.kill()
        process.wait()


@needs_hey
def test_measure_runs_hey_and_reads_the_servers_cpu(tiny_server: tuple[str, int]) -> None:
    url, pid = tiny_server
    spec = HttpRequestSpec(
        url, (b'{"data": [[1.0]]}',), headers={"Content-Type": "application/json"}
    )
    result = measure(
        spec,
        model="tiny",
        arm="tiny-hey",
        concurrency=4,
        duration_s=1.0,
        warmup_s=0.5,
        processes={"front": pid, "triton": None},
        front="tiny server",
    )
    assert result.requests > 0 and result.non_2xx == 0 and result.throughput_rps > 0
    assert result.latency_ms["p50"] <= result.latency_ms["p99"] <= result.latency_ms["max"]
    assert result.cpu_us["front"] is not None and result.cpu_us["front"] > 0
    assert result.cpu_us["triton"] is None  # no pid given: not measured
    assert result.cpu_us["load_generator"] is not None and result.cpu_us["load_generator"] > 0
    assert result.stall_size == 4 and not math.isnan(result.slow_ms)
    summary = result.summary()
    assert summary.client == "hey" and summary.requests == result.requests
    assert HotPathRow.from_dict(result.to_dict()) == result
