"""/api/inference/metrics/... and /api/inference/health: seed 002's monitoring.

Each figure is measured when asked (`monitoring.py`): request figures from this
replica's `InferenceStats` window, the host through psutil and NVML, models from
Triton. `null` marks what nothing here measures (a model-cache hit rate, GPUs this
process cannot see, request figures when the app counts no predictions).

The metrics cover the whole replica, every project's traffic: they need a read key
restricted to no project, as `/api/v1/engine` does. Health needs no key; it probes
each part now and answers 503 (with Retry-After) when Triton or SQL is down, since
this replica then serves nothing; anything else amiss is `degraded`, 200.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from control_plane.core.components import Components, ComponentsDep
from control_plane.core.errors import DEFAULT_RETRY_AFTER_S, retry_after
from control_plane.core.responses import OrjsonResponse
from control_plane.core.settings import Settings
from control_plane.db.probes import answers, sql_ping
from control_plane.engine_api import monitoring
from control_plane.engine_api.management_schemas import (
    ModelsOverview,
    PerformanceMetrics,
    RequestMetrics,
    ResourceMetrics,
    ResourceUsage,
    SystemHealth,
)
from control_plane.keys.deps import GuardedRoute, Public, ReadGlobalKey
from control_plane.lifecycle.manager import ModelLifecycle
from control_plane.model_core.stats import InferenceStats
from control_plane.triton.client import TritonGateway

router = APIRouter(tags=["engine api: monitoring"], route_class=GuardedRoute)

# One per process, like the CPUs it measures.
_CPU = monitoring.CpuSampler()

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
NOT_CONFIGURED, NOT_MEASURED = "not_configured", "not_measured"
# Without these this replica answers no prediction at all.
_VITAL = ("engine_status", "database")


def _request_metrics(components: Components) -> RequestMetrics | None:
    stats = components.find(InferenceStats)
    if stats is None:
        return None
    window = stats.window()
    return RequestMetrics(
        window_s=round(window.window_s, 3),
        total_requests=window.total_requests,
        successful_requests=window.successful_requests,
        failed_requests=window.failed_requests,
        average_response_time=window.average_response_time_s,
        p95_response_time=window.p95_response_time_s,
        p99_response_time=window.p99_response_time_s,
        requests_per_second=round(window.requests_per_second, 3),
    )


async def _models_overview(components: Components) -> ModelsOverview:
    triton = components.get(TritonGateway)
    timeout_s = components.get(Settings).monitoring_triton_timeout_s
    ready = await monitoring.from_triton(triton.ready_models(), timeout_s)
    if ready is None:  # unreachable or busy: how many it holds is unknown
        return ModelsOverview(active_models=None, total_model_memory_mb=None)

    async def memory(name: str) -> float | None:
        statistics = await monitoring.from_triton(triton.statistics(name), timeout_s)
        return None if statistics is None else monitoring.triton_memory_mb(statistics)

    measured = [m for m in await asyncio.gather(*(memory(n) for n in ready)) if m is not None]
    return ModelsOverview(
        active_models=len(ready),
        total_model_memory_mb=round(sum(measured), 3) if measured else None,
    )


@router.get("/metrics/performance")
async def performance(_: ReadGlobalKey, components: ComponentsDep) -> PerformanceMetrics:
    """Requests over the recent window (p95/p99 of successful ones), the host, and
    the models Triton has ready."""
    gpu = await monitoring.gpu_usage()
    return PerformanceMetrics(
        request_metrics=_request_metrics(components),
        resource_metrics=ResourceMetrics(
            cpu_usage=await _CPU.percent(),
            memory_usage_mb=monitoring.process_memory_mb(),
            gpu_usage=gpu.usage_percent if gpu else None,
            gpu_memory_mb=gpu.memory_used_mb if gpu else None,
        ),
        model_metrics=await _models_overview(components),
    )


@router.get("/metrics/resources")
async def resources(_: ReadGlobalKey, components: ComponentsDep) -> ResourceUsage:
    """CPU, memory, GPUs (null without NVML or a visible GPU) and the disk of the
    model repository, as this replica's host reports them now."""
    repository = components.get(Settings).model_repository
    return ResourceUsage(
        cpu=await monitoring.cpu_usage(_CPU),
        memory=monitoring.memory_usage(),
        gpu=await monitoring.gpu_usage(),
        disk=await asyncio.to_thread(monitoring.disk_usage, repository),
    )


async def _checks(components: Components) -> tuple[dict[str, str], dict[str, str]]:
    """Each part's state, probed now, and the reason for each that is not healthy."""
    settings = components.get(Settings)
    probe_s = settings.health_probe_timeout_s
    redis = components.find(Redis)
    triton_live, sql_up, redis_up = await asyncio.gather(
        components.get(TritonGateway).is_live(),
        answers(sql_ping(components.get(AsyncEngine)), probe_s),
        answers(redis.ping(), probe_s) if redis is not None else asyncio.sleep(0),
    )
    checks: dict[str, str] = {}
    reasons: dict[str, str] = {}

    def judge(name: str, state: str, reason: str = "") -> None:
        checks[name] = state
        if state in (DEGRADED, UNHEALTHY):
            reasons[name] = reason

    judge("engine_status", HEALTHY if triton_live else UNHEALTHY, "Triton is not live")
    judge("database", HEALTHY if sql_up else UNHEALTHY, f"SQL did not answer in {probe_s}s")
    if redis is None:
        judge("redis", NOT_CONFIGURED)
    else:
        judge("redis", HEALTHY if redis_up else UNHEALTHY, f"Redis did not answer in {probe_s}s")
    memory = monitoring.memory_usage()
    high = memory.usage_percent >= settings.health_memory_degraded_percent
    judge(
        "memory_usage",
        DEGRADED if high else HEALTHY,
        f"{memory.usage_percent}% of host memory in use "
        f"(degraded from {settings.health_memory_degraded_percent}%)",
    )
    problems = components.get(ModelLifecycle).repository_problems()
    judge(
        "model_loading",
        DEGRADED if problems else HEALTHY,
        f"{len(problems)} model(s) cannot be loaded on this replica (see /api/v1/engine)",
    )
    stats = components.find(InferenceStats)
    if stats is None:
        judge("inference_performance", NOT_MEASURED)
    else:
        window = stats.window()
        failed = window.failed_requests / window.total_requests if window.total_requests else 0.0
        judge(
            "inference_performance",
            DEGRADED if failed >= settings.health_error_rate_degraded else HEALTHY,
            f"{window.failed_requests} of {window.total_requests} predictions failed in the "
            f"last {window.window_s:.0f}s",
        )
    return checks, reasons


def _overall(checks: dict[str, str]) -> str:
    if any(checks[name] == UNHEALTHY for name in _VITAL):
        return UNHEALTHY
    if any(state in (DEGRADED, UNHEALTHY) for state in checks.values()):
        return DEGRADED
    return HEALTHY


@router.get(
    "/health",
    response_model=SystemHealth,
    responses={503: {"model": SystemHealth, "description": "Triton or SQL is down"}},
    dependencies=[Public],
)
async def health(request: Request, components: ComponentsDep) -> OrjsonResponse:
    """Triton, SQL, Redis, host memory, model loads and the recent error rate, each
    probed or measured now; never a constant."""
    checks, reasons = await _checks(components)
    uptime_s = monitoring.process_uptime_s()
    body = SystemHealth(
        status=_overall(checks),
        timestamp=datetime.now(UTC),
        checks=checks,
        reasons=reasons,
        uptime=monitoring.format_uptime(uptime_s),
        uptime_s=round(uptime_s, 3),
        version=request.app.version,
    )
    payload = body.model_dump(mode="json")
    if body.status == UNHEALTHY:
        return OrjsonResponse(payload, 503, headers=retry_after(DEFAULT_RETRY_AFTER_S))
    return OrjsonResponse(payload)
