"""Seed 002's streaming sessions: `/api/inference/stream/...`.

`POST /start` opens a stream on a model; `POST /{stream_id}/send` adds rows,
which go to Triton together once `buffer_size` of them wait or the oldest waited
`batch_timeout_ms`; `GET /{stream_id}/results` reads the results in sequence
order with a cursor; `DELETE /{stream_id}` flushes what is buffered and closes;
`/{stream_id}/ws` pushes results as they come (`stream_socket.py`). Any replica
answers any call: the session lives in Redis (`control_plane/jobs/streams.py`,
the rules in `jobs/stream_service.py`). A stream id is scoped to the key that
started it; an admin key of its project names the owner with `owner_key_id`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, WebSocket
from fastapi import Path as PathParam

from control_plane.core.components import ComponentsDep
from control_plane.core.openapi_errors import error_responses
from control_plane.core.types import MAX_ID
from control_plane.engine_api import stream_socket
from control_plane.jobs import stream_service
from control_plane.jobs.stream_schemas import (
    MAX_RESULTS_PER_READ,
    MAX_SEQUENCE_ID,
    STREAM_ID_PATTERN,
    StreamClosed,
    StreamResults,
    StreamSendRequest,
    StreamSent,
    StreamStarted,
    StreamStartRequest,
)
from control_plane.keys.deps import GuardedRoute, PredictAnyKey

router = APIRouter(
    prefix="/api/inference/stream", tags=["inference engine"], route_class=GuardedRoute
)

StreamId = Annotated[
    str, PathParam(pattern=STREAM_ID_PATTERN, description="as `POST /start` answered it")
]
OwnerKeyId = Annotated[
    int | None,
    Query(ge=1, le=MAX_ID, description="the key that started the stream (admins); default: yours"),
]


@router.post(
    "/start",
    status_code=201,
    response_model=StreamStarted,
    responses=error_responses(404, 409, 429, 503),
    summary="Open a streaming session on a model",
)
async def start_stream(
    app: ComponentsDep, key: PredictAnyKey, body: StreamStartRequest
) -> StreamStarted:
    return await stream_service.start(app, key, body)


@router.post(
    "/{stream_id}/send",
    status_code=202,
    response_model=StreamSent,
    responses=error_responses(400, 404, 409, 429, 503),
    summary="Add rows to a stream (409 for a sequence_id it already has, or once closed)",
)
async def send_to_stream(
    app: ComponentsDep,
    key: PredictAnyKey,
    stream_id: StreamId,
    body: StreamSendRequest,
    owner_key_id: OwnerKeyId = None,
) -> StreamSent:
    return await stream_service.send(app, key, stream_id, owner_key_id, body)


@router.get(
    "/{stream_id}/results",
    response_model=StreamResults,
    responses=error_responses(404, 503),
    summary="Results from `cursor` on, in sequence order; pass `next_cursor` to the next read",
)
async def stream_results(
    app: ComponentsDep,
    key: PredictAnyKey,
    stream_id: StreamId,
    cursor: Annotated[int, Query(ge=0, le=MAX_SEQUENCE_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_RESULTS_PER_READ)] = 100,
    owner_key_id: OwnerKeyId = None,
) -> StreamResults:
    return await stream_service.results(
        app, key, stream_id, owner_key_id, cursor=cursor, limit=limit
    )


@router.delete(
    "/{stream_id}",
    response_model=StreamClosed,
    responses=error_responses(404, 503),
    summary="Flush what is buffered, then close (results stay readable until the idle TTL)",
)
async def close_stream(
    app: ComponentsDep, key: PredictAnyKey, stream_id: StreamId, owner_key_id: OwnerKeyId = None
) -> StreamClosed:
    return await stream_service.close(app, key, stream_id, owner_key_id)


@router.websocket("/{stream_id}/ws")
async def stream_socket_route(websocket: WebSocket, stream_id: str) -> None:
    """Results pushed as produced; the key on the handshake or as the first message."""
    await stream_socket.serve(websocket, stream_id)
