"""`GET /metrics`: this process's counters for Prometheus (no key, like health checks).

Triton's own metrics (queue and compute time, GPU use) stay on Triton's metrics
port; this endpoint adds what only the control plane knows: responses by status,
rate-limit fallbacks, events, loads and evictions.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from control_plane.core import metrics
from control_plane.keys.deps import GuardedRoute, Public

router = APIRouter(tags=["health"], route_class=GuardedRoute)


@router.get("/metrics", response_class=PlainTextResponse, dependencies=[Public])
async def prometheus_metrics() -> PlainTextResponse:
    return PlainTextResponse(metrics.prometheus_text(), media_type="text/plain; version=0.0.4")
