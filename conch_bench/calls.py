"""`conch bench calls`: what one Triton call costs the control plane's own process.

The suite measures whole doors; this isolates the client side of the hop the
control plane makes on every prediction. It calls one loaded model sequentially,
in this process, both ways the gateway can reach Triton (HTTP with binary
tensors; gRPC through tritonclient's asyncio client), alternating them, and
reports wall time and this process's CPU time (all threads: grpc's own
included) per call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import tritonclient.grpc.aio as grpc_aio
import uvloop
from tritonclient.utils import triton_to_np_dtype

from control_plane.triton.client import TritonGateway


@dataclass(frozen=True)
class CallCost:
    client: str
    rounds: int
    wall_us: float  # median over the rounds
    cpu_us: float


async def _inputs(
    client: grpc_aio.InferenceServerClient, model: str
) -> tuple[dict[str, npt.NDArray[np.generic]], list[str]]:
    """One zero row per input, shaped as the model's metadata says."""
    metadata = await client.get_model_metadata(model, as_json=True)
    inputs = {}
    for tensor in metadata["inputs"]:
        shape = [1 if dim == "-1" or int(dim) < 0 else int(dim) for dim in tensor["shape"]]
        inputs[tensor["name"]] = np.zeros(shape, dtype=triton_to_np_dtype(tensor["datatype"]))
    return inputs, [tensor["name"] for tensor in metadata["outputs"]]


async def measure_calls(
    grpc_url: str, http_url: str, model: str, *, calls: int = 2000, rounds: int = 3
) -> list[CallCost]:
    over_http = TritonGateway(grpc_url, timeout_s=10, load_timeout_s=60, http_url=http_url)
    over_grpc = TritonGateway(grpc_url, timeout_s=10, load_timeout_s=60)
    try:
        inputs, outputs = await _inputs(over_grpc.client, model)

        async def gateway_http() -> None:
            await over_http.infer_loaded(model, inputs, outputs)

        async def gateway_grpc() -> None:
            await over_grpc.infer_loaded(model, inputs, outputs)

        clients = {"HTTP, binary tensors": gateway_http, "gRPC (grpc.aio)": gateway_grpc}
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
        for _ in range(rounds):  # alternated, so drift on a shared machine hits all alike
            for name, call in clients.items():
                for _ in range(min(200, calls)):  # warm-up
                    await call()
                wall, cpu = time.perf_counter(), time.process_time()
                for _ in range(calls):
                    await call()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                samples[name].append((wall / calls * 1e6, cpu / calls * 1e6))
    finally:
        for gateway in (over_http, over_grpc):
            await gateway.close()
    return [
        CallCost(
            name,
            rounds,
            float(np.median([w for w, _ in runs])),
            float(np.median([c for _, c in runs])),
        )
        for name, runs in samples.items()
    ]


def run_calls(grpc_url: str, http_url: str, model: str, calls: int, rounds: int) -> list[CallCost]:
    # uvloop, as under uvicorn: the event loop's own cost is part of each call's.
    return uvloop.run(measure_calls(grpc_url, http_url, model, calls=calls, rounds=rounds))
