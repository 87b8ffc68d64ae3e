"""What the prediction endpoints do, apart from HTTP: one function per endpoint.

Both doors call these through the one endpoint table (`endpoints.py`): the
prediction fast lane (`lane.py`) and the FastAPI routes (which document the
endpoints in /docs). Each takes a caller already authorized for the model or
project in the path (`keys/access.py`) and a validated body, and returns the JSON
payload as plain dicts, rendered by orjson.

Tabular models and networks take feature vectors through the model core
(`model_core/predict.py`: validation, batching, decoding, statistics): a
classifier answers class labels (in the model's own type: 1, not "1") plus
probabilities, a regressor its values, any other model its raw output tensors.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker

from control_plane.core import metrics, tracing
from control_plane.core.components import Components
from control_plane.core.errors import BadRequestError
from control_plane.core.request_id import current_request_id
from control_plane.inference.schemas import (
    BatchPredictRequest,
    PredictRequest,
    TabularPredictRequest,
)
from control_plane.inference.service import recommend, recommend_one
from control_plane.keys.schemas import Principal
from control_plane.model_core.catalog import ModelCatalog
from control_plane.model_core.predict import predict
from control_plane.model_core.stats import InferenceStats
from control_plane.routing.cache import RoutingCache
from control_plane.routing.selection import choose_slot
from control_plane.triton.client import TritonGateway

Payload = dict[str, Any]


async def predict_for_user(
    app: Components, key: Principal, model_id: int, body: PredictRequest
) -> Payload:
    runtime = await app.get(ModelCatalog).get(app.get(async_sessionmaker), model_id)
    items = await recommend_one(
        app.get(TritonGateway), runtime, body.user_id, body.cutoff, app.find(InferenceStats)
    )
    return {"items": items, "model_id": model_id, "request_id": current_request_id()}


async def predict_for_users(
    app: Components, key: Principal, model_id: int, body: BatchPredictRequest
) -> Payload:
    runtime = await app.get(ModelCatalog).get(app.get(async_sessionmaker), model_id)
    lists = await recommend(
        app.get(TritonGateway), runtime, body.user_ids, body.cutoff, app.find(InferenceStats)
    )
    request_id = current_request_id()
    return {
        "results": [{"items": i, "model_id": model_id, "request_id": request_id} for i in lists]
    }


async def predict_for_project(
    app: Components, key: Principal, project_id: int, body: PredictRequest
) -> Payload:
    sessionmaker = app.get(async_sessionmaker)
    with tracing.span("conch.routing") as span:
        routes = await app.get(RoutingCache).routes(sessionmaker, project_id)
        slot = choose_slot(
            routes.slots, user_id=body.user_id, sticky=routes.sticky, salt=routes.salt
        )
        if span is not None:
            span.set_attributes({"conch.slot_id": slot.id, "conch.model_id": slot.model_id})
    metrics.count_slot_selection(project_id, slot.name)
    runtime = await app.get(ModelCatalog).get(sessionmaker, slot.model_id)
    items = await recommend_one(
        app.get(TritonGateway), runtime, body.user_id, body.cutoff, app.find(InferenceStats)
    )
    return {
        "items": items,
        "model_id": slot.model_id,
        "slot_id": slot.id,
        "slot_name": slot.name,
        "request_id": current_request_id(),
    }


async def predict_for_rows(
    app: Components, key: Principal, model_id: int, body: TabularPredictRequest
) -> Payload:
    handle = await app.get(ModelCatalog).get(app.get(async_sessionmaker), model_id)
    if handle.recommender is not None:
        raise BadRequestError(
            f"model {model_id} does not take feature rows; use /inference/predict/{model_id}",
            model_id=model_id,
            task=handle.task,
        )
    # This door always answered a classifier's probabilities.
    prediction = await predict(
        app.get(TritonGateway),
        handle,
        body.data,
        stats=app.get(InferenceStats),
        return_probabilities=True,
    )
    return {**prediction.payload, "model_id": model_id, "request_id": current_request_id()}
