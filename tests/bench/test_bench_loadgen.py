"""The load generator against a real embedded Triton, through both Triton doors."""

from __future__ import annotations

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
