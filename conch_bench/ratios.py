"""The target ratios, each computed from two arms measured in the same run.

Arm names: triton-grpc, triton-http (wrk), triton-grpc-nobatch (dynamic batching
off), conch-rest (auth, slot and rate limit on), conch-rest-manykeys (the same,
MANY_KEYS keys cycled), conch-rest-nolimit, baseline-naive and baseline-tuned
(plain FastAPI), priority-low and priority-urgent (one run side by side), and the
async pass's arms (async-engine, async-engine-queue, the 100-row pair). A ratio
whose arms were not measured is left out, not guessed.

Throughput ratios come twice: at each arm's best concurrency (its saturation
point, which may differ between the arms) and at one fixed concurrency (the same
offered load for both). Client checks carry a verdict that can fail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from conch_bench.stats import RunSummary

# gRPC at its best concurrency, again with twice the client processes.
CLIENT_CHECK_ARM = "triton-grpc-2x-clients"
# triton-http (wrk) at its best concurrency, again through the Python client.
HTTP_CHECK_ARM = "triton-http-python"
NAIVE, TUNED = "baseline-naive", "baseline-tuned"
# Two clients on the same arm "agree" within this relative throughput difference:
# repeated runs of one arm on a quiet machine vary by a few percent.
CLIENT_NOISE = 0.10
P50_TARGET = 1.5  # Conch's p50 at concurrency 1 over the in-process baseline's
# The doors driven by wrk, measured again through the Python client, so that they
# compare with conch-rest (which only the Python client drives: keys cycled, late
# requests) as well as with each other under wrk.
V2_PYTHON_ARM = "conch-v2-python"
ENGINE_PYTHON_ARM = "conch-engine-python"
PYTHON_TWINS = {"conch-v2": V2_PYTHON_ARM, "conch-engine": ENGINE_PYTHON_ARM}
# One model core behind every door: each door within this of the others.
DOOR_SPREAD = 0.10
# The priority pass (priority.py): low and urgent requests side by side, at saturation.
# On the model as served (Conch's queue orders the calls), and on its `__priority`
# twin (Triton's priority levels as well).
PRIORITY_LOW_ARM, PRIORITY_URGENT_ARM = "priority-low", "priority-urgent"
LEVELS_LOW_ARM, LEVELS_URGENT_ARM = "priority-levels-low", "priority-levels-urgent"
PRIORITY_PAIRS = {
    "priority": (PRIORITY_LOW_ARM, PRIORITY_URGENT_ARM),
    "priority with Triton's levels": (LEVELS_LOW_ARM, LEVELS_URGENT_ARM),
}
PRIORITY_TARGET = 0.5  # urgent p99 over low p99 (the bound)
# The async pass (async_pass.py): tasks through `POST /api/inference/predict/async`,
# against the synchronous door (conch-engine) in the same run.
ENGINE_ARM = "conch-engine"
ASYNC_ARM = "async-engine"  # from the submit sent to the poll that saw the result
ASYNC_QUEUE_ARM = "async-engine-queue"  # the same tasks: their own created_at -> completed_at
ASYNC_ROWS = 100  # rows per task, and per synchronous request, for batch amortisation
ASYNC_ROWS_ARM = f"async-engine-{ASYNC_ROWS}rows"
ENGINE_ROWS_ARM = f"conch-engine-{ASYNC_ROWS}rows"
ASYNC_THROUGHPUT_TARGET = 0.5  # async tasks/s over sync requests/s, each at its best
ASYNC_ADDED_P50_MS = 5.0  # queue->completion p50 minus the sync p50, one at a time


@dataclass(frozen=True)
class ArmRun:
    model: str
    arm: str
    summary: RunSummary

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "arm": self.arm, **self.summary.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArmRun:
        fields = dict(data)
        model, arm = fields.pop("model"), fields.pop("arm")
        return cls(model, arm, RunSummary.from_dict(fields))


@dataclass(frozen=True)
class Ratio:
    name: str
    model: str
    value: float
    unit: str  # "µs", "x", "%"
    detail: str
    target: str = ""  # e.g. "≤ 1.50x"; empty: reported, not judged
    passed: bool | None = None  # None: no target

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Index:
    """Closed-loop runs by (model, arm, concurrency); open-loop runs by (model, arm)."""

    def __init__(self, runs: Sequence[ArmRun]) -> None:
        closed = [r for r in runs if r.summary.mode == "closed"]
        self._by_key = {(r.model, r.arm, r.summary.concurrency): r.summary for r in closed}
        self._open = {(r.model, r.arm): r.summary for r in runs if r.summary.mode == "open"}
        self._runs = closed
        self._models = list(dict.fromkeys(r.model for r in runs))

    def at(self, model: str, arm: str, concurrency: int) -> RunSummary | None:
        summary = self._by_key.get((model, arm, concurrency))
        return summary if summary is not None and summary.requests > 0 else None

    def open_loop(self, model: str, arm: str) -> RunSummary | None:
        summary = self._open.get((model, arm))
        return summary if summary is not None and summary.requests > 0 else None

    def common(self, model: str, arm: str, ref: str, wanted: int) -> int | None:
        """`wanted` when both arms ran it, else the highest concurrency both ran."""
        both = {c for (m, a, c) in self._by_key if m == model and a == arm}
        both &= {c for (m, a, c) in self._by_key if m == model and a == ref}
        if wanted in both:
            return wanted
        return max(both, default=None)

    def best(self, model: str, arm: str) -> RunSummary | None:
        """The arm's saturation point: its highest throughput over all concurrencies."""
        runs = [r.summary for r in self._runs if r.model == model and r.arm == arm]
        runs = [s for s in runs if s.requests > 0]
        return max(runs, key=lambda s: s.throughput_rps, default=None)

    def tried(self, model: str, arm: str) -> bool:
        """The arm ran for this model, whether or not any request succeeded."""
        return any(r.model == model and r.arm == arm for r in self._runs)

    def models(self) -> list[str]:
        return self._models


def compute_ratios(runs: Sequence[ArmRun], *, low: int = 1, mid: int = 64) -> list[Ratio]:
    index = _Index(runs)
    ratios: list[Ratio] = []
    for model in index.models():
        ratios += _overhead(index, model, "conch-rest", "triton-grpc", low, "Conch REST over gRPC")
        ratios += _overhead(index, model, "conch-rest", "conch-rest-nolimit", low, "rate limit")
        ratios += _overhead(
            index, model, "conch-rest-manykeys", "conch-rest-nolimit", low, "rate limit, many keys"
        )
        ratios += _p50_target(index, model, low)
        ratios += _overhead(
            index, model, "conch-v2", "triton-http", low, "v2 door over Triton HTTP"
        )
        ratios += _max_throughput(index, model, "conch-v2", "triton-http")
        for arm, ref in (
            ("conch-v2", "conch-engine"),  # wrk
            (ENGINE_PYTHON_ARM, "conch-rest"),  # the Python client from here on
            (V2_PYTHON_ARM, ENGINE_PYTHON_ARM),
        ):
            ratios += _same_core(index, model, arm, ref, low)
        for arm, ref in (
            ("conch-rest", "triton-grpc"),
            ("conch-rest", "conch-rest-nolimit"),
            ("conch-rest-manykeys", "conch-rest-nolimit"),
            ("triton-http", "triton-grpc"),
        ):
            ratios += _max_throughput(index, model, arm, ref)
            ratios += _pair_at(index, model, arm, ref, mid)
        ratios += _pair_at(index, model, "triton-grpc", "triton-grpc-nobatch", mid)
        ratios += _client_check(index, model)
        ratios += _http_client_check(index, model)
        for arm in ("conch-rest", "triton-grpc", "triton-http", NAIVE):
            ratios += _pair_at(index, model, arm, TUNED, mid)
        for arm in ("conch-rest", "triton-grpc"):
            ratios += _open_pair(index, model, arm, TUNED)
        ratios += _priority(index, model)
        ratios += _async_throughput(index, model) + _async_rows(index, model)
        ratios += _async_latency(index, model, low)
    return ratios


def _priority(index: _Index, model: str) -> list[Ratio]:
    return [
        ratio
        for label, (low_arm, urgent_arm) in PRIORITY_PAIRS.items()
        for ratio in _priority_pair(index, model, label, low_arm, urgent_arm)
    ]


def _priority_pair(
    index: _Index, model: str, label: str, low_arm: str, urgent_arm: str
) -> list[Ratio]:
    """Urgent requests overtake low ones: their p99 at most PRIORITY_TARGET of low's."""
    low, urgent = index.best(model, low_arm), index.best(model, urgent_arm)
    if low is None or urgent is None or not low.latency_ms["p99"] > 0:
        return []
    value = urgent.latency_ms["p99"] / low.latency_ms["p99"]
    errors = urgent.errors + low.errors  # an error's latency is no overtaking
    detail = (
        f"at the same time: urgent p99 {urgent.latency_ms['p99']:.2f} ms "
        f"({urgent.concurrency} connections, {urgent.throughput_rps:.0f} req/s) / low p99 "
        f"{low.latency_ms['p99']:.2f} ms ({low.concurrency} connections, "
        f"{low.throughput_rps:.0f} req/s)" + (f"; {errors} errors" if errors else "")
    )
    passed = value <= PRIORITY_TARGET and errors == 0
    return [
        Ratio(
            f"{label}: urgent p99 / low p99 at saturation",
            model,
            value,
            "x",
            detail,
            target=f"≤ {PRIORITY_TARGET:.2f}x",
            passed=passed,
        )
    ]


def _async_throughput(index: _Index, model: str) -> list[Ratio]:
    """Single-row tasks at saturation, completed per second, against synchronous
    requests per second: at least ASYNC_THROUGHPUT_TARGET. Errors, or a pass where
    no task completed, fail it."""
    sync = index.best(model, ENGINE_ARM)
    if sync is None or sync.throughput_rps == 0 or not index.tried(model, ASYNC_ARM):
        return []
    tasks = index.best(model, ASYNC_ARM)
    value = 0.0 if tasks is None else tasks.throughput_rps / sync.throughput_rps
    seen = (
        "no task completed"
        if tasks is None
        else f"{ASYNC_ARM} {tasks.throughput_rps:.0f} tasks/s ({tasks.concurrency} in flight, "
        f"client CPU {'/'.join(f'{c:.0%}' for c in tasks.client_cpu)})"
        + (f", {tasks.errors} errors" if tasks.errors else "")
    )
    detail = (
        f"{seen} / {ENGINE_ARM} {sync.throughput_rps:.0f} req/s (c={sync.concurrency}), "
        "each at its best"
    )
    passed = tasks is not None and tasks.errors == 0 and value >= ASYNC_THROUGHPUT_TARGET
    target = f"≥ {ASYNC_THROUGHPUT_TARGET:.2f}x"
    name = "async / sync: max throughput, 1-row tasks"
    return [Ratio(name, model, value, "x", detail, target=target, passed=passed)]


def _async_rows(index: _Index, model: str) -> list[Ratio]:
    """Batch amortisation: rows/s of ASYNC_ROWS-row tasks against ASYNC_ROWS-row
    synchronous requests, and against single-row tasks. Reported, not judged."""
    arms = (ASYNC_ROWS_ARM, ENGINE_ROWS_ARM, ASYNC_ARM)
    rows, sync, single = (index.best(model, arm) for arm in arms)
    if rows is None:
        return []

    def rate(s: RunSummary) -> float:
        return s.throughput_rps * s.batch_size

    out = []
    if sync is not None and rate(sync) > 0:
        detail = (
            f"{ASYNC_ROWS_ARM} {rate(rows):,.0f} rows/s ({rows.concurrency} in flight) / "
            f"{ENGINE_ROWS_ARM} {rate(sync):,.0f} rows/s (c={sync.concurrency})"
        )
        name = f"async / sync: rows/s, {ASYNC_ROWS}-row tasks"
        out.append(Ratio(name, model, rate(rows) / rate(sync), "x", detail))
    if single is not None and rate(single) > 0:
        detail = f"{rate(rows):,.0f} rows/s / {rate(single):,.0f} rows/s, each at saturation"
        name = f"async batch amortisation: rows/s, {ASYNC_ROWS}-row / 1-row tasks"
        out.append(Ratio(name, model, rate(rows) / rate(single), "x", detail))
    return out


def _async_latency(index: _Index, model: str, c: int) -> list[Ratio]:
    """One task at a time: its own created_at -> completed_at p50 (judged) and the
    p50 a polling client saw (reported), each minus the synchronous p50."""
    sync = index.at(model, ENGINE_ARM, c)
    queue, seen = index.at(model, ASYNC_QUEUE_ARM, c), index.at(model, ASYNC_ARM, c)
    if sync is None or queue is None:
        return []
    added = queue.latency_ms["p50"] - sync.latency_ms["p50"]
    detail = (
        f"the tasks' own created_at → completed_at p50 {queue.latency_ms['p50']:.2f} ms "
        f"({queue.requests} tasks, millisecond timestamps) - {ENGINE_ARM} p50 "
        f"{sync.latency_ms['p50']:.2f} ms ({sync.client}) at c={c}"
        + (f"; {queue.errors} errors" if queue.errors else "")
    )
    out = [
        Ratio(
            f"async queue→completion p50 - sync p50 at c={c}",
            model,
            added,
            "ms",
            detail,
            target=f"≤ {ASYNC_ADDED_P50_MS:g} ms",
            passed=added <= ASYNC_ADDED_P50_MS and queue.errors == 0,
        )
    ]
    # The polling client is Python: against the synchronous door through Python too.
    python = index.at(model, ENGINE_PYTHON_ARM, c)
    ref_arm, ref = (ENGINE_ARM, sync) if python is None else (ENGINE_PYTHON_ARM, python)
    if seen is not None:
        detail = (
            f"{ASYNC_ARM} p50 {seen.latency_ms['p50']:.2f} ms (submit sent → the poll that saw "
            f"the result) - {ref_arm} p50 {ref.latency_ms['p50']:.2f} ms at c={c}"
        )
        name = f"async submit→result seen p50 - sync p50 at c={c}"
        added = seen.latency_ms["p50"] - ref.latency_ms["p50"]
        out.append(Ratio(name, model, added, "ms", detail))
    return out


def _overhead(index: _Index, model: str, arm: str, ref: str, c: int, what: str) -> list[Ratio]:
    a, b = index.at(model, arm, c), index.at(model, ref, c)
    if a is None or b is None:
        return []
    detail = f"{arm} minus {ref} at concurrency {c}"
    return [
        Ratio(f"{what}: added {q}", model, (a.latency_ms[q] - b.latency_ms[q]) * 1e3, "µs", detail)
        for q in ("p50", "p99")
    ]


def _p50_target(index: _Index, model: str, c: int) -> list[Ratio]:
    """Conch's p50 against the in-process baseline's, one request at a time."""
    conch, base = index.at(model, "conch-rest", c), index.at(model, TUNED, c)
    if conch is None or base is None or base.latency_ms["p50"] == 0:
        return []
    value = conch.latency_ms["p50"] / base.latency_ms["p50"]
    gap = (conch.latency_ms["p50"] - base.latency_ms["p50"]) * 1e3
    where = (
        f"the baseline wins by {gap:.0f} µs: it runs the model in its own process, "
        "while Conch adds a key check, the limiter's Redis round trip and a hop to Triton"
        if gap > 0
        else f"Conch is {-gap:.0f} µs faster"
    )
    detail = (
        f"conch-rest p50 {conch.latency_ms['p50']:.2f} ms / {TUNED} "
        f"{base.latency_ms['p50']:.2f} ms at concurrency {c}; {where}"
    )
    return [
        Ratio(
            f"conch-rest / {TUNED}: p50 at concurrency {c}",
            model,
            value,
            "x",
            detail,
            target=f"≤ {P50_TARGET:.2f}x",
            passed=value <= P50_TARGET,
        )
    ]


def _same_core(index: _Index, model: str, arm: str, ref: str, c: int) -> list[Ratio]:
    """Two doors onto the one model core, same client: p50 at `c` and saturation
    throughput within DOOR_SPREAD of each other."""
    out = []
    a, b = index.at(model, arm, c), index.at(model, ref, c)
    if a is not None and b is not None and b.latency_ms["p50"] > 0:
        value = a.latency_ms["p50"] / b.latency_ms["p50"]
        detail = f"p50 {a.latency_ms['p50']:.2f} ms / {b.latency_ms['p50']:.2f} ms at c={c}"
        out.append(_spread(f"{arm} / {ref}: p50 at c={c}", model, value, detail))
    best_a, best_b = index.best(model, arm), index.best(model, ref)
    if best_a is not None and best_b is not None and best_b.throughput_rps > 0:
        value = best_a.throughput_rps / best_b.throughput_rps
        detail = (
            f"{best_a.throughput_rps:.0f} req/s (c={best_a.concurrency}) / "
            f"{best_b.throughput_rps:.0f} req/s (c={best_b.concurrency}), each at its best"
        )
        out.append(_spread(f"{arm} / {ref}: max throughput", model, value, detail))
    return out


def _spread(name: str, model: str, value: float, detail: str) -> Ratio:
    target = f"1 ± {DOOR_SPREAD:.2f}"
    return Ratio(name, model, value, "x", detail, target, abs(value - 1) <= DOOR_SPREAD)


def _max_throughput(index: _Index, model: str, arm: str, ref: str) -> list[Ratio]:
    a, b = index.best(model, arm), index.best(model, ref)
    if a is None or b is None or b.throughput_rps == 0:
        return []
    detail = (
        f"{arm} {a.throughput_rps:.0f} req/s (c={a.concurrency}) / "
        f"{ref} {b.throughput_rps:.0f} req/s (c={b.concurrency}), each at its best"
    )
    ratio = a.throughput_rps / b.throughput_rps
    out = [Ratio(f"max throughput {arm} / {ref}", model, ratio, "x", detail)]
    if ref == "conch-rest-nolimit":
        what = "rate limit" if arm == "conch-rest" else "rate limit, many keys"
        out.append(
            Ratio(f"{what}: throughput loss at saturation", model, (1 - ratio) * 100, "%", detail)
        )
    return out


def _pair_at(index: _Index, model: str, arm: str, ref: str, wanted: int) -> list[Ratio]:
    """Both arms at the same concurrency: the same offered load."""
    c = index.common(model, arm, ref, wanted)
    if c is None:
        return []
    a, b = index.at(model, arm, c), index.at(model, ref, c)
    if a is None or b is None or b.throughput_rps == 0 or b.latency_ms["p99"] == 0:
        return []
    detail = f"at concurrency {c}"
    return [
        Ratio(
            f"{arm} / {ref}: throughput at c={c}",
            model,
            a.throughput_rps / b.throughput_rps,
            "x",
            detail,
        ),
        Ratio(
            f"{arm} / {ref}: p99 at c={c}",
            model,
            a.latency_ms["p99"] / b.latency_ms["p99"],
            "x",
            detail,
        ),
    ]


def _open_pair(index: _Index, model: str, arm: str, ref: str) -> list[Ratio]:
    """Latency under load: both arms offered the same fixed rate (open loop)."""
    a, b = index.open_loop(model, arm), index.open_loop(model, ref)
    if a is None or b is None or a.rate != b.rate or b.latency_ms["p99"] == 0:
        return []
    detail = (
        f"open-loop at {a.rate:g} req/s: p99 {a.latency_ms['p99']:.2f} ms / "
        f"{b.latency_ms['p99']:.2f} ms"
    )
    value = a.latency_ms["p99"] / b.latency_ms["p99"]
    return [Ratio(f"{arm} / {ref}: p99 open-loop at {a.rate:g}/s", model, value, "x", detail)]


def client_verdict(
    reference: RunSummary, check: RunSummary, *, two_sided: bool, noise: float = CLIENT_NOISE
) -> tuple[bool, str]:
    """Do two measurements of one arm by different clients agree within the noise?

    `check / reference` above 1 + noise: the reference's client limited it. With
    `two_sided` (two different clients), below 1 - noise: the check's client did.
    One-sided (the same client, more processes), less is extra clients taking CPU
    from the server on a small machine, not a client limit.
    """
    value = check.throughput_rps / reference.throughput_rps
    if value > 1 + noise:
        return False, f"the {reference.client} client limited {reference.label}"
    if two_sided and value < 1 - noise:
        return False, f"the {check.client} client limited {check.label}"
    return True, f"within ±{noise:.0%}: the client was not the limit"


def _check_ratio(
    name: str, model: str, ref: RunSummary, check: RunSummary, *, two_sided: bool
) -> Ratio:
    passed, verdict = client_verdict(ref, check, two_sided=two_sided)
    detail = (
        f"at concurrency {check.concurrency}: {check.client} x{check.processes} "
        f"{check.throughput_rps:.0f} req/s vs {ref.client} x{ref.processes} "
        f"{ref.throughput_rps:.0f} req/s; {verdict}"
    )
    bound = f"1 ± {CLIENT_NOISE:.2f}" if two_sided else f"≤ {1 + CLIENT_NOISE:.2f}x"
    value = check.throughput_rps / ref.throughput_rps
    return Ratio(name, model, value, "x", detail, target=bound, passed=passed)


def _client_check(index: _Index, model: str) -> list[Ratio]:
    check = index.best(model, CLIENT_CHECK_ARM)
    ref = None if check is None else index.at(model, "triton-grpc", check.concurrency)
    if check is None or ref is None or ref.throughput_rps == 0:
        return []
    name = "client check: gRPC throughput with 2x client processes"
    return [_check_ratio(name, model, ref, check, two_sided=False)]


def _http_client_check(index: _Index, model: str) -> list[Ratio]:
    check = index.best(model, HTTP_CHECK_ARM)
    ref = None if check is None else index.at(model, "triton-http", check.concurrency)
    if check is None or ref is None or ref.throughput_rps == 0:
        return []
    name = "client check: triton-http through Python / through wrk"
    return [_check_ratio(name, model, ref, check, two_sided=True)]
