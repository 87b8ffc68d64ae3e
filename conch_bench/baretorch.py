"""`conch bench bare-torch`: the MLP called directly with torch, no server at all.

This is the physical reference for the served arms: samples/s the hardware
gives at each batch size with no network, serialisation or queueing. On a GPU
it shows how much batching the device needs to be busy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from conch_bench.models import MLP_SHAPE
from conch_bench.stats import percentile


@dataclass(frozen=True)
class BareResult:
    batch_size: int
    calls: int
    calls_per_s: float
    samples_per_s: float
    p50_ms: float
    p99_ms: float


def _module(torchscript: Path | None, device: str) -> tuple[Any, int]:
    import torch

    if torchscript is not None:
        module = torch.jit.load(str(torchscript), map_location=device)
        d_in = MLP_SHAPE[0]
    else:
        torch.manual_seed(0)
        d_in, h1, h2, d_out = MLP_SHAPE
        module = torch.nn.Sequential(
            torch.nn.Linear(d_in, h1),
            torch.nn.ReLU(),
            torch.nn.Linear(h1, h2),
            torch.nn.ReLU(),
            torch.nn.Linear(h2, d_out),
        )
    return module.eval().to(device), d_in


def run_bare_torch(
    batch_sizes: tuple[int, ...],
    *,
    duration_s: float = 2.0,
    warmup_s: float = 0.5,
    device: str = "cpu",
    threads: int | None = None,
    torchscript: Path | None = None,
) -> list[BareResult]:
    import torch

    if threads:
        torch.set_num_threads(threads)
    module, d_in = _module(torchscript, device)
    synchronize = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    results = []
    with torch.inference_mode():
        for batch in batch_sizes:
            x = torch.randn(batch, d_in, device=device)
            end = time.perf_counter() + warmup_s
            while time.perf_counter() < end:
                module(x)
            synchronize()
            latencies = []
            start = time.perf_counter()
            while (t0 := time.perf_counter()) < start + duration_s:
                module(x)
                synchronize()  # a GPU call is only done when the device says so
                latencies.append(time.perf_counter() - t0)
            elapsed = time.perf_counter() - start
            samples = np.asarray(latencies)
            results.append(
                BareResult(
                    batch_size=batch,
                    calls=samples.size,
                    calls_per_s=samples.size / elapsed,
                    samples_per_s=samples.size * batch / elapsed,
                    p50_ms=percentile(samples, 50) * 1e3,
                    p99_ms=percentile(samples, 99) * 1e3,
                )
            )
    return results
