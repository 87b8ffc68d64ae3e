"""`conch bench calls` times one Triton call per client, from real calls."""

from __future__ import annotations

from typer.testing import CliRunner

from conch_bench.models import BenchModel
from conch_embedded.triton_server import EmbeddedTriton
from control_plane.cli import with_commands

app = with_commands("bench")


def test_every_client_is_timed_against_the_real_model(
    triton: EmbeddedTriton, bench_tabular: BenchModel
) -> None:
    result = CliRunner().invoke(
        app,
        [
            "bench", "calls", "--model", bench_tabular.triton_name,
            "--grpc-url", triton.grpc_url, "--http-url", triton.http_url,
            "--calls", "20", "--rounds", "1",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for protocol in ("HTTP, binary tensors", "gRPC (grpc.aio)"):
        line = next(line for line in result.output.splitlines() if protocol in line)
        wall, cpu = (float(cell.replace(",", "")) for cell in line.split("│")[2:4])
        assert wall > 0 and cpu > 0


def test_a_model_triton_does_not_have_is_one_line(triton: EmbeddedTriton) -> None:
    result = CliRunner().invoke(
        app,
        ["bench", "calls", "--model", "no_such_model", "--grpc-url", triton.grpc_url,
         "--http-url", triton.http_url],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "error:" in result.output and "Traceback" not in result.output
