"""What the prediction endpoints do, apart from HTTP: one function per endpoint.

Both doors call these: the FastAPI routes (which document the endpoints in
/docs) and the prediction fast lane (`lane.py`), so the two cannot drift apart.
Each takes a caller already authorized for the model or project in the path
(`keys/access.py`) and a validated body, and returns the JSON payload as plain
dicts, rendered by orjson.
"""

from __future__ import annotations

from typing import Any

from control_plane.core.request_id import current_request_id
from control_plane.core.state import AppState
from control_plane.inference.schemas import BatchPredictRequest, PredictRequest
from control_plane.inference.service import recommend, recommend_one
from control_plane.keys.schemas import Principal
from control_plane.slots.selection import choose_slot

Payload = dict[str, Any]


async def predict_for_user(
    state: AppState, key: Principal, model_id: int, body: PredictRequest
) -> Payload:
    runtime = await state.runtimes.recommender(state.sessionmaker, model_id)
    items = await recommend_one(state.triton, runtime, body.user_id, body.cutoff)
    return {"items": items, "model_id": model_id, "request_id": current_request_id()}


async def predict_for_users(
    state: AppState, key: Principal, model_id: int, body: BatchPredictRequest
) -> Payload:
    runtime = await state.runtimes.recommender(state.sessionmaker, model_id)
    lists = await recommend(state.triton, runtime, body.user_ids, body.cutoff)
    request_id = current_request_id()
    return {
        "results": [{"items": i, "model_id": model_id, "request_id": request_id} for i in lists]
    }


async def predict_for_project(
    state: AppState, key: Principal, project_id: int, body: PredictRequest
) -> Payload:
    routes = await state.routing.routes(state.sessionmaker, project_id)
    slot = choose_slot(routes.slots, user_id=body.user_id, sticky=routes.sticky, salt=routes.salt)
    runtime = await state.runtimes.recommender(state.sessionmaker, slot.model_id)
    items = await recommend_one(state.triton, runtime, body.user_id, body.cutoff)
    return {
        "items": items,
        "model_id": slot.model_id,
        "slot_id": slot.id,
        "slot_name": slot.name,
        "request_id": current_request_id(),
    }
