"""Streaming sessions for the doors: start, send, read results, close.

- `start` checks the key may see the model (404 as for an unknown one). The
  stream id is the caller's (`^[A-Za-z0-9_.-]{1,100}$`), scoped to its key:
  another key's stream of the same id is another stream. Omitted, one is
  generated. A key's own id that is still kept (open, or closed and not yet
  expired) is a 409; beyond `stream_max_per_key` open streams, a 429; a
  buffer_size above `stream_max_pending_rows` (it could never fill), a 400.
- `send` takes one row (a list of feature values, or a record keyed by feature
  names; a lone value is a row of one) or a list of rows, the rows numbered
  consecutively from `sequence_id`. The rows are checked against the model's
  inputs at once (400 naming the feature, as `predict`); a sequence id the
  stream already has is a 409, and so is any send once the stream is closed;
  beyond `stream_max_pending_rows` rows buffered or being predicted, a 429 (a
  send of more rows than that, a 400: it could never be taken).
- `results` answers the results from `cursor` on in sequence order, contiguous:
  it stops before the first accepted sequence id still without a result, so the
  order holds whatever order batches finish in. `next_cursor` is one past the
  last answered (the caller passes it to the next read; nothing comes twice).
  Send sequence ids in increasing order: a row whose id lies below a cursor
  already passed is not read again at that cursor. A stream keeps its newest
  `stream_max_results` results: a reader that far behind skips the dropped ones
  (whose ids a send may then use again).
- `close` (DELETE) closes the stream to sends, flushes what is buffered and
  answers once its rows (and any still in flight) have results; results stay
  readable until the idle TTL. Closing again answers the same.

A stream is visible to its owner key and to admin keys of the owner's project
(or of none): an admin names the owner with `owner_key_id`. To any other key it
reads as unknown (404).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import async_sessionmaker

from control_plane.core.components import Components
from control_plane.core.errors import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    RateLimitExceededError,
    ServiceUnavailableError,
    retry_after,
)
from control_plane.jobs.stream_flush import StreamFlusher
from control_plane.jobs.stream_schemas import (
    MAX_SEQUENCE_ID,
    StreamClosed,
    StreamResults,
    StreamSendRequest,
    StreamSent,
    StreamStarted,
    StreamStartRequest,
)
from control_plane.jobs.streams import StreamStore, new_stream_id, stream_sid
from control_plane.keys.access import visible_model
from control_plane.keys.schemas import Principal
from control_plane.model_core.catalog import ModelCatalog
from control_plane.model_core.inputs import MAX_ROWS, input_tensors

_KEY_FULL_RETRY_S = 5  # a key at its stream bound: another of its streams may expire
_PENDING_FULL_RETRY_S = 1  # a stream at its pending bound: a flush frees it soon
_CLOSE_POLL_S = 0.02


def store_of(components: Components) -> StreamStore:
    store = components.find(StreamStore)
    if store is None:
        raise ServiceUnavailableError("streaming sessions need Redis (REDIS_URL)")
    return store


@contextmanager
def redis_answers() -> Iterator[None]:
    """Redis failing mid-request is a 503 to retry, never a 500."""
    try:
        yield
    except RedisError as exc:
        raise ServiceUnavailableError("Redis is unavailable; retry shortly") from exc


def stream_not_found(stream_id: str) -> NotFoundError:
    # One answer for an unknown, expired or another key's stream.
    return NotFoundError(f"stream {stream_id[:100]!r} not found", stream_id=stream_id[:100])


async def start(components: Components, key: Principal, body: StreamStartRequest) -> StreamStarted:
    store = store_of(components)
    handle = await visible_model(components, key, str(body.model_id))
    if body.buffer_size > store.max_pending:
        raise BadRequestError(
            f"buffer_size {body.buffer_size} is above the {store.max_pending} rows a stream "
            "may have pending (CONCH_STREAM_MAX_PENDING_ROWS)",
            buffer_size=body.buffer_size,
            limit=store.max_pending,
        )
    stream_id = body.stream_id or new_stream_id()
    fields = {
        "project_id": "" if key.project_id is None else str(key.project_id),
        "model_ref": str(body.model_id),
        "model_id": str(handle.model_id),
        "buffer_size": str(body.buffer_size),
        "batch_timeout_ms": str(body.batch_timeout_ms),
        "return_probabilities": "1" if body.return_probabilities else "0",
    }
    with redis_answers():
        outcome, created_at = await store.start(key.key_id, stream_id, fields)
    if outcome == "exists":
        raise ConflictError(
            f"stream {stream_id!r} exists (open, or closed and not yet expired)",
            stream_id=stream_id,
        )
    if outcome == "key_full":
        raise RateLimitExceededError(
            f"this API key already has {store.max_per_key} open streams",
            retry_after(_KEY_FULL_RETRY_S),
            limit=store.max_per_key,
        )
    return StreamStarted(
        stream_id=stream_id,
        model_id=body.model_id,
        resolved_model_id=handle.model_id,
        owner_key_id=key.key_id,
        buffer_size=body.buffer_size,
        batch_timeout_ms=body.batch_timeout_ms,
        idle_ttl_s=store.idle_ttl_s,
        created_at=created_at,
    )


def _may_see(key: Principal, session: Mapping[str, str]) -> bool:
    """The key that started it, or an admin key of its project (or of none)."""
    if str(key.key_id) == session.get("key_id"):
        return True
    if "admin" not in key.scopes:
        return False
    return key.project_id is None or str(key.project_id) == session.get("project_id")


async def visible_stream(
    components: Components, key: Principal, stream_id: str, owner_key_id: int | None
) -> dict[str, str]:
    owner = key.key_id if owner_key_id is None else owner_key_id
    with redis_answers():
        session = await store_of(components).get(stream_sid(owner, stream_id))
    if session is None or not _may_see(key, session):
        raise stream_not_found(stream_id)
    return session


def stream_rows(data: object) -> list[Any]:
    """A send's `data` as rows: a list of rows (lists or records), else one row."""
    if isinstance(data, list):
        if not data:
            raise BadRequestError("data holds no rows")
        if all(isinstance(row, list | dict) for row in data):
            return data
        return [data]
    if isinstance(data, dict):
        return [data]
    return [[data]]


async def send(
    components: Components,
    key: Principal,
    stream_id: str,
    owner_key_id: int | None,
    body: StreamSendRequest,
) -> StreamSent:
    session = await visible_stream(components, key, stream_id, owner_key_id)
    return await send_to(components, session, body)


async def send_to(
    components: Components, session: Mapping[str, str], body: StreamSendRequest
) -> StreamSent:
    """`send`, to a session already found visible (a WebSocket's, once per connection;
    one expired and started again since reads as gone)."""
    store = store_of(components)
    stream_id = session["stream_id"]
    rows = stream_rows(body.data)
    last = body.sequence_id + len(rows) - 1
    if last > MAX_SEQUENCE_ID:
        raise BadRequestError(
            f"sequence ids end at {MAX_SEQUENCE_ID}; these rows would reach {last}",
            sequence_id=body.sequence_id,
            rows=len(rows),
        )
    if len(rows) > store.max_pending:  # never accepted: a 429 would be retried forever
        raise BadRequestError(
            f"{len(rows)} rows in one send; a stream may have {store.max_pending} pending",
            rows=len(rows),
            limit=store.max_pending,
        )
    catalog = components.get(ModelCatalog)
    handle = await catalog.get(components.get(async_sessionmaker), int(session["model_id"]))
    try:
        input_tensors(handle, rows, max_rows=MAX_ROWS)  # 400 now, not a failed result later
    except BadRequestError as exc:
        if isinstance(exc.details.get("row"), int):
            exc.details["sequence_id"] = body.sequence_id + exc.details["row"]
        raise
    with redis_answers():
        sent = await store.send(session, body.sequence_id, rows)
    if sent.outcome == "gone":
        raise stream_not_found(stream_id)
    if sent.outcome == "closed":
        raise ConflictError(f"stream {stream_id!r} is closed", stream_id=stream_id)
    if sent.outcome == "duplicate":
        raise ConflictError(
            f"sequence_id {sent.detail} was already sent on stream {stream_id!r}",
            stream_id=stream_id,
            sequence_id=sent.detail,
        )
    if sent.outcome == "full":
        raise RateLimitExceededError(
            f"stream {stream_id!r} has {sent.pending} rows pending; at most "
            f"{store.max_pending} may be",
            retry_after(_PENDING_FULL_RETRY_S),
            limit=store.max_pending,
            pending=sent.pending,
        )
    flusher = components.get(StreamFlusher)
    if sent.batch is not None:
        flusher.launch(sent.batch, session)
    else:
        flusher.wake()  # rows wait in the buffer: the flusher learns when they fall due
    return StreamSent(
        stream_id=stream_id,
        sequence_id=body.sequence_id,
        rows=len(rows),
        pending=sent.pending,
        flushed=sent.batch is not None,
    )


async def results(
    components: Components,
    key: Principal,
    stream_id: str,
    owner_key_id: int | None,
    *,
    cursor: int,
    limit: int,
) -> StreamResults:
    session = await visible_stream(components, key, stream_id, owner_key_id)
    with redis_answers():
        read = await store_of(components).read(session, cursor, limit, touch=True)
    if read is None:
        raise stream_not_found(stream_id)
    next_cursor = read.results[-1]["sequence_id"] + 1 if read.results else cursor
    return StreamResults(
        stream_id=stream_id,
        results=read.results,  # type: ignore[arg-type]
        next_cursor=next_cursor,
        pending=read.pending,
        closed=read.closed,
    )


async def close(
    components: Components, key: Principal, stream_id: str, owner_key_id: int | None
) -> StreamClosed:
    store = store_of(components)
    session = await visible_stream(components, key, stream_id, owner_key_id)
    with redis_answers():
        outcome, batch = await store.close(session)
    if outcome == "gone":
        raise stream_not_found(stream_id)
    flushed = 0
    if batch is not None:
        flushed = len(batch.rows)
        await components.get(StreamFlusher).launch(batch, session)
    # Rows other replicas are still predicting: wait for them, as long as a claim.
    deadline = time.monotonic() + store.claim_after_s
    while True:
        with redis_answers():
            read = await store.read(session, 0, 0, touch=False)
        pending = 0 if read is None else read.pending
        if pending == 0 or time.monotonic() >= deadline:
            break
        await asyncio.sleep(_CLOSE_POLL_S)
    return StreamClosed(stream_id=stream_id, closed=True, flushed=flushed, pending=pending)
