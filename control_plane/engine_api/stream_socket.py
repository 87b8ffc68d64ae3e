"""`/api/inference/stream/{stream_id}/ws`: a stream's results pushed as they are produced.

Connect with the key in `X-API-Key` or `Authorization: Bearer` on the handshake.
A browser cannot set headers: it sends `{"api_key": "..."}` as its first text
message instead, within `stream_ws_auth_timeout_s`. (Never in the URL: URLs are
logged.) Query parameters: `cursor` (the first sequence id to push, default 0)
and `owner_key_id` (an admin reading another key's stream).

The handshake is always accepted, so that every refusal is a close code:
4401 no valid key (or none in time; revoked or expired while connected), 4403
the key lacks the predict scope, 4429 over the key's rate limit, 4404 an unknown
stream or another key's (the same answer: no probing), 4400 a malformed query
parameter, 4410 the stream expired while connected, 1013 Redis unavailable
(retry), 1000 the stream was closed and every result was pushed.

Server -> client, JSON text: `{"type": "result", ...}` for each result (the items
of `GET .../results`), in sequence order, each once; `{"type": "sent", ...}`
answering a client's send; `{"type": "error", "error": <error body>}` for a
send refused (the socket stays open). Client -> server, after authenticating:
`{"data": ..., "sequence_id": n}` sends rows exactly as `POST .../send` does
(its checks, bounds and rate limit).

Results are read from Redis whenever the stream's Pub/Sub channel says some were
stored (and every `_IDLE_READ_S` besides, which notices expiry), exactly as `GET
.../results` reads them with an advancing cursor: none is pushed twice, whichever
replica stored it (and, as there, send sequence ids in increasing order).

The key is held for as long as the socket is open (`keys/watch.py`): revoked on
any replica, the socket closes with 4401 at once, and nothing is sent on it from
the moment the event arrives; at its `expires_at`, the same. Sends are admitted
one by one besides, as requests are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from datetime import datetime
from typing import Any

import orjson
import pydantic
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import async_sessionmaker
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from control_plane.core.components import Components
from control_plane.core.errors import (
    AuthenticationError,
    ConchError,
    RateLimitExceededError,
    error_body,
)
from control_plane.core.errors import ValidationError as InvalidRequestError
from control_plane.core.settings import Settings
from control_plane.db.base import utcnow
from control_plane.jobs import stream_service
from control_plane.jobs.stream_schemas import STREAM_ID_PATTERN, StreamSendRequest
from control_plane.keys.access import presented_key
from control_plane.keys.deps import PREDICT_ANY
from control_plane.keys.schemas import Principal
from control_plane.keys.verifier import KeyVerifier
from control_plane.keys.watch import Held, KeyWatch

logger = logging.getLogger(__name__)

_IDLE_READ_S = 1.0
_PUSH_BATCH = 500
_CLOSE_CODES = {401: 4401, 403: 4403, 404: 4404, 429: 4429, 503: 1013}
_MAX_REASON = 120  # bytes: a close frame's reason is at most 123
# What sending to a client that already left raises (uvicorn's ClientDisconnected is
# an OSError; Starlette refuses a send after the close with a RuntimeError).
_CLIENT_GONE = (OSError, RuntimeError, WebSocketDisconnect)


class _Refused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _close_code(exc: ConchError) -> int:
    return _CLOSE_CODES.get(exc.status_code, 1011)


class _Socket:
    """One connection: its sends serialised (results and answers come from two tasks)."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.ending = False  # the loops check it: a cancel can be lost in the Redis client
        self._lock = asyncio.Lock()
        self.held: Held | None = None
        self.expires_at: datetime | None = None
        self.refused: tuple[int, str] | None = None  # the key failed to verify again

    def key_gone(self) -> tuple[int, str] | None:
        """The close code once the key was revoked or expired while connected."""
        if self.refused is not None:
            return self.refused
        if self.held is not None and self.held.revoked.is_set():
            return 4401, "API key revoked"
        if self.expires_at is not None and self.expires_at <= utcnow():
            return 4401, "API key expired"
        return None

    async def send(self, message: dict[str, Any]) -> None:
        async with self._lock:
            if self.key_gone() is None:  # nothing goes out once the key has
                await self.websocket.send_text(orjson.dumps(message).decode())

    async def receive(self) -> str | None:
        """The next text message; None once the client has gone."""
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return None
            if message.get("text") is not None:
                return str(message["text"])

    async def close(self, code: int, reason: str) -> None:
        if self.websocket.application_state == WebSocketState.DISCONNECTED:
            return
        reason = reason.encode()[:_MAX_REASON].decode(errors="ignore")
        with contextlib.suppress(*_CLIENT_GONE):  # the client left first: nothing to tell
            await self.websocket.close(code, reason)


async def _admit(components: Components, token: str | None) -> Principal:
    """The key, checked as `GuardedRoute` checks a request's (401, 429, 403)."""
    principal, limit_check = await PREDICT_ANY.admit(components, token)
    if limit_check is not None:
        limited = await limit_check
        if not limited.allowed:
            raise RateLimitExceededError(
                "rate limit exceeded", headers=limited.headers(), limit=limited.limit
            )
    await PREDICT_ANY.authorize(components, principal, None)
    return principal


async def _presented(socket: _Socket, timeout_s: float) -> str | None:
    """The key of the handshake's headers, else of the first message."""
    token = presented_key(socket.websocket.headers)
    if token is not None:
        return token
    try:
        text = await asyncio.wait_for(socket.receive(), timeout_s)
    except TimeoutError:
        raise _Refused(4401, 'no API key: send {"api_key": "..."} first') from None
    try:
        message = orjson.loads(text or "")
    except orjson.JSONDecodeError:
        message = None
    if not isinstance(message, dict) or not isinstance(message.get("api_key"), str):
        raise _Refused(4401, 'the first message must be {"api_key": "..."}')
    return str(message["api_key"])


def _int_parameter(socket: _Socket, name: str) -> int | None:
    value = socket.websocket.query_params.get(name)
    if value is None:
        return None
    if not value.isdigit() or len(value) > 15:
        raise _Refused(4400, f"{name} must be a non-negative integer")
    return int(value)


async def serve(websocket: WebSocket, stream_id: str) -> None:
    components: Components = websocket.app.state.components
    socket = _Socket(websocket)
    await websocket.accept()
    try:
        if not re.fullmatch(STREAM_ID_PATTERN, stream_id):
            raise stream_service.stream_not_found(stream_id)  # no such stream can exist
        cursor = _int_parameter(socket, "cursor") or 0
        owner_key_id = _int_parameter(socket, "owner_key_id")
        timeout_s = components.get(Settings).stream_ws_auth_timeout_s
        token = await _presented(socket, timeout_s)
        principal = await _admit(components, token)
        session = await stream_service.visible_stream(
            components, principal, stream_id, owner_key_id
        )
    except _Refused as refused:
        await socket.close(refused.code, refused.reason)
        return
    except ConchError as exc:
        await socket.close(_close_code(exc), exc.message)
        return
    except RedisError:
        await socket.close(1013, "Redis is unavailable; reconnect shortly")
        return
    with components.get(KeyWatch).hold(principal.key_id) as held:
        socket.held, socket.expires_at = held, principal.expires_at
        await _run(socket, components, token, session, cursor)


async def _run(
    socket: _Socket, components: Components, token: str | None, session: dict[str, str], cursor: int
) -> None:
    stream_id = session["stream_id"]
    key = asyncio.create_task(_watch_key(socket, components, token))
    sends = asyncio.create_task(_receive_sends(socket, components, token, session))
    pushes = asyncio.create_task(_push_results(socket, components, session, cursor))
    tasks = (key, pushes, sends)  # the first done of these, in this order, says why
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    socket.ending = True
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    finished = next(task for task in tasks if task in done)
    gone = socket.key_gone()
    if gone is not None:
        await socket.close(*gone)
        return
    if finished.cancelled():
        return
    failure = finished.exception()
    if isinstance(failure, _CLIENT_GONE):
        return
    if failure is not None:
        logger.error("stream socket %s failed", stream_id, exc_info=failure)
        await socket.close(1011, "internal error")
        return
    ending = finished.result()
    if ending is not None:  # None: the client went away
        await socket.close(*ending)


async def _watch_key(socket: _Socket, components: Components, token: str | None) -> tuple[int, str]:
    """Returns once the key is revoked (the event), expires, or fails to verify again
    after the event bus missed events: the close code."""
    held = socket.held
    assert held is not None  # serve() holds the key first
    while True:
        gone = socket.key_gone()
        if gone is not None:
            return gone
        until: float | None = None
        if socket.expires_at is not None:
            until = max((socket.expires_at - utcnow()).total_seconds(), 0.0)
        waits = [asyncio.create_task(held.revoked.wait()), asyncio.create_task(held.recheck.wait())]
        try:
            await asyncio.wait(waits, timeout=until, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        if held.recheck.is_set() and not held.revoked.is_set():
            held.recheck.clear()
            try:
                await components.get(KeyVerifier).verify(components.get(async_sessionmaker), token)
            except AuthenticationError as exc:
                socket.refused = (4401, exc.message)  # nothing more is sent from here
                return socket.refused


async def _push_results(
    socket: _Socket, components: Components, session: dict[str, str], cursor: int
) -> tuple[int, str]:
    """Pushes results until the stream is closed and done (or expires): the close code."""
    store = stream_service.store_of(components)
    pubsub, channel = store.subscribe_target(session)
    try:
        async with pubsub:
            # Subscribed before the first read: a result stored in between is not missed.
            await pubsub.subscribe(channel)
            while not socket.ending:
                read = await store.read(session, cursor, _PUSH_BATCH, touch=False)
                if read is None:
                    return 4410, "stream expired"
                for result in read.results:
                    if socket.key_gone() is not None:
                        return 4401, "API key revoked"  # serve() closes with the exact reason
                    await socket.send({"type": "result", **result})
                if read.results:
                    cursor = read.results[-1]["sequence_id"] + 1
                    if len(read.results) == _PUSH_BATCH:
                        continue
                if read.closed and read.pending == 0:
                    return 1000, "stream closed"
                if await pubsub.get_message(ignore_subscribe_messages=True, timeout=_IDLE_READ_S):
                    while await pubsub.get_message(ignore_subscribe_messages=True, timeout=0):
                        pass  # one read answers every notification so far
    except RedisError:
        return 1013, "Redis is unavailable; reconnect shortly"
    return 1001, "going away"


async def _receive_sends(
    socket: _Socket, components: Components, token: str | None, session: dict[str, str]
) -> tuple[int, str] | None:
    """Client messages as sends, until the client goes (None) or its key fails (the
    close code)."""
    while True:
        text = await socket.receive()
        if text is None:
            return None
        try:
            # Each send is admitted as a request is: a revoked key stops here.
            await _admit(components, token)
            body = StreamSendRequest.model_validate_json(text)
            sent = await stream_service.send_to(components, session, body)
        except pydantic.ValidationError as exc:
            errors = [{"loc": e["loc"], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
            invalid = InvalidRequestError("invalid send message", errors=errors)
            await socket.send({"type": "error", "error": error_body(invalid)})
        except ConchError as exc:
            if exc.status_code in (401, 403):
                return _close_code(exc), exc.message
            await socket.send({"type": "error", "error": error_body(exc)})
        else:
            await socket.send({"type": "sent", **sent.model_dump(mode="json")})
