"""The app with the prediction lane in front of every middleware.

Behind Starlette's middleware stack a prediction passed through its error and
telemetry layers, the body cap and the request-id middleware before the lane
answered it: a tenth of the control plane's CPU per request under load. In front,
the lane does for its own requests what those layers do (request id, response
headers, metrics, access line, the body cap, the 500 of an unexpected error), and
hands every other request to FastAPI. With tracing on, the server span's
middleware stands in front of the lane, so that it covers every request.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from control_plane.core.tracing import TracingMiddleware
from control_plane.inference.endpoints import Endpoint
from control_plane.inference.lane import PassthroughEndpoint, PredictionLane


class LaneInFront(FastAPI):
    """FastAPI whose first callable is the prediction lane once `put_lane_in_front`
    has made one; until then, FastAPI as it is."""

    lane: PredictionLane | None = None
    _front: ASGIApp | None = None  # the lane, or the server span's middleware before it

    def put_lane_in_front(
        self,
        extra_endpoints: Sequence[Endpoint],
        passthrough_endpoints: Sequence[PassthroughEndpoint],
        *,
        loopback_only: bool,
        traced: bool,
    ) -> None:
        self.lane = PredictionLane(
            super().__call__,  # FastAPI's own: everything the lane does not answer
            extra_endpoints,
            passthrough_endpoints,
            loopback_only=loopback_only,
        )
        self._front = TracingMiddleware(self.lane) if traced else self.lane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._front is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self  # as Starlette sets it: the lane finds the components there
        await self._front(scope, receive, send)
