"""The prediction endpoints, declared once; both doors are generated from `ENDPOINTS`.

Each entry names its method and path, body, access policy (`keys/deps.py`),
handler (`handlers.py`) and documentation. The prediction fast lane (`lane.py`)
compiles the table into its path patterns; `include_endpoints` builds the FastAPI
routes from it, which document the endpoints in /docs and serve them when
`CONCH_FAST_LANE=false`. A new endpoint or policy is written here and nowhere else.
Another door declares its own table of `Endpoint`s (seed 002's predictions:
`engine_api/predict_routes.py`) and the app hands the lane every table. An
endpoint that reads more of the request than its JSON body (a query parameter,
a header: seed 002's async door, `engine_api/async_routes.py`) declares `read`;
its FastAPI route is its door's own, and a test keeps the two answering alike.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel
from starlette.types import Scope

from control_plane.core.components import Components, ComponentsDep
from control_plane.core.openapi_errors import TRITON_ERRORS, error_responses
from control_plane.core.responses import OrjsonResponse
from control_plane.core.types import ModelIdPath, ProjectIdPath, RequestBody
from control_plane.inference.handlers import (
    Payload,
    predict_for_project,
    predict_for_rows,
    predict_for_user,
    predict_for_users,
)
from control_plane.inference.schemas import (
    BatchPredictRequest,
    BatchPredictResponse,
    PredictRequest,
    PredictResponse,
    ProjectPredictResponse,
    TabularPredictRequest,
    TabularPredictResponse,
)
from control_plane.keys.access import Policy
from control_plane.keys.deps import PREDICT_MODEL, PREDICT_PROJECT
from control_plane.keys.schemas import Principal

# (components, the admitted key, the id in the path or None, the validated body)
Handler = Callable[[Components, Principal, Any, Any], Awaitable[Payload]]
# (the request's ASGI scope, its body) -> the handler's last argument, in place of the
# validated body; raises RequestValidationError as FastAPI would for the same request.
Reader = Callable[[Scope, bytes], Any]

# The path parameter each resource is, as FastAPI validates it.
_PATH_TYPES: dict[str, Any] = {"model_id": ModelIdPath, "project_id": ProjectIdPath}


def _bad_request_and_triton() -> dict[int | str, dict[str, Any]]:
    return error_responses(400, *TRITON_ERRORS)


@dataclass(frozen=True, eq=False)
class Endpoint:
    name: str  # of the FastAPI route (its OpenAPI operationId starts with it)
    method: str
    # A template whose one parameter is the policy's resource; or, for a policy on
    # "any" (the model is named in the body, the handler checks it), no parameter.
    path: str
    body: type[RequestBody] | None  # None: no body (a GET)
    policy: Policy
    handler: Handler
    response_model: type[BaseModel]
    summary: str
    responses: dict[int | str, dict[str, Any]] = field(default_factory=_bad_request_and_triton)
    status_code: int = 200
    # A path parameter that is no policy's id (on "any"), as a regular expression: the
    # handler gets the text it matched (a task id) as its id.
    path_shape: str | None = None
    read: Reader | None = None  # what the handler gets besides the body, if anything

    def __post_init__(self) -> None:
        # The lane authorizes the id it finds in the path: it must be the policy's.
        expected = [] if self.policy.resource == "any" else [self.policy.resource]
        if self.path_shape is not None and self.policy.resource == "any":
            expected = re.findall(r"\{(\w+)\}", self.path)[:1]
        if re.findall(r"\{(\w+)\}", self.path) != expected:
            raise ValueError(
                f"{self.path} must name exactly {{{self.policy.resource}}}"
                if expected
                else f"{self.path} must name no path parameter (its policy is on 'any')"
            )

    def path_value(self, text: str) -> int | str:
        """The path parameter as the handler gets it."""
        return text if self.path_shape is not None else int(text)

    @property
    def path_resource(self) -> str | None:
        """The path parameter the policy authorizes, if the path has one."""
        return None if self.policy.resource == "any" else self.policy.resource


ENDPOINTS = (
    Endpoint(
        "predict",
        "POST",
        "/inference/predict/{model_id}",
        PredictRequest,
        PREDICT_MODEL,
        predict_for_user,
        PredictResponse,
        "Recommend items for one user",
    ),
    Endpoint(
        "predict_batch",
        "POST",
        "/inference/predict/{model_id}/batch",
        BatchPredictRequest,
        PREDICT_MODEL,
        predict_for_users,
        BatchPredictResponse,
        "Recommend items for several users",
    ),
    Endpoint(
        "predict_project",
        "POST",
        "/inference/predict/project/{project_id}",
        PredictRequest,
        PREDICT_PROJECT,
        predict_for_project,
        ProjectPredictResponse,
        "Recommend items for one user through a project's deployment slots",
    ),
    Endpoint(
        "predict_rows",
        "POST",
        "/api/v1/models/{model_id}/predict",
        TabularPredictRequest,
        PREDICT_MODEL,
        predict_for_rows,
        TabularPredictResponse,
        "Predict from feature vectors (tabular models and networks)",
    ),
)


def include_endpoints(router: APIRouter, endpoints: Sequence[Endpoint] = ENDPOINTS) -> None:
    """Adds to `router`, as FastAPI routes, the endpoints under its prefix."""
    for endpoint in endpoints:
        if endpoint.path.startswith(router.prefix + "/"):
            router.add_api_route(
                endpoint.path.removeprefix(router.prefix),
                _route_function(endpoint),
                methods=[endpoint.method],
                name=endpoint.name,
                summary=endpoint.summary,
                response_model=endpoint.response_model,
                responses=endpoint.responses,
            )


def _route_function(endpoint: Endpoint) -> Callable[..., Awaitable[OrjsonResponse]]:
    """An endpoint function whose signature tells FastAPI the path id, the body, the
    policy and the components, and which answers with the handler's payload."""
    handler, resource = endpoint.handler, endpoint.path_resource

    async def route(**arguments: Any) -> OrjsonResponse:
        principal, components = arguments["key"], arguments["components"]
        resource_id = None if resource is None else arguments[resource]
        return OrjsonResponse(await handler(components, principal, resource_id, arguments["body"]))

    parameter = inspect.Parameter.KEYWORD_ONLY
    path_parameters = (
        []
        if resource is None
        else [inspect.Parameter(resource, parameter, annotation=_PATH_TYPES[resource])]
    )
    route.__name__ = endpoint.name
    route.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            *path_parameters,
            inspect.Parameter("body", parameter, annotation=endpoint.body),
            inspect.Parameter(
                "key", parameter, annotation=Annotated[Principal, Depends(endpoint.policy)]
            ),
            inspect.Parameter("components", parameter, annotation=ComponentsDep),
        ],
        return_annotation=OrjsonResponse,
    )
    return route
