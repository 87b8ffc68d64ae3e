"""The load generator against a real embedded Triton, through both Triton doors."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conch_bench.loadgen import LoadSpec, run_load, split
from conch_bench.models import BenchModel
from conch_bench.targets import RestTarget, triton_target
from conch_embedded.triton_server import EmbeddedTriton

pytestmark = pytest.mark.slow


def test_split_spreads_evenly() -> None:
    assert split(10, 3) == [4, 3, 3]
    assert split(2, 4) == [1, 1]
    assert split(0, 2) == [0]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_closed_loop_through_triton(
    protocol: str, triton: EmbeddedTriton, bench_tabular: BenchModel
) -> None:
    url = triton.grpc_url if protocol == "grpc" else triton.http_url
    target = triton_target(protocol, url, bench_tabular.triton_name, batch_size=2)  # type: ignore[arg-type]
    assert target.inputs[0].data.shape == (2, 16)
    spec = LoadSpec(concurrency=4, duration_s=1.5, warmup_s=0.5, processes=2)
    summary = run_load(target, spec, label=protocol)
    assert summary.errors == 0, summary.first_errors
    assert summary.processes == 2
    assert summary.requests > 10
    assert summary.throughput_rps == pytest.approx(summary.requests / 1.5)
    latency = summary.latency_ms
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["p99.9"]
    assert all(0.0 <= cpu < 2.0 for cpu in summary.client_cpu)


def test_open_loop_holds_the_rate(triton: EmbeddedTriton, bench_tabular: BenchModel) -> None:
    target = triton_target("grpc", triton.grpc_url, bench_tabular.nobatch_name)
    spec = LoadSpec(mode="open", rate=100, duration_s=1.5, warmup_s=0.5, processes=1)
    summary = run_load(target, spec)
    assert summary.errors == 0, summary.first_errors
    # A fixed arrival rate: the count is set by the schedule, not by the server.
    assert 140 <= summary.requests <= 151
    assert summary.rate == 100


def test_errors_are_counted_with_their_messages() -> None:
    # A closed port: every request fails fast, and the run still completes.
    target = RestTarget(url="http://127.0.0.1:9/predict", bodies=(b"{}",))
    spec = LoadSpec(concurrency=2, duration_s=0.5, warmup_s=0.2, processes=1)
    summary = run_load(target, spec)
    assert summary.requests == 0
    assert summary.errors > 0
    assert summary.first_errors and "Connect" in summary.first_errors[0]


# The window is long enough for every user to send its first request on a busy
# machine (the first aiohttp call is slow).
_WINDOW_S = 3.0
_USERS = 3


class _SlowHandler(BaseHTTPRequestHandler):
    """Holds every answer until all users have sent, then a whole window longer: the
    last send is inside the window, so each answer comes after its end."""

    protocol_version = "HTTP/1.1"
    all_sent = threading.Barrier(_USERS)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.all_sent.wait(timeout=30)
        time.sleep(_WINDOW_S)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def test_requests_answered_after_the_window_are_counted_late() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/predict"
        target = RestTarget(url=url, bodies=(b"{}",))
        # Each user sends once inside the window; none is answered in it.
        spec = LoadSpec(concurrency=_USERS, duration_s=_WINDOW_S, warmup_s=0.0, processes=1)
        summary = run_load(target, spec)
    finally:
        server.shutdown()
        server.server_close()
    assert summary.errors == 0, summary.first_errors
    assert summary.requests == 0 and summary.throughput_rps == 0  # none inside the window
    assert summary.late == _USERS
    # ... but their latencies are the tail, not silently dropped from it.
    assert summary.latency_ms["p50"] >= _WINDOW_S * 1e3 * 0.99
