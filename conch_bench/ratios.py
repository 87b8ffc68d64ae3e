"""The target ratios, each computed from two arms measured in the same run.

Arm names: triton-grpc, triton-http, triton-grpc-nobatch (dynamic batching off),
conch-rest (auth, slot and rate limit on), conch-rest-nolimit, baseline (plain
FastAPI). A ratio whose arms were not measured is left out, not guessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from conch_bench.stats import RunSummary

# gRPC at its best concurrency, again with twice the client processes.
CLIENT_CHECK_ARM = "triton-grpc-2x-clients"


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Index:
    def __init__(self, runs: Sequence[ArmRun]) -> None:
        self._by_key = {(r.model, r.arm, r.summary.concurrency): r.summary for r in runs}
        self._runs = runs

    def at(self, model: str, arm: str, concurrency: int) -> RunSummary | None:
        summary = self._by_key.get((model, arm, concurrency))
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

    def models(self) -> list[str]:
        return list(dict.fromkeys(r.model for r in self._runs))


def compute_ratios(runs: Sequence[ArmRun], *, low: int = 1, mid: int = 64) -> list[Ratio]:
    index = _Index(runs)
    ratios: list[Ratio] = []
    for model in index.models():
        ratios += _overhead(index, model, "conch-rest", "triton-grpc", low, "Conch REST over gRPC")
        ratios += _overhead(index, model, "conch-rest", "conch-rest-nolimit", low, "rate limit")
        ratios += _max_throughput(index, model, "conch-rest", "triton-grpc")
        ratios += _max_throughput(index, model, "conch-rest", "conch-rest-nolimit")
        ratios += _max_throughput(index, model, "triton-http", "triton-grpc")
        ratios += _pair_at(index, model, "triton-grpc", "triton-grpc-nobatch", mid)
        ratios += _client_check(index, model)
        for arm in ("conch-rest", "triton-grpc", "triton-http"):
            ratios += _pair_at(index, model, arm, "baseline", mid)
    return ratios


def _overhead(index: _Index, model: str, arm: str, ref: str, c: int, what: str) -> list[Ratio]:
    a, b = index.at(model, arm, c), index.at(model, ref, c)
    if a is None or b is None:
        return []
    detail = f"{arm} minus {ref} at concurrency {c}"
    return [
        Ratio(
            f"{what}: added p50",
            model,
            (a.latency_ms["p50"] - b.latency_ms["p50"]) * 1e3,
            "µs",
            detail,
        ),
        Ratio(
            f"{what}: added p99",
            model,
            (a.latency_ms["p99"] - b.latency_ms["p99"]) * 1e3,
            "µs",
            detail,
        ),
    ]


def _max_throughput(index: _Index, model: str, arm: str, ref: str) -> list[Ratio]:
    a, b = index.best(model, arm), index.best(model, ref)
    if a is None or b is None or b.throughput_rps == 0:
        return []
    detail = (
        f"{arm} {a.throughput_rps:.0f} req/s (c={a.concurrency}) / "
        f"{ref} {b.throughput_rps:.0f} req/s (c={b.concurrency})"
    )
    ratio = a.throughput_rps / b.throughput_rps
    out = [Ratio(f"max throughput {arm} / {ref}", model, ratio, "x", detail)]
    if ref == "conch-rest-nolimit":
        out.append(
            Ratio(
                "rate limit: throughput loss at saturation", model, (1 - ratio) * 100, "%", detail
            )
        )
    return out


def _pair_at(index: _Index, model: str, arm: str, ref: str, wanted: int) -> list[Ratio]:
    c = index.common(model, arm, ref, wanted)
    if c is None:
        return []
    a, b = index.at(model, arm, c), index.at(model, ref, c)
    if a is None or b is None or b.throughput_rps == 0 or b.latency_ms["p99"] == 0:
        return []
    detail = f"at concurrency {c}"
    return [
        Ratio(
            f"{arm} / {ref}: throughput", model, a.throughput_rps / b.throughput_rps, "x", detail
        ),
        Ratio(f"{arm} / {ref}: p99", model, a.latency_ms["p99"] / b.latency_ms["p99"], "x", detail),
    ]


def _client_check(index: _Index, model: str) -> list[Ratio]:
    check = index.best(model, CLIENT_CHECK_ARM)
    if check is None:
        return []
    c = check.concurrency
    ref = index.at(model, "triton-grpc", c)
    if ref is None or ref.throughput_rps == 0:
        return []
    detail = (
        f"triton-grpc at concurrency {c}: {check.processes} client processes "
        f"{check.throughput_rps:.0f} req/s vs {ref.processes}: {ref.throughput_rps:.0f} req/s "
        "(≤ 1.0x: the client was not the limit; on a small machine extra clients take CPU "
        "from the server)"
    )
    value = check.throughput_rps / ref.throughput_rps
    return [Ratio("client check: throughput with 2x client processes", model, value, "x", detail)]
