"""The three doors a load generator knocks on, each an async client in one process.

- REST: aiohttp with keep-alive connections and pre-serialised JSON bodies (httpx
  costs several times more client CPU per request and would bottleneck the client).
- Triton gRPC: `tritonclient.grpc.aio`, binary tensors, one HTTP/2 channel.
- Triton HTTP: `tritonclient.http.aio`, binary tensor extension for inputs and outputs.
Request objects are built once; `call()` only sends, awaits and checks the answer.
"""

from __future__ import annotations

import itertools
from typing import Any, Protocol

from conch_bench.targets import RestTarget, Target, TritonTarget


class DoorError(RuntimeError):
    """The peer answered, but not with success."""


class Door(Protocol):
    async def call(self) -> None:
        """One request; raises on any failure."""

    async def close(self) -> None: ...


class RestDoor:
    def __init__(self, target: RestTarget, concurrency: int) -> None:
        import aiohttp

        self._target = target
        self._bodies = itertools.cycle(target.bodies)
        self._keys = itertools.cycle(target.keys) if target.key_header and target.keys else None
        headers = {"Content-Type": "application/json", **target.headers}
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max(concurrency, 1), force_close=False),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=60),
        )

    async def call(self) -> None:
        headers = None if self._keys is None else {self._target.key_header: next(self._keys)}
        async with self._session.request(
            self._target.method, self._target.url, data=next(self._bodies), headers=headers
        ) as response:
            payload = await response.read()
            if response.status != self._target.expect_status:
                text = payload[:200].decode(errors="replace")
                raise DoorError(f"HTTP {response.status}: {text}")

    async def close(self) -> None:
        await self._session.close()


class GrpcDoor:
    def __init__(self, target: TritonTarget) -> None:
        import tritonclient.grpc as grpcclient
        import tritonclient.grpc.aio as grpcaio

        self._model = target.model
        self._client = grpcaio.InferenceServerClient(target.url)
        self._inputs = []
        for tensor in target.inputs:
            infer_input = grpcclient.InferInput(
                tensor.name, list(tensor.data.shape), tensor.datatype
            )
            infer_input.set_data_from_numpy(tensor.data)
            self._inputs.append(infer_input)
        self._outputs = [grpcclient.InferRequestedOutput(n) for n in target.outputs] or None

    async def call(self) -> None:
        await self._client.infer(self._model, self._inputs, outputs=self._outputs)

    async def close(self) -> None:
        await self._client.close()


class HttpDoor:
    def __init__(self, target: TritonTarget, concurrency: int) -> None:
        import tritonclient.http as httpclient
        import tritonclient.http.aio as httpaio

        self._model = target.model
        self._client = httpaio.InferenceServerClient(target.url, conn_limit=max(concurrency, 1))
        self._inputs = []
        for tensor in target.inputs:
            infer_input = httpclient.InferInput(
                tensor.name, list(tensor.data.shape), tensor.datatype
            )
            infer_input.set_data_from_numpy(tensor.data, binary_data=True)
            self._inputs.append(infer_input)
        # No outputs named: tritonclient then asks for every output as binary data.
        self._outputs: list[Any] | None = [
            httpclient.InferRequestedOutput(n, binary_data=True) for n in target.outputs
        ] or None

    async def call(self) -> None:
        await self._client.infer(self._model, self._inputs, outputs=self._outputs)

    async def close(self) -> None:
        await self._client.close()


def open_door(target: Target, concurrency: int) -> Door:
    """A client for the target; call inside the event loop that will use it."""
    if isinstance(target, RestTarget):
        return RestDoor(target, concurrency)
    if target.protocol == "grpc":
        return GrpcDoor(target)
    return HttpDoor(target, concurrency)
