"""A real HTTP receiver for callbacks, a clock that sleeps instantly, and DNS answers.

The receiver is an HTTP/1.1 server on a local port (asyncio's own server, TLS when
given a context) answering each request with the next status of its script. DNS
answers are the one fake: a resolver cannot be made to return a chosen address
(a public one, or one that changed since the check) on demand.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import pytest


@dataclass(frozen=True)
class Received:
    request_line: str
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass
class Receiver:
    """Answers the i-th request with statuses[i] (the last one repeated)."""

    statuses: Sequence[int]
    headers: dict[str, str] = field(default_factory=dict)  # sent with every answer
    tls: ssl.SSLContext | None = None
    hang: bool = False  # read the request, never answer
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[Any]] = field(default_factory=set)

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        for handler in self._handlers:  # a hanging one, say
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            request_line = (await reader.readline()).decode("latin-1").strip()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.received.append(Received(request_line, headers, body))
            if self.hang:
                await asyncio.Event().wait()
            status = self.statuses[min(len(self.received), len(self.statuses)) - 1]
            content = b'{"receiver": "says something Conch must not store"}'
            extra = "".join(f"{name}: {value}\r\n" for name, value in self.headers.items())
            writer.write(
                f"HTTP/1.1 {status} Scripted\r\nContent-Length: {len(content)}\r\n"
                f"Content-Type: application/json\r\nConnection: close\r\n{extra}\r\n".encode()
                + content
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the client gave up (a timeout test) or refused our certificate
        finally:
            writer.close()
            self._handlers.discard(handler)


class FakeTime:
    """`clock` and `sleep` for deliver: sleeping advances the clock at once."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class Dns:
    """Answers the loop's getaddrinfo for the names given; any other name is resolved
    for real. An empty answer is a name that does not exist."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.answers: dict[str, list[str]] = {}
        self.asked: list[str] = []
        loop = asyncio.get_running_loop()
        real = loop.getaddrinfo

        async def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if host not in self.answers:
                return await real(host, port, *args, **kwargs)
            self.asked.append(host)
            if not self.answers[host]:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return [
                (
                    socket.AF_INET6 if ":" in a else socket.AF_INET,
                    socket.SOCK_STREAM,
                    6,
                    "",
                    (a, port),
                )
                for a in self.answers[host]
            ]

        monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
