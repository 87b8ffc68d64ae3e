"""One long-lived async gRPC client to this replica's Triton: load, unload, infer, inspect.

The model lifecycle (control_plane/lifecycle) installs itself as `loader`, so every
inference path, whichever route calls `infer`, goes through its single-flight loads,
backoff, LRU bookkeeping and pinning: it is the only code that decides to load. A
gateway without a loader (a tool's) infers on whatever Triton has loaded, and a
model Triton does not have is Triton's own error.

Failures keep Triton's own reason and map to 502 (Triton refused), 503 (Triton
unreachable) or 504 (deadline), so callers can tell a bad model from a down server.

Inference goes over Triton's HTTP endpoint with binary tensors when its address
is known (`http_infer.py`: less than half the CPU per call of grpc.aio, measured
with `conch bench calls`), else over gRPC with raw tensor bytes. Either way a
request may carry Triton's priority level (`conch_manifest/priorities.py`; 0 is
the model's default) and a deadline of its own; the defaults add nothing to a call.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from conch_manifest.priorities import DEFAULT_PRIORITY_LEVEL
from control_plane.core import metrics, tracing
from control_plane.core.errors import TritonTimeoutError, TritonUnavailableError
from control_plane.core.settings import default
from control_plane.triton.coalesce import CallSlots, RowCoalescer
from control_plane.triton.errors import is_not_loaded, load_error, short_reason, triton_error
from control_plane.triton.http_infer import TritonHttpInference
from control_plane.triton.tensors import datatype, elements_as_bytes


def _as_dict(answer: Message) -> dict[str, Any]:
    """A Triton answer as tritonclient's `as_json=True` gives it (protobuf's JSON
    mapping: 64-bit integers as strings), without its JSON round trip: that one
    indents, which takes the json module's pure-Python encoder, whose closures are a
    reference cycle left for the collector at every reconciliation pass."""
    as_dict: dict[str, Any] = MessageToDict(answer, preserving_proto_field_name=True)
    return as_dict


class TritonGateway:
    def __init__(
        self,
        url: str,
        *,
        timeout_s: float,
        load_timeout_s: float,
        coalesce_in_flight: int = 0,
        http_url: str | None = None,
        liveness_timeout_s: float = default("triton_liveness_timeout_s"),
        unload_wait_s: float = default("triton_unload_wait_s"),
        unload_poll_s: float = default("triton_unload_poll_s"),
        probe_concurrency: int = default("triton_probe_concurrency"),
    ) -> None:
        """`url` is Triton's gRPC address; with `http_url` inference uses HTTP instead."""
        self.client = InferenceServerClient(url=url)
        self._http = TritonHttpInference(http_url, timeout_s=timeout_s) if http_url else None
        self.timeout_s = timeout_s
        self.load_timeout_s = load_timeout_s
        self.liveness_timeout_s = liveness_timeout_s
        # Triton's unload returns before the model is gone: the index is polled every
        # `unload_poll_s`, and a model still there after `unload_wait_s` is a 504.
        self.unload_wait_s = unload_wait_s
        self._unload_poll_s = unload_poll_s
        # Readiness probes in flight at once when the repository index cannot be read.
        self._probe_concurrency = probe_concurrency
        # Set by the model lifecycle: called before every inference with the model name.
        self.loader: Callable[[str], Awaitable[None]] | None = None
        # Set by the lifecycle: Triton said the model is gone, so it must not count as ready.
        self.on_not_loaded: Callable[[str], None] | None = None
        # Requests inside Triton per model: eviction never unloads a model in use.
        self.in_flight: Counter[str] = Counter()
        # Names loaded through this gateway: what to probe when Triton refuses its
        # repository index. Never read to decide whether a model is loaded.
        self._loaded_here: set[str] = set()
        # Row requests merged per (model, input, outputs, max batch, priority): requests
        # of different priorities never share a Triton request. 0 sends each one alone.
        self._coalesce_in_flight = coalesce_in_flight
        self._coalescers: dict[tuple[str, str, tuple[str, ...], int, int], RowCoalescer] = {}
        self._call_slots: dict[str, CallSlots] = {}  # per model: its coalescers share them

    async def close(self) -> None:
        await self.client.close()
        if self._http is not None:
            await self._http.close()

    async def is_live(self) -> bool:
        try:
            return bool(await self.client.is_server_live(client_timeout=self.liveness_timeout_s))
        except InferenceServerException:
            return False

    async def ready_models(self) -> list[str]:
        index = await self.repository_index()
        return [name for name, model in index.items() if model["state"] == "READY"]

    async def repository_index(self, names: Iterable[str] = ()) -> dict[str, dict[str, str]]:
        """name -> {"state", "reason"} for every model in the repository.

        One bad entry makes Triton refuse the whole index (a broken symlink fails its
        stat). Then the answer covers `names` and the models loaded through this
        gateway, each from its own readiness: one bad entry must not blind the rest.
        """
        try:
            index = _as_dict(
                await self.client.get_model_repository_index(
                    as_json=False, client_timeout=self.timeout_s
                )
            )
        except InferenceServerException as exc:
            error = triton_error(exc, "repository index")
            if isinstance(error, TritonUnavailableError | TritonTimeoutError):
                raise error from exc
            return await self._readiness({*names, *self._loaded_here})
        return {
            m["name"]: {
                "state": m.get("state", "UNAVAILABLE"),
                "reason": short_reason(m.get("reason", "")),
            }
            for m in index.get("models", [])
        }

    async def _readiness(self, names: Iterable[str]) -> dict[str, dict[str, str]]:
        probes = asyncio.Semaphore(self._probe_concurrency)

        async def probe(name: str) -> tuple[str, dict[str, str]]:
            async with probes:
                try:
                    ready = await self.client.is_model_ready(name, client_timeout=self.timeout_s)
                except InferenceServerException as exc:
                    error = triton_error(exc, "model readiness")
                    if isinstance(error, TritonUnavailableError | TritonTimeoutError):
                        raise error from exc
                    ready = False
            return name, {"state": "READY" if ready else "UNAVAILABLE", "reason": ""}

        return dict(await asyncio.gather(*(probe(name) for name in sorted(names))))

    async def load(
        self, name: str, timeout_s: float | None = None, *, config: str | None = None
    ) -> None:
        """Triton's explicit load over gRPC, with a deadline; Triton's reason on failure.

        `config` (the whole model config as JSON text, e.g. `model_config`'s answer
        changed) replaces config.pbtxt for this load: batching is retuned without
        touching the repository. Triton keeps serving an override until the model's
        files change: a plain load does not undo it, a load with
        `config=model_config.config_override(<config.pbtxt text>)` does. Fields
        Triton filled in (such as `preferred_batch_size`) must stay consistent. A load
        with the config Triton already serves changes nothing (not even a reload).
        """
        try:
            await self.client.load_model(
                name, config=config, client_timeout=timeout_s or self.load_timeout_s
            )
        except InferenceServerException as exc:
            raise load_error(exc, name) from exc
        self._loaded_here.add(name)

    async def unload(self, name: str, wait_s: float | None = None) -> None:
        """Unload and wait (`wait_s`, else `unload_wait_s`) until the repository index
        no longer shows the model in use."""
        wait_s = self.unload_wait_s if wait_s is None else wait_s
        try:
            await self.client.unload_model(name, client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise triton_error(exc, "model unload") from exc
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            state = (await self.repository_index([name])).get(name, {}).get("state")
            if state not in ("READY", "UNLOADING", "LOADING"):
                return
            await asyncio.sleep(self._unload_poll_s)
        raise TritonTimeoutError(f"model {name!r} still unloading after {wait_s:.0f}s")

    async def statistics(self, name: str) -> dict[str, Any]:
        try:
            stats = _as_dict(
                await self.client.get_inference_statistics(
                    name, as_json=False, client_timeout=self.timeout_s
                )
            )
        except InferenceServerException as exc:
            raise triton_error(exc, "statistics") from exc
        return stats

    async def server_metadata(self) -> dict[str, Any]:
        try:
            meta = _as_dict(
                await self.client.get_server_metadata(as_json=False, client_timeout=self.timeout_s)
            )
        except InferenceServerException as exc:
            raise triton_error(exc, "server metadata") from exc
        return meta

    async def model_config(self, name: str) -> dict[str, Any]:
        """The config Triton serves `name` with, as protobuf's JSON (so 64-bit integers,
        such as `max_queue_delay_microseconds`, are strings); `load(config=...)` takes
        it back, changed."""
        try:
            answer = _as_dict(
                await self.client.get_model_config(
                    name, as_json=False, client_timeout=self.timeout_s
                )
            )
        except InferenceServerException as exc:
            raise triton_error(exc, "model config") from exc
        config: dict[str, Any] = answer.get("config", {})
        return config

    async def model_metadata(self, name: str) -> dict[str, Any]:
        """Triton's metadata of `name`: versions, platform, and its tensors' names,
        datatypes and shapes (as integers, -1 for a variable dimension)."""
        try:
            metadata = _as_dict(
                await self.client.get_model_metadata(
                    name, as_json=False, client_timeout=self.timeout_s
                )
            )
        except InferenceServerException as exc:
            raise triton_error(exc, "model metadata") from exc
        for tensor in (*metadata.get("inputs", ()), *metadata.get("outputs", ())):
            tensor["shape"] = [int(dim) for dim in tensor.get("shape", ())]
        return metadata

    async def infer(
        self,
        name: str,
        inputs: dict[str, npt.NDArray[np.generic]],
        outputs: Sequence[str],
        *,
        priority: int = 0,
        timeout_s: float | None = None,
    ) -> dict[str, npt.NDArray[np.generic]]:
        """One Triton request, after the loader (when set) has the model loaded.

        `priority` is Triton's level (1 first; 0 the model's default), `timeout_s`
        this request's deadline (None: the gateway's `timeout_s`); missed, it is 504.
        """
        loader = self.loader
        if loader is not None:
            await loader(name)
        try:
            return await self._infer_counted(name, inputs, outputs, priority, timeout_s)
        except InferenceServerException as exc:
            if loader is None or not is_not_loaded(exc):
                raise triton_error(exc, "inference") from exc
        # Unloaded behind the loader's back (another process, a restart): it forgets
        # the model, loads it once more, and the request is sent again.
        if self.on_not_loaded is not None:
            self.on_not_loaded(name)
        await loader(name)
        try:
            return await self._infer_counted(name, inputs, outputs, priority, timeout_s)
        except InferenceServerException as exc:
            raise triton_error(exc, "inference") from exc

    async def infer_rows(
        self,
        name: str,
        input_name: str,
        rows: npt.NDArray[np.generic],
        outputs: Sequence[str],
        max_batch_size: int,
        *,
        priority: int = 0,
        timeout_s: float | None = None,
    ) -> dict[str, npt.NDArray[np.generic]]:
        """Rows in requests no larger than the model accepts, outputs joined again.

        Triton refuses a request above the model's max_batch_size; 0 means the model
        takes no batch axis, so each row is a request of its own. `priority` and
        `timeout_s` are `infer`'s, for every request the rows go out in.
        """
        size = max_batch_size or 1
        chunks = [rows[start : start + size] for start in range(0, len(rows), size)]
        coalescer = self._coalescer(name, input_name, tuple(outputs), max_batch_size, priority)
        if coalescer is not None:
            requests = [coalescer.submit(chunk, timeout_s) for chunk in chunks]
        else:
            requests = [
                self.infer(
                    name, {input_name: chunk}, outputs, priority=priority, timeout_s=timeout_s
                )
                for chunk in chunks
            ]
        # One chunk (the common case) is awaited directly: gather would add a task.
        results = [await requests[0]] if len(requests) == 1 else await asyncio.gather(*requests)
        if len(results) == 1:
            return results[0]
        return {o: np.concatenate([result[o] for result in results]) for o in outputs}

    def _coalescer(
        self,
        name: str,
        input_name: str,
        outputs: tuple[str, ...],
        max_batch_size: int,
        priority: int,
    ) -> RowCoalescer | None:
        if self._coalesce_in_flight <= 0 or max_batch_size <= 0:
            return None
        key = (name, input_name, outputs, max_batch_size, priority)
        coalescer = self._coalescers.get(key)
        if coalescer is None:

            async def call(
                rows: npt.NDArray[np.generic], timeout_s: float | None
            ) -> dict[str, npt.NDArray[np.generic]]:
                return await self.infer(
                    name, {input_name: rows}, outputs, priority=priority, timeout_s=timeout_s
                )

            slots = self._call_slots.get(name)
            if slots is None:
                slots = self._call_slots[name] = CallSlots(self._coalesce_in_flight)
            # Triton's levels: 1 is the most urgent; 0 is the model's default level.
            urgency = priority or DEFAULT_PRIORITY_LEVEL
            coalescer = RowCoalescer(call, max_rows=max_batch_size, slots=slots, urgency=urgency)
            self._coalescers[key] = coalescer
        return coalescer

    async def infer_loaded(
        self,
        name: str,
        inputs: dict[str, npt.NDArray[np.generic]],
        outputs: Sequence[str],
        *,
        priority: int = 0,
        timeout_s: float | None = None,
    ) -> dict[str, npt.NDArray[np.generic]]:
        """Inference without the loader (warm-up requests of a model being loaded)."""
        try:
            return await self._infer_once(name, inputs, outputs, priority, timeout_s)
        except InferenceServerException as exc:
            raise triton_error(exc, "inference") from exc

    async def _infer_counted(
        self,
        name: str,
        inputs: dict[str, npt.NDArray[np.generic]],
        outputs: Sequence[str],
        priority: int,
        timeout_s: float | None,
    ) -> dict[str, npt.NDArray[np.generic]]:
        self.in_flight[name] += 1
        started = time.perf_counter()
        ok = False
        try:
            result = await self._infer_once(name, inputs, outputs, priority, timeout_s)
            ok = True
            return result
        finally:
            self.in_flight[name] -= 1
            metrics.observe_triton_call(name, ok, time.perf_counter() - started)

    async def _infer_once(
        self,
        name: str,
        inputs: dict[str, npt.NDArray[np.generic]],
        outputs: Sequence[str],
        priority: int,
        timeout_s: float | None,
    ) -> dict[str, npt.NDArray[np.generic]]:
        if tracing.tracer is None:
            return await self._infer_sent(name, inputs, outputs, priority, timeout_s, None)
        protocol = "grpc" if self._http is None else "http"
        attributes = {"triton.model_name": name, "network.protocol.name": protocol}
        with tracing.client_span("triton infer", attributes) as traceparent:
            return await self._infer_sent(name, inputs, outputs, priority, timeout_s, traceparent)

    async def _infer_sent(
        self,
        name: str,
        inputs: dict[str, npt.NDArray[np.generic]],
        outputs: Sequence[str],
        priority: int,
        timeout_s: float | None,
        traceparent: str | None,
    ) -> dict[str, npt.NDArray[np.generic]]:
        """`traceparent` (None: none) makes Triton's spans children of the caller's."""
        if self._http is not None:
            return await self._http.infer(name, inputs, outputs, priority, timeout_s, traceparent)
        tensors = []
        for input_name, array in inputs.items():
            kind = datatype(array)
            tensor = InferInput(input_name, list(array.shape), kind)
            if kind == "BYTES":
                # tritonclient sends str() of anything not exactly bytes: checked, as bytes.
                as_bytes = np.empty(array.size, dtype=np.object_)
                as_bytes[:] = elements_as_bytes(array)
                array = as_bytes.reshape(array.shape)
            tensor.set_data_from_numpy(array)  # raw bytes over gRPC, no JSON
            tensors.append(tensor)
        result = await self.client.infer(
            name,
            tensors,
            outputs=[InferRequestedOutput(o) for o in outputs],
            priority=priority,
            client_timeout=self.timeout_s if timeout_s is None else timeout_s,
            headers=None if traceparent is None else {"traceparent": traceparent},
        )
        return {o: result.as_numpy(o) for o in outputs}
