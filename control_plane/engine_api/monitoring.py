"""What this replica measures about its host and its parts, for seed 002's monitoring.

Every figure is read when asked: CPU, memory and disk through psutil, GPUs
through NVML (`nvidia-ml-py`, imported only if installed), Triton's per-model
memory from its statistics, and each component's health by probing it. What
cannot be measured here answers None, so the API says `null` instead of guessing.

CPU percent is the busy share of the host's CPU time between two readings. The
first reading waits `CpuSampler.min_interval_s` (without blocking the loop);
readings closer together than that reuse the last figure, since a delta over
microseconds says nothing.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import time
from collections.abc import Awaitable
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple, TypeVar

import psutil

from control_plane.core.errors import TritonError
from control_plane.engine_api.management_schemas import (
    CpuUsage,
    DiskUsage,
    GpuDevice,
    GpuUsage,
    MemoryUsage,
)

logger = logging.getLogger(__name__)

_MB = 1024 * 1024
_GB = 1024 * _MB
T = TypeVar("T")


# --- the host -------------------------------------------------------------------------


class _CpuReading(NamedTuple):
    at: float  # monotonic
    busy_s: float
    total_s: float


def _read_cpu() -> _CpuReading:
    times = psutil.cpu_times()
    # Linux counts guest time inside user time already; iowait is idle time.
    total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    idle = times.idle + getattr(times, "iowait", 0.0)
    return _CpuReading(time.monotonic(), total - idle, total)


class CpuSampler:
    """Busy percent of all CPUs between readings; its own readings, so another
    caller of psutil.cpu_percent cannot shorten its interval."""

    def __init__(self, min_interval_s: float = 0.1) -> None:
        self.min_interval_s = min_interval_s
        self._last: _CpuReading | None = None
        self._percent: float | None = None

    async def percent(self) -> float:
        if self._last is None:
            self._last = _read_cpu()
            await asyncio.sleep(self.min_interval_s)
        last = self._last
        if self._percent is not None and time.monotonic() - last.at < self.min_interval_s:
            return self._percent
        now = _read_cpu()
        elapsed = now.total_s - last.total_s
        if elapsed <= 0:  # no CPU time passed (clock granularity): the last figure stands
            return self._percent or 0.0
        self._percent = round(100.0 * (now.busy_s - last.busy_s) / elapsed, 1)
        self._last = now
        return self._percent


async def cpu_usage(sampler: CpuSampler) -> CpuUsage:
    return CpuUsage(
        usage_percent=await sampler.percent(),
        cores=psutil.cpu_count(logical=True) or len(os.sched_getaffinity(0)),
        load_average=[round(load, 2) for load in psutil.getloadavg()],
    )


def memory_usage() -> MemoryUsage:
    memory = psutil.virtual_memory()
    return MemoryUsage(
        total_mb=round(memory.total / _MB, 1),
        used_mb=round((memory.total - memory.available) / _MB, 1),
        free_mb=round(memory.available / _MB, 1),
        usage_percent=round(memory.percent, 1),
    )


def process_memory_mb() -> float:
    """This process's resident memory."""
    return round(float(psutil.Process().memory_info().rss) / _MB, 1)


def disk_usage(path: Path) -> DiskUsage:
    """The filesystem holding `path` (the model repository, or its nearest existing parent)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    usage = psutil.disk_usage(str(path))
    return DiskUsage(
        usage_percent=round(usage.percent, 1),
        free_gb=round(usage.free / _GB, 2),
        total_gb=round(usage.total / _GB, 2),
    )


def process_uptime_s() -> float:
    return max(0.0, time.time() - float(psutil.Process().create_time()))


def format_uptime(seconds: float) -> str:
    """As the seed writes it: '2h 30m 45s' (days count as hours)."""
    whole = int(seconds)
    return f"{whole // 3600}h {whole % 3600 // 60}m {whole % 60}s"


# --- GPUs (NVML) ----------------------------------------------------------------------


class _Nvml:
    """NVML, initialised once per process on first use; None forever if it cannot be
    (the library is not installed, no driver, no GPU)."""

    def __init__(self) -> None:
        self._module: ModuleType | None = None
        self._tried = False

    def module(self) -> ModuleType | None:
        if not self._tried:
            self._tried = True
            try:
                nvml = importlib.import_module("pynvml")  # the nvidia-ml-py package
                nvml.nvmlInit()
            except ImportError:
                logger.info("GPU figures off: nvidia-ml-py is not installed")
            except Exception as exc:  # NVMLError: no driver or no GPU here
                logger.info("GPU figures off: NVML unavailable (%s)", exc)
            else:
                self._module = nvml
        return self._module


_NVML = _Nvml()


def _device(nvml: Any, index: int) -> GpuDevice:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    try:
        temperature: float | None = float(
            nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
        )
    except nvml.NVMLError:  # not every board has a sensor NVML can read
        temperature = None
    name = nvml.nvmlDeviceGetName(handle)
    return GpuDevice(
        index=index,
        name=name.decode() if isinstance(name, bytes) else str(name),
        usage_percent=float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
        memory_total_mb=round(memory.total / _MB, 1),
        memory_used_mb=round(memory.used / _MB, 1),
        temperature=temperature,
    )


def _read_gpus() -> GpuUsage | None:
    nvml = _NVML.module()
    if nvml is None:
        return None
    try:
        devices = [_device(nvml, i) for i in range(nvml.nvmlDeviceGetCount())]
    except nvml.NVMLError as exc:  # a GPU fell off the bus, a driver reload
        logger.warning("reading the GPUs through NVML failed: %s", exc)
        return None
    if not devices:
        return None
    temperatures = [d.temperature for d in devices if d.temperature is not None]
    return GpuUsage(
        count=len(devices),
        usage_percent=round(sum(d.usage_percent for d in devices) / len(devices), 1),
        memory_total_mb=round(sum(d.memory_total_mb for d in devices), 1),
        memory_used_mb=round(sum(d.memory_used_mb for d in devices), 1),
        temperature=max(temperatures) if temperatures else None,
        devices=devices,
    )


async def gpu_usage() -> GpuUsage | None:
    """The GPUs this process sees, or None. NVML calls block briefly: in a thread."""
    return await asyncio.to_thread(_read_gpus)


# --- Triton's figures -----------------------------------------------------------------


async def from_triton(call: Awaitable[T], timeout_s: float) -> T | None:
    """Triton's answer, or None (not measured) when it fails or is slower than
    `timeout_s`: while Triton loads models its index and statistics can wait for it."""
    try:
        return await asyncio.wait_for(call, timeout_s)
    except (TritonError, TimeoutError):
        return None


def triton_memory_mb(statistics: dict[str, Any]) -> float | None:
    """The memory Triton reports for a model (every version, CPU and GPU), from its
    statistics; None when it reports none, as most backends (Python ones included) do."""
    sizes = [
        int(usage.get("byte_size") or 0)
        for model in statistics.get("model_stats", [])
        for usage in model.get("memory_usage") or ()
    ]
    return round(sum(sizes) / _MB, 3) if sizes else None


# --- probes of the parts --------------------------------------------------------------
