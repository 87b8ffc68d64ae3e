"""The hot-path pass of `conch bench suite`: Conch beside Triton's own HTTP endpoint
and the tuned hand-written server, under hey, at concurrency 1 and 64.

It comes with the conch-rest arm and measures its references itself, for each
float-row model: `triton-http-hey` (the binary-tensor body the wrk arm sends),
`conch-rest-hey` (the same rows as JSON, one key, the limiter on) and
`baseline-tuned-hey` (conch_bench/baseline.py). Each point is an unmeasured hey
run (the suite's warm-up, at least 1 s), then the measured one (hot_path.py):
exact percentiles from hey's per-request CSV, CPU per request of the control
plane and of Triton from /proc, and the stall check. The targets are the issue's
(ratios within this one run); a stall in a Conch arm fails the suite.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from rich.console import Console

from conch_bench.baseline import BaselineServer
from conch_bench.conch_arm import ConchEndpoint, probe
from conch_bench.hot_path import HEY_INSTALL_HINT, HeyError, HotPathRow, find_hey, measure
from conch_bench.hot_path_report import HIGH, HOT_ARMS, LOW, console_line
from conch_bench.models import BenchModel
from conch_bench.native import HttpRequestSpec, request_spec
from conch_bench.ratios import ArmRun
from conch_bench.targets import RestTarget, render_bodies, triton_target
from conch_embedded.process import ProcessStartError
from conch_embedded.triton_server import EmbeddedTriton

MIN_WARMUP_S = 1.0
_Arm = tuple[HttpRequestSpec, dict[str, int | None], str] | str  # or why it is skipped


def hot_path_pass(
    console: Console,
    model: BenchModel,
    triton: EmbeddedTriton,
    conch: ConchEndpoint | None,
    notes: list[str],
    *,
    duration_s: float,
    warmup_s: float,
    workers: int = 1,
    batch_size: int = 1,
) -> list[HotPathRow]:
    """Every hot-path arm at LOW and HIGH; [] with a note saying why when the pass
    cannot run."""
    where = f"hot-path pass for {model.key}"
    why = _unavailable(model, conch)
    if why is not None or conch is None:
        notes.append(f"{where}: skipped, {why}")
        return []
    rows = []
    for arm, name in HOT_ARMS.items():
        with _arm(arm, model, triton, conch, workers, batch_size) as found:
            if isinstance(found, str):
                notes.append(f"{where}: {name} skipped, {found}")
                continue
            spec, processes, front = found
            console.print(f"{model.key}: hot path, {name} under hey ...")
            for concurrency in (LOW, HIGH):
                try:
                    row = measure(
                        spec,
                        model=model.key,
                        arm=name,
                        concurrency=concurrency,
                        duration_s=duration_s,
                        warmup_s=max(warmup_s, MIN_WARMUP_S),
                        processes=processes,
                        front=front,
                    )
                except HeyError as exc:  # a failed point is a note, not a crashed suite
                    notes.append(f"{where}: {name} c={concurrency} failed: {exc}")
                    continue
                rows.append(row)
                console.print(console_line(row))
    return rows


def _unavailable(model: BenchModel, conch: ConchEndpoint | None) -> str | None:
    if not model.features or model.onnx_path is None:
        return "not a float-row model"
    if find_hey() is None:
        return HEY_INSTALL_HINT
    if conch is None:
        return "no control plane (none started, no --conch-url)"
    return None


@contextmanager
def _arm(
    arm: str,
    model: BenchModel,
    triton: EmbeddedTriton,
    conch: ConchEndpoint,
    workers: int,
    batch_size: int,
) -> Iterator[_Arm]:
    """What hey sends to one arm and whose CPU is read ("front", "triton")."""
    if arm == "triton-http":
        target = triton_target(
            "http", triton.http_url, model.triton_name, batch_size=batch_size,
            int_high=model.int_high,
        )  # fmt: skip
        spec = request_spec(target)
        assert spec is not None  # an HTTP target always has one
        yield spec, {"front": conch.pid, "triton": triton.pid}, "control plane (idle)"
        return
    if arm == "conch-rest":
        rest = conch.target(model, conch.url, batch_size)
        problem, spec = probe(rest), request_spec(rest)
        if problem is not None or spec is None:
            yield f"a probe request failed: {problem}"
            return
        yield spec, {"front": conch.pid, "triton": triton.pid}, "control plane"
        return
    assert model.onnx_path is not None  # hot_path_pass checked
    try:
        server = BaselineServer(model.onnx_path, workers=workers, variant="tuned").start()
    except ProcessStartError as exc:
        yield f"the baseline did not start: {exc}"
        return
    try:
        bodies = render_bodies(model.rest_template, rows=batch_size, features=model.features)
        spec = request_spec(RestTarget(url=f"{server.url}/predict", bodies=bodies))
        assert spec is not None  # a single-key REST target always has one
        yield spec, {"front": server.pid, "triton": triton.pid}, "baseline-tuned itself"
    finally:
        server.stop()


def hot_path_runs(rows: Sequence[HotPathRow]) -> list[ArmRun]:
    """The rows in the suite's own tables and deltas."""
    return [ArmRun(r.model, r.arm, r.summary()) for r in rows]
