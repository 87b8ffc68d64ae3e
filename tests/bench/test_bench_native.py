"""wrk's output parsed into the report's RunSummary, and wrk run for real when present."""

from __future__ import annotations

import math
import shutil

import pytest

from conch_bench.models import BenchModel
from conch_bench.native import (
    HttpRequestSpec,
    lua_script,
    parse_wrk,
    request_spec,
    run_wrk,
    to_summary,
)
from conch_bench.targets import RestTarget, triton_target
from conch_embedded.triton_server import EmbeddedTriton

# wrk 4.1 with --latency against a server answering some requests with 500.
WRK_TEXT = """\
Running 2s test @ http://127.0.0.1:8000/v2/models/m/infer
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.00ms  389.66us   4.91ms   76.22%
    Req/Sec     1.89k   149.02     2.03k    80.95%
  Latency Distribution
     50%    0.94ms
     75%    1.18ms
     90%    1.42ms
     99%    2.22ms
  3954 requests in 2.10s, 2.09MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 54
Requests/sec:   1882.42
Transfer/sec:      1.00MB
"""
HOOK_LINES = """\
CONCH_COUNTS 3954 2100484 0 3 0 54 2
CONCH_P 50 945
CONCH_P 90 1425
CONCH_P 99 2223
CONCH_P 99.9 3850
CONCH_MEAN 996.856252 4912
"""


def test_wrk_text_alone_gives_percentiles_rate_and_errors() -> None:
    result = parse_wrk(WRK_TEXT)
    assert result.requests == 3954 and result.duration_s == pytest.approx(2.10)
    assert result.latency_ms["p50"] == pytest.approx(0.94)
    assert result.latency_ms["p99"] == pytest.approx(2.22)
    assert math.isnan(result.latency_ms["p99.9"])  # wrk's text has no p99.9
    assert result.latency_ms["max"] == pytest.approx(4.91)
    assert result.requests_per_s == pytest.approx(1882.42)
    assert result.non_2xx == 54
    assert result.socket_errors == {"connect": 0, "read": 3, "write": 0, "timeout": 2}
    assert result.errors == 59 and result.ok == 3900


def test_hook_lines_are_exact_and_become_a_run_summary() -> None:
    result = parse_wrk(WRK_TEXT + HOOK_LINES)
    assert result.duration_s == pytest.approx(2.100484)
    assert result.latency_ms["p99.9"] == pytest.approx(3.850)
    assert result.latency_ms["p50"] == pytest.approx(0.945)
    summary = to_summary(result, label="m/triton-http", concurrency=16, threads=2, cpu_s=2.100484)
    assert summary.client == "wrk" and summary.mode == "closed"
    assert summary.requests == 3900 and summary.errors == 59
    assert summary.throughput_rps == pytest.approx(3900 / 2.100484)
    assert summary.client_cpu == pytest.approx([0.5, 0.5])
    assert any("non-2xx" in m for m in summary.first_errors)
    assert any("timeout 2" in m for m in summary.first_errors)


def test_unreadable_output_is_refused() -> None:
    from conch_bench.native import WrkError

    with pytest.raises(WrkError):
        parse_wrk("unable to connect to 127.0.0.1:9 Connection refused")


def test_lua_script_sets_method_headers_and_bodies(tmp_path: object) -> None:
    spec = HttpRequestSpec("http://h/x", (b"a", b"b"), "POST", {"X-API-Key": 'k"1'})
    script = lua_script(spec, [tmp_path / "b0", tmp_path / "b1"])  # type: ignore[operator]
    assert 'wrk.headers["X-API-Key"] = "k\\"1"' in script
    assert 'wrk.method = "POST"' in script and "request = function()" in script


def test_per_request_keys_stay_with_the_python_client() -> None:
    target = RestTarget(url="http://h/p", bodies=(b"{}",), key_header="X-API-Key", keys=("a",))
    assert request_spec(target) is None


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed")
def test_wrk_drives_triton_http_with_the_binary_body(
    triton: EmbeddedTriton, bench_tabular: BenchModel
) -> None:
    target = triton_target("http", triton.http_url, bench_tabular.triton_name)
    spec = request_spec(target)
    assert spec is not None and "Inference-Header-Content-Length" in spec.headers
    summary = run_wrk(spec, concurrency=4, duration_s=1, warmup_s=0, threads=2, label="http")
    assert summary.errors == 0, summary.first_errors
    assert summary.requests > 10 and summary.client == "wrk"
    assert 0 < summary.latency_ms["p50"] <= summary.latency_ms["p99"]
