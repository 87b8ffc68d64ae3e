"""`GET /metrics`: this process's counters for Prometheus (no key, like health checks).

Triton's own metrics (queue and compute time, GPU use) stay on Triton's metrics
port; this endpoint adds what only the control plane knows: responses by status,
rate-limit fallbacks, events, loads and evictions, and the async tasks (their queue
depth read from Redis when scraped: `jobs/task_metrics.py`).
"""

from __future__ import annotations

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
    # Before the lifespan ran (an app only built) there are counters, but no queue.
    components: Components | None = getattr(request.app.state, "components", None)
    queue = None if components is None else components.find(TaskQueue)
    tasks = await task_metrics.prometheus_text(queue)
    return PlainTextResponse(
        metrics.prometheus_text() + tasks, media_type="text/plain; version=0.0.4"
    )
