"""A minimal pipelined Redis connection for the rate limiter's one call per request.

redis-py's asyncio client spends ~150 µs of CPU per round trip on this class of
machine (connection-pool checkout, command objects, retries). The limiter sends
one EVALSHA per request, so it gets a single long-lived connection instead:
commands are written as they come, replies are matched to callers in order
(Redis answers a connection's commands in order), and hiredis parses them.
Any failure closes the connection; the next call reconnects, and the limiter
falls back to its per-process window while Redis stays unreachable. Where the
connection goes (TCP, TLS, unix socket; AUTH, SELECT) is endpoint.py's part.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from control_plane.core.settings import default
from control_plane.ratelimit.endpoint import RedisEndpoint, encode_command

__all__ = ["PipelinedRedis", "encode_command"]


class PipelinedRedis:
    def __init__(
        self, endpoint: RedisEndpoint | str, *, timeout_s: float = default("redis_timeout_s")
    ) -> None:
        """`endpoint`: where to connect, or a redis://, rediss:// or unix:// URL."""
        if isinstance(endpoint, str):
            endpoint = RedisEndpoint.from_url(endpoint)
        self.endpoint = endpoint
        self._timeout = timeout_s
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: deque[asyncio.Future[Any]] = deque()
        self._connecting: asyncio.Lock | None = None

    @classmethod
    def like(
        cls, client: Redis, *, timeout_s: float = default("redis_timeout_s")
    ) -> PipelinedRedis:
        """A connection to the same server and database as a redis-py client."""
        return cls(RedisEndpoint.like(client), timeout_s=timeout_s)

    async def call(self, *args: str | int | bytes) -> Any:
        """Send one command and wait for its reply; Redis errors raise ResponseError."""
        writer = self._writer if self._writer is not None else await self._connect()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(future)
        writer.write(encode_command(*args))
        try:
            reply = await asyncio.wait_for(future, self._timeout)
        except TimeoutError:
            self._close(RedisTimeoutError("Redis did not answer in time"))
            raise RedisTimeoutError("Redis did not answer in time") from None
        if isinstance(reply, hiredis.ReplyError):
            raise ResponseError(str(reply))
        return reply

    async def _connect(self) -> asyncio.StreamWriter:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._writer is not None:
                return self._writer
            try:
                reader, writer = await asyncio.wait_for(self.endpoint.open(), self._timeout)
            except (OSError, TimeoutError) as exc:  # refused, TLS handshake failed, too slow
                raise RedisConnectionError(f"cannot connect to Redis: {exc}") from exc
            try:
                await self._set_up(reader, writer)
            except BaseException:
                writer.close()
                raise
            self._writer = writer
            self._reader_task = asyncio.create_task(self._read_replies(reader))
            return writer

    async def _set_up(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """AUTH / SELECT before any caller's command."""
        for command in await self.endpoint.setup_commands():
            writer.write(command)
            try:
                line = await asyncio.wait_for(reader.readline(), self._timeout)
            except (OSError, TimeoutError) as exc:
                raise RedisConnectionError(f"Redis connection setup failed: {exc}") from exc
            if not line.startswith(b"+"):
                raise RedisConnectionError(
                    f"Redis refused the connection setup: {line.decode().strip()}"
                )

    async def _read_replies(self, stream: asyncio.StreamReader) -> None:
        parser = hiredis.Reader()
        try:
            while True:
                chunk = await stream.read(65536)
                if not chunk:
                    raise RedisConnectionError("Redis closed the connection")
                parser.feed(chunk)
                while (reply := parser.gets()) is not False:
                    future = self._pending.popleft()
                    if not future.done():
                        future.set_result(reply)
        except (OSError, RedisConnectionError, IndexError) as exc:
            error = exc if isinstance(exc, RedisConnectionError) else RedisConnectionError(str(exc))
            self._close(error)

    def _close(self, error: Exception) -> None:
        """Fail every caller still waiting; the next call reconnects."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        task, self._reader_task = self._reader_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        while self._pending:
            future = self._pending.popleft()
            if not future.done():
                future.set_exception(error)

    async def aclose(self) -> None:
        task = self._reader_task
        self._close(RedisConnectionError("connection closed"))
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task
