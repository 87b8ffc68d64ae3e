"""PNG plots of latency percentiles and throughput against concurrency.

matplotlib is optional (the `dev` extra): without it, `plot_model` returns None
and the reports say how to get the plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from conch_bench.ratios import ArmRun

MISSING = "plots need matplotlib: pip install matplotlib (or the dev extra)"


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_model(path: Path, title: str, runs: Sequence[ArmRun]) -> Path | None:
    """Left: p50 (solid) and p99 (dashed) latency; right: throughput; one line per arm."""
    if not matplotlib_available():
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    closed = [r for r in runs if r.summary.mode == "closed" and r.summary.requests > 0]
    arms = list(dict.fromkeys(r.arm for r in closed))
    figure, (latency_ax, throughput_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for index, arm in enumerate(arms):
        points = sorted((r.summary for r in closed if r.arm == arm), key=lambda s: s.concurrency)
        x = [s.concurrency for s in points]
        colour = f"C{index % 10}"
        latency_ax.plot(x, [s.latency_ms["p50"] for s in points], "o-", color=colour, label=arm)
        latency_ax.plot(x, [s.latency_ms["p99"] for s in points], "s--", color=colour, alpha=0.6)
        throughput_ax.plot(x, [s.throughput_rps for s in points], "o-", color=colour, label=arm)
    ticks = sorted({r.summary.concurrency for r in closed})
    for ax in (latency_ax, throughput_ax):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlabel("concurrency (requests in flight)")
        ax.grid(True, which="both", alpha=0.3)
    latency_ax.set_yscale("log")
    latency_ax.set_ylabel("latency ms (p50 solid, p99 dashed)")
    throughput_ax.set_ylabel("throughput (requests/s)")
    throughput_ax.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
