"""What the prediction endpoints do, apart from HTTP: one function per endpoint.

Both doors call these: the FastAPI routes (which document the endpoints in
/docs) and the prediction fast lane (`lane.py`), so the two cannot drift apart.
Each takes a caller already authorized for the model or project in the path
(`keys/access.py`) and a validated body, and returns the JSON payload as plain
dicts, rendered by orjson.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker

from control_plane.core.components import Components
from control_plane.core.request_id import current_request_id
from control_plane.inference.runtime import RuntimeCache
from control_plane.inference.schemas import BatchPredictRequest, PredictRequest
from control_plane.inference.service import recommend, recommend_one
from control_plane.keys.schemas import Principal
from control_plane.routing.cache import RoutingCache
from control_plane.routing.selection import choose_slot
from control_plane.triton.client import TritonGateway

Payload = dict[str, Any]


async def predict_for_user(
    app: Components, key: Principal, model_id: int, body: PredictRequest
) -> Payload:
    runtime = await app.get(RuntimeCache).recommender(app.get(async_sessionmaker), model_id)
    items = await recommend_one(app.get(TritonGateway), runtime, body.user_id, body.cutoff)
    return {"items": items, "model_id": model_id, "request_id": current_request_id()}


async def predict_for_users(
    app: Components, key: Principal, model_id: int, body: BatchPredictRequest
) -> Payload:
    runtime = await app.get(RuntimeCache).recommender(app.get(async_sessionmaker), model_id)
    lists = await recommend(app.get(TritonGateway), runtime, body.user_ids, body.cutoff)
    request_id = current_request_id()
    return {
        "results": [{"items": i, "model_id": model_id, "request_id": request_id} for i in lists]
    }


async def predict_for_project(
    app: Components, key: Principal, project_id: int, body: PredictRequest
) -> Payload:
    sessionmaker = app.get(async_sessionmaker)
    routes = await app.get(RoutingCache).routes(sessionmaker, project_id)
    slot = choose_slot(routes.slots, user_id=body.user_id, sticky=routes.sticky, salt=routes.salt)
    runtime = await app.get(RuntimeCache).recommender(sessionmaker, slot.model_id)
    items = await recommend_one(app.get(TritonGateway), runtime, body.user_id, body.cutoff)
    return {
        "items": items,
        "model_id": slot.model_id,
        "slot_id": slot.id,
        "slot_name": slot.name,
        "request_id": current_request_id(),
    }
