"""Feature-vector predictions for tabular models and networks (seed 002's predict).

`POST /api/v1/models/{model_id}/predict` with `{"data": [[...], ...]}`: rows go
to Triton as one binary FP32 tensor (split by the model's max_batch_size); a
classifier answers class labels plus probabilities, a regressor its values, any
other model its raw output tensors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import async_sessionmaker

from control_plane.core.components import Components, ComponentsDep
from control_plane.core.errors import BadRequestError
from control_plane.core.openapi_errors import TRITON_ERRORS, error_responses
from control_plane.core.request_id import current_request_id
from control_plane.core.responses import OrjsonResponse
from control_plane.core.types import ModelIdPath, RequestBody
from control_plane.inference.runtime import RuntimeCache, TabularRuntime
from control_plane.keys.deps import GuardedRoute, PredictModelKey
from control_plane.keys.schemas import Principal
from control_plane.triton.client import TritonGateway

MAX_ROWS = 1000

router = APIRouter(prefix="/api/v1/models", tags=["inference"], route_class=GuardedRoute)


class TabularPredictRequest(RequestBody):
    data: list[list[float]] = Field(min_length=1, max_length=MAX_ROWS)


class TabularPredictResponse(BaseModel):
    predictions: list[Any]  # class labels (classifiers) or values (regressors)
    probabilities: list[list[float]] | None = None
    outputs: dict[str, list[Any]] | None = None  # other models: every output tensor
    model_id: int
    request_id: str


@router.post(
    "/{model_id}/predict",
    response_model=TabularPredictResponse,
    responses=error_responses(400, *TRITON_ERRORS),
)
async def predict_rows(
    model_id: ModelIdPath,
    body: TabularPredictRequest,
    key: PredictModelKey,
    components: ComponentsDep,
) -> OrjsonResponse:
    # With the fast lane on (the default) `lane.py` serves this path before FastAPI.
    return OrjsonResponse(await predict_for_rows(components, key, model_id, body))


async def predict_for_rows(
    components: Components, key: Principal, model_id: int, body: TabularPredictRequest
) -> dict[str, Any]:
    runtime = await components.get(RuntimeCache).tabular(
        components.get(async_sessionmaker), model_id
    )
    rows = _validated_rows(body.data, runtime)
    outputs = await components.get(TritonGateway).infer_rows(
        runtime.triton_name, runtime.input_name, rows, runtime.output_names, runtime.max_batch_size
    )
    payload: dict[str, Any] = {"model_id": model_id, "request_id": current_request_id()}
    if runtime.task == "classification" and "probabilities" in outputs:
        probabilities = outputs["probabilities"]
        winners = probabilities.argmax(axis=1).tolist()
        labels = runtime.class_labels
        payload["predictions"] = [labels[i] for i in winners] if labels else winners
        payload["probabilities"] = probabilities.tolist()
    elif runtime.task == "regression" and len(outputs) == 1:
        payload["predictions"] = next(iter(outputs.values())).reshape(len(rows)).tolist()
    else:
        payload["predictions"] = []
        payload["outputs"] = {name: array.tolist() for name, array in outputs.items()}
    return payload


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
