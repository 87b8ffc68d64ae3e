"""The stream client: rows through one streaming session, and single-row predict calls
beside it with the same client at the same concurrency (stream_pass.py says why).

One process, one asyncio loop (uvloop when installed), aiohttp keep-alive
connections. Over HTTP, `senders` coroutines send on one stream at once, each
taking the next sequence ids from a shared counter; a reader reads
`GET .../results` with the cursor. Concurrent sends are accepted out of order,
and the server reads results contiguously over the ids it has accepted, so the
reader never reads past the first id not yet acknowledged (202): that way no
result is skipped. Over the WebSocket, one sender keeps up to `senders` sends
unanswered on the socket and the results come back pushed on it.

Every result is checked: sequence ids 0, 1, 2, ... each once, in order; one out
of place, or a result carrying an error, counts as an error.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from conch_bench.stats import RunSummary, WorkerResult, summarize

RESULT_WAIT_S = 30.0  # a socket silent this long has failed (not a bound on latency)
RETRY_S = 0.005  # a send answered 429 (the stream's pending rows at their bound) waits this
_MAX_MESSAGES = 5


@dataclass(frozen=True)
class StreamRun:
    base: str  # the control plane's URL
    key: str
    model_id: str
    rows: tuple[bytes, ...]  # one row's JSON each, cycled
    senders: int
    duration_s: float
    buffer_size: int = 64
    rows_per_send: int = 1
    batch_timeout_ms: int = 50


@dataclass
class _Seen:
    latencies: list[float]
    errors: int = 0
    messages: list[str] | None = None
    results: int = 0  # results read, each checked in order

    def error(self, message: str) -> None:
        self.errors += 1
        self.messages = self.messages or []
        if len(self.messages) < _MAX_MESSAGES:
            self.messages.append(message[:300])


class _Checker:
    """Results must come as sequence ids 0, 1, 2, ... each once."""

    def __init__(self, seen: _Seen) -> None:
        self.seen, self.next = seen, 0

    def take(self, result: dict[str, Any]) -> None:
        if result.get("sequence_id") != self.next:
            self.seen.error(f"result {result.get('sequence_id')} where {self.next} was due")
        if "error" in result and result["error"] is not None:
            self.seen.error(f"row {result.get('sequence_id')}: {result['error']}")
        self.next = int(result.get("sequence_id", self.next)) + 1
        self.seen.results += 1


def _loop_runner() -> asyncio.Runner:
    try:
        import uvloop

        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        return asyncio.Runner()


def _summary(
    label: str, run: StreamRun, seen: _Seen, window_s: float, cpu_s: float, batch: int
) -> RunSummary:
    result = WorkerResult(
        np.asarray(seen.latencies, np.float64), seen.errors, seen.messages or [], window_s, cpu_s
    )
    return summarize(label, [result], mode="closed", concurrency=run.senders, batch_size=batch)


def _data(run: StreamRun, count: int, offset: int) -> bytes:
    rows = (run.rows[(offset + i) % len(run.rows)] for i in range(count))
    return b"[" + b",".join(rows) + b"]"


def run_predict(run: StreamRun, label: str) -> RunSummary:
    """Single-row `POST /api/inference/predict`, `senders` at once, for the duration."""
    return _loop_runner().run(_predict(run, label))


async def _predict(run: StreamRun, label: str) -> RunSummary:
    import aiohttp

    seen = _Seen([])
    url = f"{run.base}/api/inference/predict"
    bodies = [
        b'{"model_id": "%s", "data": [%s]}' % (run.model_id.encode(), row) for row in run.rows
    ]
    headers = {"X-API-Key": run.key, "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=run.senders)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        cpu, start = time.process_time(), time.perf_counter()
        end = start + run.duration_s

        async def user(index: int) -> None:
            for body in itertools.islice(itertools.cycle(bodies), index, None):
                sent = time.perf_counter()
                if sent >= end:
                    return
                async with session.post(url, data=body) as response:
                    payload = await response.read()
                if response.status == 200:
                    seen.latencies.append(time.perf_counter() - sent)
                    seen.results += 1
                else:
                    seen.error(f"predict: HTTP {response.status}: {payload[:200]!r}")

        await asyncio.gather(*(user(i) for i in range(run.senders)))
        window, cpu = time.perf_counter() - start, time.process_time() - cpu
    return _summary(label, run, seen, window, cpu, 1)


def run_stream(run: StreamRun, label: str) -> tuple[RunSummary, int]:
    """Rows through one stream over HTTP: the sends' summary (rows/s = throughput x
    rows per send, the window ending when the last result was read) and the results
    read."""
    return _loop_runner().run(_stream(run, label))


async def _start(session: Any, run: StreamRun) -> str:
    body = {
        "model_id": run.model_id,
        "buffer_size": run.buffer_size,
        "batch_timeout_ms": run.batch_timeout_ms,
    }
    async with session.post(f"{run.base}/api/inference/stream/start", json=body) as response:
        payload = await response.read()
        if response.status != 201:
            raise RuntimeError(f"stream start: HTTP {response.status}: {payload[:200]!r}")
    stream_id: str = orjson.loads(payload)["stream_id"]
    return stream_id


class _Acks:
    """Sequence ids handed out and acknowledged: the prefix the reader may read to."""

    def __init__(self) -> None:
        self.allocated = 0
        self.prefix = 0
        self._acked: set[int] = set()
        self.advanced = asyncio.Event()

    def take(self, count: int) -> int:
        first, self.allocated = self.allocated, self.allocated + count
        return first

    def ack(self, first: int, count: int) -> None:
        self._acked.update(range(first, first + count))
        while self.prefix in self._acked:
            self._acked.discard(self.prefix)
            self.prefix += 1
        self.advanced.set()


async def _stream(run: StreamRun, label: str) -> tuple[RunSummary, int]:
    import aiohttp

    seen = _Seen([])
    headers = {"X-API-Key": run.key, "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=run.senders + 1)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        stream_id = await _start(session, run)
        url = f"{run.base}/api/inference/stream/{stream_id}"
        acks, checker = _Acks(), _Checker(seen)
        cpu, start = time.process_time(), time.perf_counter()
        end = start + run.duration_s

        async def sender() -> None:
            while time.perf_counter() < end:
                first = acks.take(run.rows_per_send)
                body = b'{"sequence_id": %d, "data": %s}' % (
                    first,
                    _data(run, run.rows_per_send, first),
                )
                sent = time.perf_counter()
                while True:
                    async with session.post(f"{url}/send", data=body) as response:
                        payload = await response.read()
                    if response.status not in (429, 503):
                        break
                    await asyncio.sleep(RETRY_S)  # backpressure: the buffer is at its bound
                if response.status != 202:  # the reader would wait for these ids forever
                    raise RuntimeError(f"send: HTTP {response.status}: {payload[:200]!r}")
                seen.latencies.append(time.perf_counter() - sent)
                acks.ack(first, run.rows_per_send)

        async def reader(senders: asyncio.Future[Any]) -> None:
            while not (senders.done() and checker.next >= acks.allocated):
                if senders.done() and senders.exception() is not None:
                    return
                if checker.next >= acks.prefix:
                    acks.advanced.clear()
                    await asyncio.wait([asyncio.ensure_future(acks.advanced.wait())], timeout=0.05)
                    continue
                limit = min(1000, acks.prefix - checker.next)
                params = {"cursor": checker.next, "limit": limit}
                async with session.get(f"{url}/results", params=params) as response:
                    answer = orjson.loads(await response.read())
                for result in answer["results"]:
                    checker.take(result)
                if not answer["results"]:
                    await asyncio.sleep(0.001)  # rows still buffered or being predicted

        senders = asyncio.gather(*(sender() for _ in range(run.senders)))
        read = asyncio.create_task(reader(senders))
        try:
            await senders
        finally:
            await session.delete(url)  # flushes the last, partial buffer
        await read
        window, cpu = time.perf_counter() - start, time.process_time() - cpu
    return _summary(label, run, seen, window, cpu, run.rows_per_send), seen.results


def run_socket(run: StreamRun, label: str) -> tuple[RunSummary, int]:
    """Rows through one stream's WebSocket, one row a message, `senders` unanswered."""
    return _loop_runner().run(_socket(run, label))


async def _socket(run: StreamRun, label: str) -> tuple[RunSummary, int]:
    import aiohttp

    seen = _Seen([])
    headers = {"X-API-Key": run.key}
    async with aiohttp.ClientSession(headers=headers) as session:
        stream_id = await _start(session, run)
        ws_url = f"{run.base.replace('http', 'ws', 1)}/api/inference/stream/{stream_id}/ws"
        checker = _Checker(seen)
        window = asyncio.Semaphore(run.senders)
        sent_at: dict[int, float] = {}
        async with session.ws_connect(ws_url) as socket:
            cpu, start = time.process_time(), time.perf_counter()
            end = start + run.duration_s
            total = 0

            async def send() -> None:
                nonlocal total
                while time.perf_counter() < end:
                    await window.acquire()
                    sent_at[total] = time.perf_counter()
                    data = _data(run, 1, total)
                    text = b'{"sequence_id": %d, "data": %s}' % (total, data)
                    await socket.send_str(text.decode())  # text frames: the protocol's
                    total += 1

            sending = asyncio.create_task(send())
            while not (sending.done() and checker.next >= total):
                try:
                    frame = await socket.receive(timeout=RESULT_WAIT_S)
                    message = orjson.loads(frame.data)
                except (TimeoutError, orjson.JSONDecodeError, TypeError) as exc:
                    seen.error(f"socket: no results ({type(exc).__name__}); closed {socket.closed}")
                    break
                if message["type"] == "sent":
                    seen.latencies.append(time.perf_counter() - sent_at.pop(message["sequence_id"]))
                    window.release()
                elif message["type"] == "result":
                    checker.take(message)
                else:
                    seen.error(f"socket: {message}")
                    window.release()
                if sending.done() and not seen.latencies:
                    break
            await sending
            window_s, cpu = time.perf_counter() - start, time.process_time() - cpu
        await session.delete(f"{run.base}/api/inference/stream/{stream_id}")
    return _summary(label, run, seen, window_s, cpu, 1), seen.results


def feature_rows(features: int, count: int = 64, seed: int = 0) -> tuple[bytes, ...]:
    matrix = np.random.default_rng(seed).standard_normal((count, features)).astype(np.float32)
    return tuple(orjson.dumps(row) for row in matrix.round(5).tolist())


def rows_per_s(summary: RunSummary) -> float:
    return summary.throughput_rps * summary.batch_size
