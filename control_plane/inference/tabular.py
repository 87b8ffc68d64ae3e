"""/api/v1/models/{model_id}/predict: feature vectors for tabular models (seed 002).

The endpoint is declared in `endpoints.py` and handled by
`handlers.predict_for_rows`; this router gives it the prefix it shares with the
model registry's paths. With the fast lane on (the default) `lane.py` serves it.
"""

from __future__ import annotations

from fastapi import APIRouter

from control_plane.inference.endpoints import include_endpoints
from control_plane.keys.deps import GuardedRoute

router = APIRouter(prefix="/api/v1/models", tags=["inference"], route_class=GuardedRoute)
include_endpoints(router)
