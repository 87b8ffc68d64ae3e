"""A keep-alive HTTP/1.1 client to Triton's HTTP port, shared by its two users.

Predictions (`http_infer.py`) and the /v2 door's passthrough (`passthrough.py`)
both send a request they wrote as bytes and need back Triton's status, a few of
its headers and its body. This is that exchange, and nothing of either caller:
no request encoding, no error vocabulary. Failures come out as one
`TritonHttpFailure` whose `kind` says which (deadline, unreachable, unreadable),
so each caller maps them to its own errors in one place.

Connections are pooled: one serves one exchange at a time, goes back to the pool
when Triton's answer allows keep-alive, and is dropped after any error, timeout
or `Connection: close` (its state is then unknown). httptools (uvicorn's C
parser) reads the answers, chunked or not.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import httptools

from control_plane.core.request_id import current_request_id

logger = logging.getLogger(__name__)

Headers = list[tuple[bytes, bytes]]
FailureKind = Literal["deadline", "unreachable", "unreadable"]


class TritonHttpFailure(Exception):
    """No complete answer came back. The message is fit for a caller: it never
    names where Triton listens (that goes to the log)."""

    def __init__(self, kind: FailureKind, message: str) -> None:
        super().__init__(message)
        self.kind: FailureKind = kind


@dataclass(slots=True)
class HttpAnswer:
    status: int = 0
    headers: Headers = field(default_factory=list)  # only those asked for, names lower-case
    body: bytes = b""

    def header(self, name: bytes) -> bytes | None:
        """The first value of `name` (lower-case), if it was asked for and sent."""
        for header_name, value in self.headers:
            if header_name == name:
                return value
        return None


class _Reader:
    """httptools callbacks: status, the wanted headers, the body, keep-alive."""

    def __init__(self, wanted_headers: frozenset[bytes]) -> None:
        # The parser refers to its reader: `feed` drops it once the answer is read, so
        # that a Triton call leaves no reference cycle for the garbage collector.
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.wanted_headers = wanted_headers
        self.answer = HttpAnswer()
        self.chunks: list[bytes] = []
        self.complete = False
        self.keep_alive = False

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered in self.wanted_headers:
            self.answer.headers.append((lowered, value))

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def feed(self, chunk: bytes) -> None:
        assert self.parser is not None, "the answer was read already"
        try:
            self.parser.feed_data(chunk)
        finally:
            if self.complete:
                self.parser = None

    def close(self) -> None:
        self.parser = None

    def on_message_complete(self) -> None:
        assert self.parser is not None
        self.complete = True
        # Only readable inside the callback: the parser resets once the message ends.
        self.keep_alive = self.parser.should_keep_alive()
        self.answer.status = self.parser.get_status_code()


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def close(self) -> None:
        self.writer.close()


class TritonHttpPool:
    """Pooled connections to one Triton's HTTP port. The inference client and the
    passthrough are each one of these plus the requests they write."""

    def __init__(self, url: str, *, timeout_s: float, max_idle: int = 64) -> None:
        """`url` is Triton's HTTP host:port (`http://` optional); `timeout_s` is the
        deadline of an exchange that names none."""
        host, _, port = url.removeprefix("http://").rstrip("/").rpartition(":")
        self._host = host or "127.0.0.1"
        self._port = int(port)
        self.timeout_s = timeout_s
        self._max_idle = max_idle
        self._idle: deque[_Connection] = deque()

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    async def exchange(
        self,
        request: bytes,
        *,
        wanted_headers: frozenset[bytes] = frozenset(),
        timeout_s: float | None = None,
    ) -> HttpAnswer:
        """Send `request` (a whole HTTP/1.1 request, Host header included) and read
        Triton's answer within `timeout_s` (None: the pool's), keeping the
        `wanted_headers` (lower-case names). Any status is an answer; no complete
        answer is a `TritonHttpFailure`."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            async with asyncio.timeout(timeout):
                return await self._exchange(request, wanted_headers)
        except TimeoutError:
            raise TritonHttpFailure(
                "deadline", f"Triton did not answer within {timeout:.1f}s"
            ) from None
        except OSError as exc:
            # Where Triton listens is for the operator's log, not for the caller.
            logger.warning(
                "Triton HTTP at %s:%s unreachable for %s: %s [request %s]",
                self._host, self._port, _request_line(request), exc, current_request_id(),
            )  # fmt: skip
            raise TritonHttpFailure("unreachable", "Triton's HTTP endpoint is unreachable") from exc
        except httptools.HttpParserError as exc:
            raise TritonHttpFailure("unreadable", f"unreadable answer from Triton: {exc}") from exc

    async def _exchange(self, request: bytes, wanted_headers: frozenset[bytes]) -> HttpAnswer:
        if self._idle:
            try:
                return await self._exchange_on(self._idle.pop(), request, wanted_headers)
            except OSError:
                pass  # Triton may have closed an idle connection (or restarted): once more
        reader, writer = await asyncio.open_connection(self._host, self._port)
        return await self._exchange_on(_Connection(reader, writer), request, wanted_headers)

    async def _exchange_on(
        self, connection: _Connection, request: bytes, wanted_headers: frozenset[bytes]
    ) -> HttpAnswer:
        response = _Reader(wanted_headers)
        try:
            connection.writer.write(request)
            while not response.complete:
                chunk = await connection.reader.read(65536)
                if not chunk:
                    raise ConnectionResetError("Triton closed the connection")
                response.feed(chunk)
        except BaseException:
            response.close()
            connection.close()  # its state is unknown: never reuse it
            raise
        if response.keep_alive and len(self._idle) < self._max_idle:
            self._idle.append(connection)
        else:
            connection.close()
        response.answer.body = b"".join(response.chunks)
        return response.answer

    async def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


def _request_line(request: bytes) -> str:
    """`POST /v2/models/m/infer`: which call failed, for the log."""
    return request[: request.find(b" HTTP/1.1")].decode(errors="replace")
