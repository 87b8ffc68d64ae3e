"""`GET /metrics`: the control plane's Prometheus families (no key, like health checks).

Triton's own metrics (queue and compute time, batches, GPU use) stay on Triton's
metrics port; this endpoint adds what only the control plane knows
(`core/metrics.py`, listed in docs/OBSERVABILITY.md): requests by route and
status, Triton calls by model, rate-limit decisions, caches, loads, events,
reconciliation, and the async tasks (their queue depth read from Redis when
scraped: `jobs/task_metrics.py`). With several workers, every worker's values
summed (PROMETHEUS_MULTIPROC_DIR). Whether the rate limiter reaches Redis is
asked at each scrape too (`conch_rate_limit_redis_up`): the fallback counter only
moves while requests arrive, an alert must not wait for traffic.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from control_plane.core import metrics
from control_plane.core.components import Components
from control_plane.jobs import task_metrics
from control_plane.jobs.queue import TaskQueue
from control_plane.keys.deps import GuardedRoute, Public
from control_plane.ratelimit.limiter import RateLimiter

router = APIRouter(tags=["health"], route_class=GuardedRoute)


@router.get("/metrics", response_class=PlainTextResponse, dependencies=[Public])
async def prometheus_metrics(request: Request) -> PlainTextResponse:
    # Before the lifespan ran (an app only built) there are families, but no queue.
    components: Components | None = getattr(request.app.state, "components", None)
    queue = None if components is None else components.find(TaskQueue)
    limiter = None if components is None else components.find(RateLimiter)
    asked = await task_metrics.prometheus_text(queue) + await _redis_up(limiter)
    # Off the event loop: with several workers, their files are read and merged.
    families = await asyncio.to_thread(metrics.exposition)
    return PlainTextResponse(families + asked.encode(), media_type=metrics.CONTENT_TYPE)


_REDIS_UP = "conch_rate_limit_redis_up"


async def _redis_up(limiter: RateLimiter | None) -> str:
    """1 while limits are counted in Redis, 0 while each process counts alone (Redis
    unreachable; bounded by the limiter's own Redis timeout); nothing without Redis."""
    health = "not_configured" if limiter is None else await limiter.health()
    if health == "not_configured":
        return ""
    return f"# TYPE {_REDIS_UP} gauge\n{_REDIS_UP} {int(health == 'ok')}\n"
