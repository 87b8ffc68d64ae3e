"""Seed 002's predictions: `POST /api/inference/predict`, `/batch` and `/multi-batch`.

A thin door: the model is named in the body (`model_id`: a Conch id, registered
name or Triton name), found through the catalog, checked against the key's
project (`keys/access.py`: another project's model is a 404 worded as for an
unknown one) and predicted by the model core, which validates the data, calls
Triton and decodes the answer. The endpoints are declared once, in `ENDPOINTS`
(the table format of `inference/endpoints.py`): the prediction fast lane serves
them and the FastAPI routes generated from the same table document them.

- `timeout_ms` is the Triton deadline of the request (504 when missed);
  `priority` is Triton's priority level; `batch_size` caps the rows of each
  Triton request (below the model's own max_batch_size).
- multi-batch runs its items concurrently, each answered `success` or `failed`
  (with the error body); a failed item never fails the others; items not done
  within `batch_timeout_ms` fail with a 504 body and are cancelled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter

from control_plane.core.components import Components
from control_plane.core.errors import BadRequestError, TritonTimeoutError, error_body
from control_plane.core.openapi_errors import TRITON_ERRORS, error_responses
from control_plane.core.request_id import current_request_id
from control_plane.engine_api.schemas import (
    BatchInferenceRequest,
    BatchInferenceResponse,
    InferenceRequest,
    InferenceResponse,
    MultiBatchItem,
    MultiBatchResponse,
)
from control_plane.inference.endpoints import Endpoint, include_endpoints
from control_plane.keys.access import Policy, visible_model
from control_plane.keys.deps import GuardedRoute
from control_plane.keys.schemas import Principal
from control_plane.model_core.admission import PriorityGate
from control_plane.model_core.handle import ModelHandle
from control_plane.model_core.outputs import Payload
from control_plane.model_core.predict import Prediction, predict
from control_plane.model_core.stats import InferenceStats
from control_plane.triton.client import TritonGateway

# The model is named in the body: the handler checks the key may see it (404 if not).
PREDICT_NAMED_MODEL = Policy("predict", "any")
_NAMED_MODEL_ERRORS = error_responses(400, 404, *TRITON_ERRORS)


def _named_model(ref: object) -> str:
    """seed 002's `model_id` as the reference `visible_model` resolves."""
    if ref is None:
        raise BadRequestError(
            "model_id is required: the model's Conch id, registered name or Triton name"
        )
    if isinstance(ref, bool) or not isinstance(ref, str | int):
        raise BadRequestError("model_id must be a string or an integer", model_id=repr(ref)[:40])
    return str(ref)


async def _predict(
    components: Components,
    key: Principal,
    model_ref: object,
    data: object,
    *,
    return_probabilities: bool,
    batch_size: int,
    timeout_s: float,
    priority: str,
) -> tuple[ModelHandle, Prediction]:
    """Find the named model the key may see (404 if not) and predict `data` with it."""
    handle = await visible_model(components, key, _named_model(model_ref))
    prediction = await predict(
        components.get(TritonGateway),
        handle,
        data,
        priority=priority,
        timeout_s=timeout_s,
        stats=components.get(InferenceStats),
        return_probabilities=return_probabilities,
        batch_size=batch_size,
        gate=components.find(PriorityGate),
    )
    return handle, prediction


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


async def _predict_request(
    components: Components,
    key: Principal,
    body: InferenceRequest,
    timings: Callable[[Prediction], Payload],
) -> Payload:
    """predict and predict/batch: the same request and answer, but for their timing fields.

    `timings` gives those fields from the prediction; they sit between the model
    ids and the request id, in the order seed 002 lists them.
    """
    handle, prediction = await _predict(
        components,
        key,
        body.model_id,
        body.data,
        return_probabilities=body.return_probabilities,
        batch_size=body.batch_size,
        timeout_s=body.timeout_ms / 1000,
        priority=body.priority,
    )
    return {
        **prediction.payload,
        "model_id": body.model_id,
        "resolved_model_id": handle.model_id,
        **timings(prediction),
        "request_id": current_request_id(),
        "timestamp": _now(),
    }


def _one_timing(prediction: Prediction) -> Payload:
    return {"inference_time": prediction.seconds}


def _batch_timings(prediction: Prediction) -> Payload:
    return {
        "batch_size": prediction.rows,
        "total_inference_time": prediction.seconds,
        "average_inference_time": prediction.seconds / prediction.rows,
    }


async def predict_one(
    components: Components, key: Principal, _: None, body: InferenceRequest
) -> Payload:
    return await _predict_request(components, key, body, _one_timing)


async def predict_batch(
    components: Components, key: Principal, _: None, body: InferenceRequest
) -> Payload:
    return await _predict_request(components, key, body, _batch_timings)


async def predict_multi_batch(
    components: Components, key: Principal, _: None, body: BatchInferenceRequest
) -> Payload:
    started = time.perf_counter()
    batch_id = current_request_id()
    timeout_s = body.batch_timeout_ms / 1000

    async def run(item: MultiBatchItem) -> Payload:
        handle, prediction = await _predict(
            components,
            key,
            item.model_id,
            item.data,
            return_probabilities=item.return_probabilities,
            batch_size=item.batch_size,
            timeout_s=timeout_s,  # one deadline for all: Triton drops what the batch gave up
            priority=body.priority,
        )
        return {
            **prediction.payload,
            "resolved_model_id": handle.model_id,
            "inference_time": prediction.seconds,
        }

    tasks = [asyncio.ensure_future(run(item)) for item in body.requests]
    _done, late = await asyncio.wait(tasks, timeout=timeout_s)
    for straggler in late:
        straggler.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)  # every task settled, none left running
    results = []
    for index, (item, task) in enumerate(zip(body.requests, tasks, strict=True)):
        answer: Payload = {
            "request_id": item.request_id if item.request_id is not None else f"{batch_id}-{index}",
            "model_id": item.model_id,
        }
        error = _failure(task, body.batch_timeout_ms)
        if error is None:
            answer.update(task.result(), status="success")
        else:
            answer.update(status="failed", error=error)
        results.append(answer)
    failed = sum(1 for result in results if result["status"] == "failed")
    return {
        "results": results,
        "batch_id": batch_id,
        "total_requests": len(results),
        "successful_requests": len(results) - failed,
        "failed_requests": failed,
        "total_time": time.perf_counter() - started,
    }


def _failure(task: asyncio.Task[Payload], batch_timeout_ms: int) -> dict[str, Any] | None:
    """The error body of a failed item (None if it succeeded), as the API answers errors."""
    if task.cancelled():
        exc: BaseException = TritonTimeoutError(
            f"not done within batch_timeout_ms ({batch_timeout_ms} ms)",
            batch_timeout_ms=batch_timeout_ms,
        )
    else:
        found = task.exception()
        if found is None:
            return None
        exc = found
    return error_body(exc)


ENDPOINTS = (
    Endpoint(
        "engine_predict",
        "POST",
        "/api/inference/predict",
        InferenceRequest,
        PREDICT_NAMED_MODEL,
        predict_one,
        InferenceResponse,
        "Predict with any model (seed 002)",
        _NAMED_MODEL_ERRORS,
    ),
    Endpoint(
        "engine_predict_batch",
        "POST",
        "/api/inference/predict/batch",
        InferenceRequest,
        PREDICT_NAMED_MODEL,
        predict_batch,
        BatchInferenceResponse,
        "Predict many rows, split into Triton requests of batch_size rows (seed 002)",
        _NAMED_MODEL_ERRORS,
    ),
    Endpoint(
        "engine_predict_multi_batch",
        "POST",
        "/api/inference/predict/multi-batch",
        BatchInferenceRequest,
        PREDICT_NAMED_MODEL,
        predict_multi_batch,
        MultiBatchResponse,
        "Several predictions, of several models, run concurrently (seed 002)",
        _NAMED_MODEL_ERRORS,
    ),
)

router = APIRouter(prefix="/api/inference", tags=["inference engine"], route_class=GuardedRoute)
include_endpoints(router, ENDPOINTS)
