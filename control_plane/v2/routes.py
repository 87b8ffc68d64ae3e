"""/v2/...: the Open Inference Protocol (KServe v2) over REST, as Triton serves it.

`tritonclient.http.InferenceServerClient("conch-host:port")` with
`headers={"X-API-Key": key}` (or `Authorization: Bearer <key>`) works against
Conch unchanged: server and model metadata, readiness, model config and
inference with JSON or binary tensors, classification included.

Policies: the health endpoints are public (probes carry no key, and they say
no more than whether Triton answers); server metadata, model metadata, model
readiness and config need the `read` scope; inference needs `predict`. Keys,
rate limits, request ids and the error body are Conch's, as on every route
(`keys/deps.py`, `core/errors.py`). A model outside the key's project is 404.

Bodies pass through untouched (`triton/passthrough.py`); model-scoped calls go
through `service.call_model` (resolution, visibility, on-demand loading).
"""

from __future__ import annotations

import importlib.metadata
import re
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Request, Response

from control_plane.core.components import Components, ComponentsDep
from control_plane.core.errors import TritonError, TritonUnavailableError
from control_plane.core.openapi_errors import TRITON_ERRORS, error_responses
from control_plane.inference.lane import PassthroughEndpoint
from control_plane.keys.access import visible_model
from control_plane.keys.deps import PREDICT_ANY, GuardedRoute, PredictAnyKey, Public, ReadAnyKey
from control_plane.keys.schemas import Principal
from control_plane.model_core.handle import ModelHandle
from control_plane.triton.http_pool import Headers
from control_plane.triton.passthrough import TritonAnswer, forwarded_headers
from control_plane.v2.schemas import (
    InferenceResponse,
    Liveness,
    ModelConfig,
    ModelMetadata,
    Readiness,
    ServerMetadata,
)
from control_plane.v2.service import call_model, passthrough_of

router = APIRouter(prefix="/v2", tags=["open inference protocol"], route_class=GuardedRoute)

# The extensions a caller can use through this door: they live in the request and
# response bodies, which pass through. (Triton's repository, statistics, shared
# memory, trace and logging extensions are Conch's to drive, not the caller's.)
PASSED_EXTENSIONS = frozenset(
    ("binary_tensor_data", "classification", "model_configuration", "parameters", "schedule_policy")
)
CONCH_VERSION = importlib.metadata.version("conch")

ModelName = Annotated[
    str,
    Path(
        min_length=1,
        max_length=256,
        description="the model's Triton name, its registered name (newest) or its Conch id",
    ),
]
Version = Annotated[str, Path(pattern=r"^[1-9][0-9]{0,18}$", description="Triton model version")]

_MODEL_ERRORS = error_responses(400, 404, *TRITON_ERRORS)
_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    **error_responses(400, 404, 413, *TRITON_ERRORS),
    200: {
        "description": "Triton's answer: JSON, or with binary outputs a JSON header of "
        "`Inference-Header-Content-Length` bytes followed by the tensors' bytes",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
}


def _passed_on(answer: TritonAnswer) -> Response:
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in answer.headers}
    return Response(answer.body, status_code=answer.status, headers=headers)


@router.get(
    "",
    response_model=ServerMetadata,
    responses=error_responses(*TRITON_ERRORS),
    summary="Server metadata",
)
async def server_metadata(app: ComponentsDep, _: ReadAnyKey) -> ServerMetadata:
    answer = await passthrough_of(app).forward("GET", "/v2")
    if not answer.ok:
        raise TritonError(f"Triton server metadata failed: {answer.reason()}")
    try:
        extensions = orjson.loads(answer.body).get("extensions", [])
    except (orjson.JSONDecodeError, AttributeError):
        raise TritonError("unreadable server metadata from Triton") from None
    passed = sorted(PASSED_EXTENSIONS.intersection(map(str, extensions)))
    return ServerMetadata(name="conch", version=CONCH_VERSION, extensions=passed)


@router.get(
    "/health/live",
    response_model=Liveness,
    responses=error_responses(503),
    dependencies=[Public],
    summary="Live: Triton answers",
)
async def live(app: ComponentsDep) -> Liveness:
    if not (await passthrough_of(app).forward("GET", "/v2/health/live")).ok:
        raise TritonUnavailableError("Triton is not live")
    return Liveness(live=True)


@router.get(
    "/health/ready",
    response_model=Readiness,
    responses=error_responses(503),
    dependencies=[Public],
    summary="Ready: Triton serves inference",
)
async def ready(app: ComponentsDep) -> Readiness:
    if not (await passthrough_of(app).forward("GET", "/v2/health/ready")).ok:
        raise TritonUnavailableError("Triton is not ready")
    return Readiness(ready=True)


# --- one model: each operation with and without an explicit version ---------------


@router.get("/models/{name}", response_model=ModelMetadata, responses=_MODEL_ERRORS)
async def model_metadata(app: ComponentsDep, key: ReadAnyKey, name: ModelName) -> Response:
    """Triton's metadata of the model: its versions, platform and tensors."""
    return _passed_on(await _get(app, key, name, None, ""))


@router.get(
    "/models/{name}/versions/{version}", response_model=ModelMetadata, responses=_MODEL_ERRORS
)
async def model_version_metadata(
    app: ComponentsDep, key: ReadAnyKey, name: ModelName, version: Version
) -> Response:
    return _passed_on(await _get(app, key, name, version, ""))


@router.get("/models/{name}/ready", response_model=Readiness, responses=_MODEL_ERRORS)
async def model_ready(app: ComponentsDep, key: ReadAnyKey, name: ModelName) -> Readiness:
    """200 once the model is loaded; a cold model is loaded (503 + Retry-After meanwhile)."""
    await _get(app, key, name, None, "/ready")
    return Readiness(ready=True)


@router.get(
    "/models/{name}/versions/{version}/ready", response_model=Readiness, responses=_MODEL_ERRORS
)
async def model_version_ready(
    app: ComponentsDep, key: ReadAnyKey, name: ModelName, version: Version
) -> Readiness:
    await _get(app, key, name, version, "/ready")
    return Readiness(ready=True)


@router.get("/models/{name}/config", response_model=ModelConfig, responses=_MODEL_ERRORS)
async def model_config(app: ComponentsDep, key: ReadAnyKey, name: ModelName) -> Response:
    """The config Triton serves the model with (Triton's JSON form of config.pbtxt)."""
    return _passed_on(await _get(app, key, name, None, "/config"))


@router.get(
    "/models/{name}/versions/{version}/config",
    response_model=ModelConfig,
    responses=_MODEL_ERRORS,
)
async def model_version_config(
    app: ComponentsDep, key: ReadAnyKey, name: ModelName, version: Version
) -> Response:
    return _passed_on(await _get(app, key, name, version, "/config"))


@router.post("/models/{name}/infer", response_model=InferenceResponse, responses=_INFER_RESPONSES)
async def infer(
    app: ComponentsDep, key: PredictAnyKey, name: ModelName, request: Request
) -> Response:
    """The v2 inference request as Triton takes it: JSON, or a JSON header of
    `Inference-Header-Content-Length` bytes followed by binary tensors."""
    return await _infer(app, key, name, None, request)


@router.post(
    "/models/{name}/versions/{version}/infer",
    response_model=InferenceResponse,
    responses=_INFER_RESPONSES,
)
async def infer_version(
    app: ComponentsDep, key: PredictAnyKey, name: ModelName, version: Version, request: Request
) -> Response:
    return await _infer(app, key, name, version, request)


async def _get(
    app: Components, key: Principal, name: str, version: str | None, suffix: str
) -> TritonAnswer:
    return await call_model(app, await visible_model(app, key, name), name, version, suffix)


async def _infer(
    app: Components, key: Principal, name: str, version: str | None, request: Request
) -> Response:
    handle = await visible_model(app, key, name)
    # Read only now, after the key, its limit and the model's visibility; BodyLimit
    # caps it (413). Held whole: the request is sent again if Triton lost the model.
    body = await request.body()
    return _passed_on(await _infer_on(app, handle, name, version, request.scope["headers"], body))


async def _lane_infer(
    app: Components,
    key: Principal,
    path_args: tuple[str | None, ...],
    headers: Headers,
    body: bytes,
) -> TritonAnswer:
    name, version = path_args
    assert name is not None
    return await _infer_on(app, await visible_model(app, key, name), name, version, headers, body)


async def _infer_on(
    app: Components,
    handle: ModelHandle,
    name: str,
    version: str | None,
    headers: Headers,
    body: bytes,
) -> TritonAnswer:
    forwarded = forwarded_headers(headers)
    return await call_model(
        app, handle, name, version, "/infer", method="POST", headers=forwarded, body=body
    )


# Inference served by the fast lane (`inference/lane.py`): the routes above answer
# the same requests when `CONCH_FAST_LANE=false`, and document them. The name as the
# route takes it (1-256 characters, no slash); anything else goes to FastAPI.
LANE_ENDPOINTS = (
    PassthroughEndpoint(
        "POST",
        re.compile(r"/v2/models/([^/]{1,256})(?:/versions/([1-9][0-9]{0,18}))?/infer"),
        PREDICT_ANY,
        _lane_infer,
        route="/v2/models/{name}/infer",
    ),
)
