"""What every HTTP request records as it ends: its duration by route template, method
and status, the requests-in-flight gauge, and its access-log line.

Called through `request_id.RequestRecord`, by the request-id middleware for
FastAPI's routes and by the prediction fast lane (in front of the stack) for its
own, so both are measured alike. The route is the template of what served
the request: the lane's endpoint (it sets `LANE_ROUTE` in the scope) or the route
FastAPI's router matched (a 405 keeps the route whose path matched). A raw path
never becomes a label: a request no route matched is `unmatched`. A request whose
client left before any answer has status 499.
"""

from __future__ import annotations

import time

from starlette.types import Scope

from control_plane.core import access_log, metrics
from control_plane.core.access_log import RequestFacts

LANE_ROUTE = "conch.route"  # the scope key the fast lane names its template under
UNMATCHED = "unmatched"
NO_ANSWER = 499  # nginx's "client closed request"

_durations = metrics.Children(metrics.HTTP_REQUEST_SECONDS)
_in_flight = metrics.HTTP_IN_FLIGHT


def started() -> float:
    _in_flight.inc()
    return time.perf_counter()


def finished(scope: Scope, status: int, started_at: float, facts: RequestFacts) -> None:
    seconds = time.perf_counter() - started_at
    _in_flight.dec()
    route = route_template(scope)
    method: str = scope["method"]
    _durations.get((route, method, status), route, method, str(status)).observe(seconds)
    access_log.log_request(facts, method, route, status, seconds)


def route_template(scope: Scope) -> str:
    template: str | None = scope.get(LANE_ROUTE)
    if template is not None:
        return template
    # FastAPI (0.13x on) leaves an included router's route in scope["route"] as it was
    # declared, without the router's prefix; the whole template is its route context's.
    context = scope.get("fastapi", {}).get("effective_route_context")
    path = getattr(context, "path_format", None) or getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else UNMATCHED
