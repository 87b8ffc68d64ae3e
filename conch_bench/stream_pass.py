"""The stream pass: rows/s through one streaming session against single-row predict.

Seed 002's target: rows/s through one stream with `buffer_size` 64 at least 3x
those of single-row `POST /api/inference/predict` calls. Measured side by side
in one run, on the same control plane and model, with the same client
(stream_load.py: one asyncio process, aiohttp) at the same concurrency,
STREAM_SENDERS requests in flight:

- `predict-1row`: single-row predict calls, the reference.
- `stream-1row-sends`: one row per `POST .../send`, a sensor forwarding each
  reading as it comes: the HTTP request per row stays, only the model call is
  shared by 64 rows.
- `stream-64row-sends`: 64 rows per send (one buffer each): a client that
  gathers rows before sending, the use a stream is made for.
- `stream-ws`: one row per WebSocket message, results pushed: no HTTP request
  per row, and no polling.

Each stream arm's window runs from the first send to the last result read (the
stream closed, its last buffer flushed); every result is checked, once and in
sequence order. The judged row is `stream-64row-sends`: a stream amortises the
model call and the request over the rows of a buffer, which only a send of
several rows can show; a one-row send is an HTTP request per row, as a one-row
predict is, and would pass only if a send cost a third of a predict call. The
one-row arms are reported beside it, not judged: they show what a row costs on
the send path (measured: more than a predict call; see docs/BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console

from conch_bench.conch_arm import ConchEndpoint
from conch_bench.models import BenchModel
from conch_bench.ratios import ArmRun, Ratio
from conch_bench.stats import RunSummary
from conch_bench.stream_load import (
    StreamRun,
    feature_rows,
    rows_per_s,
    run_predict,
    run_socket,
    run_stream,
)

STREAM_MODELS = ("tabular",)
STREAM_SENDERS = 16  # requests in flight, every arm
BUFFER_SIZE = 64
PREDICT_ARM = "predict-1row"
STREAM_ARMS = {  # arm -> rows per send (0: the WebSocket)
    "stream-1row-sends": 1,
    f"stream-{BUFFER_SIZE}row-sends": BUFFER_SIZE,
    "stream-ws": 0,
}
JUDGED_ARM = f"stream-{BUFFER_SIZE}row-sends"
STREAM_TARGET = 3.0


def stream_pass(
    console: Console,
    model: BenchModel,
    conch: ConchEndpoint | None,
    notes: list[str],
    *,
    duration_s: float,
    senders: int = STREAM_SENDERS,
) -> list[ArmRun]:
    """The predict reference and the stream arms; [] with a note when it cannot run."""
    where = f"stream pass for {model.key}"
    if conch is None:
        notes.append(f"{where}: skipped, no control plane (none started, no --conch-url)")
        return []
    if not model.features:
        notes.append(f"{where}: skipped, no feature-row body for {model.key}")
        return []
    console.print(f"{model.key}: stream pass, buffer_size {BUFFER_SIZE}, {senders} in flight ...")
    model_id = conch.model_ids.get(model.key, model.triton_name)
    run = StreamRun(
        conch.url, conch.api_key, model_id, feature_rows(model.features), senders, duration_s
    )
    runs: list[ArmRun] = []
    label = f"{model.key}/{PREDICT_ARM}"
    runs.append(_shown(console, model.key, PREDICT_ARM, run_predict(run, label)))
    for arm, per_send in STREAM_ARMS.items():
        label = f"{model.key}/{arm}"
        try:
            if per_send == 0:
                summary, results = run_socket(run, label)
            else:
                each = StreamRun(**{**run.__dict__, "rows_per_send": per_send})
                summary, results = run_stream(each, label)
        except Exception as exc:  # the pass notes it and measures on
            notes.append(f"{where}: {arm} failed, {type(exc).__name__}: {exc}"[:300])
            continue
        runs.append(_shown(console, model.key, arm, summary))
        notes.append(f"{where}: {arm}: {results} results read, each once and in order")
    return runs


def _shown(console: Console, model: str, arm: str, s: RunSummary) -> ArmRun:
    console.print(
        f"{model:<12} {arm:<22} {'c=' + str(s.concurrency):<16} {rows_per_s(s):>9,.0f} rows/s  "
        f"p50 {s.latency_ms['p50']:8.2f} ms per request  errors {s.errors}"
    )
    return ArmRun(model, arm, s)


def stream_ratios(runs: Sequence[ArmRun]) -> list[Ratio]:
    """Each stream arm's rows/s over the predict reference's; JUDGED_ARM's judged
    (errors fail it, a missing arm fails it rather than vanishing)."""
    out = []
    for model in dict.fromkeys(r.model for r in runs):
        found = {r.arm: r.summary for r in runs if r.model == model}
        ref = found.get(PREDICT_ARM)
        if ref is None or rows_per_s(ref) == 0:
            continue
        for arm in STREAM_ARMS:
            s = found.get(arm)
            value = 0.0 if s is None else rows_per_s(s) / rows_per_s(ref)
            seen = "not measured" if s is None else f"{rows_per_s(s):,.0f} rows/s"
            errors = 0 if s is None else s.errors
            detail = (
                f"{arm} {seen} / {PREDICT_ARM} {rows_per_s(ref):,.0f} rows/s, both "
                f"{ref.concurrency} in flight, buffer_size {BUFFER_SIZE}"
                + (f"; {errors + ref.errors} errors" if errors + ref.errors else "")
            )
            name = f"stream rows/s: {arm} / {PREDICT_ARM}"
            if arm != JUDGED_ARM:
                out.append(Ratio(name, model, value, "x", detail))
                continue
            passed = s is not None and errors + ref.errors == 0 and value >= STREAM_TARGET
            target = f"≥ {STREAM_TARGET:.2f}x"
            out.append(Ratio(name, model, value, "x", detail, target=target, passed=passed))
    return out
