"""What the prediction endpoints do, apart from HTTP: one function per endpoint.

Both doors call these through the one endpoint table (`endpoints.py`): the
prediction fast lane (`lane.py`) and the FastAPI routes (which document the
endpoints in /docs). Each takes a caller already authorized for the model or
project in the path (`keys/access.py`) and a validated body, and returns the JSON
payload as plain dicts, rendered by orjson.

Tabular models and networks (seed 002's predict) take feature vectors: rows go to
Triton as one binary FP32 tensor (split by the model's max_batch_size); a
classifier answers class labels (in the model's own type: 1, not "1") plus
probabilities, a regressor its values, any other model its raw output tensors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy.ext.asyncio import async_sessionmaker

from control_plane.core.components import Components
from control_plane.core.errors import BadRequestError
from control_plane.core.request_id import current_request_id
from control_plane.inference.runtime import RuntimeCache, TabularRuntime
from control_plane.inference.schemas import (
    BatchPredictRequest,
    PredictRequest,
    TabularPredictRequest,
)
from control_plane.inference.service import recommend, recommend_one
from control_plane.keys.schemas import Principal
from control_plane.routing.cache import RoutingCache
from control_plane.routing.selection import choose_slot
from control_plane.triton.client import TritonGateway

Payload = dict[str, Any]
PROBABILITIES = "probabilities"  # the tabular exporters' classifier output


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


async def predict_for_rows(
    app: Components, key: Principal, model_id: int, body: TabularPredictRequest
) -> Payload:
    runtime = await app.get(RuntimeCache).tabular(app.get(async_sessionmaker), model_id)
    rows = _validated_rows(body.data, runtime)
    outputs = await app.get(TritonGateway).infer_rows(
        runtime.triton_name, runtime.input_name, rows, runtime.output_names, runtime.max_batch_size
    )
    payload: Payload = {"model_id": model_id, "request_id": current_request_id()}
    scores_name = _class_scores_output(runtime, outputs)
    if scores_name is not None:
        scores = outputs[scores_name]
        winners = scores.argmax(axis=1).tolist()
        labels = runtime.class_labels
        payload["predictions"] = [labels[i] for i in winners] if labels else winners
        if scores_name == PROBABILITIES:
            payload["probabilities"] = scores.tolist()
        else:  # a network's scores need not be probabilities: answered under their own name
            payload["outputs"] = {name: array.tolist() for name, array in outputs.items()}
    elif runtime.task == "regression" and len(outputs) == 1:
        payload["predictions"] = next(iter(outputs.values())).reshape(len(rows)).tolist()
    else:
        payload["predictions"] = []
        payload["outputs"] = {name: array.tolist() for name, array in outputs.items()}
    return payload


def _class_scores_output(
    runtime: TabularRuntime, outputs: dict[str, npt.NDArray[Any]]
) -> str | None:
    """The output whose columns are the classes: `probabilities` (tabular exporters), else
    a network's first output (exporters/torch_exporter.py labels OUTPUT__0)."""
    if runtime.task != "classification" or not runtime.output_names:
        return None
    name = PROBABILITIES if PROBABILITIES in outputs else runtime.output_names[0]
    scores = outputs.get(name)
    labels = runtime.class_labels
    if scores is None or scores.ndim != 2 or (labels and scores.shape[1] != len(labels)):
        return None  # not a class-per-column matrix: answered as raw outputs
    return name


def _validated_rows(data: list[list[float]], runtime: TabularRuntime) -> npt.NDArray[np.float32]:
    widths = {len(row) for row in data}
    if widths != {runtime.n_features}:
        raise BadRequestError(
            f"every row must have {runtime.n_features} features",
            expected_features=runtime.n_features,
            found=sorted(widths),
        )
    rows = np.asarray(data, dtype=np.float32)
    if not np.isfinite(rows).all():
        raise BadRequestError("features must be finite numbers (no NaN or infinity)")
    return rows
