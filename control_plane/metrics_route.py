"""`GET /metrics`: the control plane's Prometheus families (no key, like health checks).

Triton's own metrics (queue and compute time, batches, GPU use) stay on Triton's
metrics port; this endpoint adds what only the control plane knows
(`core/metrics.py`, listed in docs/OBSERVABILITY.md): requests by route and
status, Triton calls by model, rate-limit decisions, caches, loads, events,
reconciliation, and the async tasks (their queue depth read from Redis when
scraped: `jobs/task_metrics.py`). With several workers, every worker's values
summed (PROMETHEUS_MULTIPROC_DIR).
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

router = APIRouter(tags=["health"], route_class=GuardedRoute)


@router.get("/metrics", response_class=PlainTextResponse, dependencies=[Public])
async def prometheus_metrics(request: Request) -> PlainTextResponse:
    # Before the lifespan ran (an app only built) there are families, but no queue.
    components: Components | None = getattr(request.app.state, "components", None)
    queue = None if components is None else components.find(TaskQueue)
    tasks = await task_metrics.prometheus_text(queue)
    # Off the event loop: with several workers, their files are read and merged.
    families = await asyncio.to_thread(metrics.exposition)
    return PlainTextResponse(families + tasks.encode(), media_type=metrics.CONTENT_TYPE)
