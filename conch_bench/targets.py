"""What a load generator sends: picklable target specs and their payloads.

Targets cross into spawned client processes, so they hold only plain data:
numpy arrays for Triton's binary tensors, pre-serialised JSON bodies for REST.
Payloads are generated once, up front, so clients spend no time building them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
import orjson

Protocol = Literal["grpc", "http"]

_NUMPY_DTYPES = {
    "FP32": np.float32,
    "FP64": np.float64,
    "FP16": np.float16,
    "INT64": np.int64,
    "INT32": np.int32,
    "INT16": np.int16,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "BOOL": np.bool_,
}


@dataclass(frozen=True)
class TensorInput:
    name: str
    datatype: str  # Triton datatype (FP32, INT64, ...)
    data: npt.NDArray[np.generic]  # the whole request, batch axis included


@dataclass(frozen=True)
class TritonTarget:
    """A model behind Triton's KServe v2 protocol, over gRPC or HTTP with binary tensors."""

    protocol: Protocol
    url: str  # host:port, no scheme
    model: str
    inputs: tuple[TensorInput, ...]
    outputs: tuple[str, ...] = ()  # empty: every output

    @property
    def door(self) -> str:
        return f"triton-{self.protocol}"


@dataclass(frozen=True)
class RestTarget:
    """Any JSON-over-HTTP endpoint: Conch's REST API, the baseline, something else."""

    url: str
    bodies: tuple[bytes, ...]  # cycled request after request
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    expect_status: int = 200
    # Many-keys arms: `keys` cycled per request into `key_header` (the limiter's
    # realistic case: one bucket per key, not one hot bucket).
    key_header: str = ""
    keys: tuple[str, ...] = ()

    @property
    def door(self) -> str:
        return "rest"


Target = TritonTarget | RestTarget


@dataclass(frozen=True)
class InputSpec:
    """A model input as its manifest or Triton's metadata describes it."""

    name: str
    datatype: str
    shape: tuple[int, ...]  # without the batch axis when the model batches


def make_tensors(
    specs: Sequence[InputSpec],
    batch_size: int,
    *,
    batched: bool = True,
    int_high: int = 2,
    seed: int = 0,
) -> tuple[TensorInput, ...]:
    """Random inputs of the right shape: normal floats, integers in [0, int_high)."""
    rng = np.random.default_rng(seed)
    tensors = []
    for spec in specs:
        dims = tuple(1 if d < 0 else d for d in spec.shape)
        shape = (batch_size, *dims) if batched else dims
        dtype = _NUMPY_DTYPES.get(spec.datatype)
        if dtype is None:
            raise ValueError(f"input {spec.name}: datatype {spec.datatype} is not supported")
        data: npt.NDArray[np.generic]
        if np.issubdtype(dtype, np.floating):
            data = rng.standard_normal(shape).astype(dtype)
        elif dtype is np.bool_:
            data = rng.integers(0, 2, shape).astype(np.bool_)
        else:
            data = rng.integers(0, max(int_high, 1), shape).astype(dtype)
        tensors.append(TensorInput(spec.name, spec.datatype, data))
    return tuple(tensors)


def triton_input_specs(protocol: Protocol, url: str, model: str) -> tuple[list[InputSpec], bool]:
    """Ask Triton for a loaded model's inputs; returns (specs, batched)."""
    if protocol == "grpc":
        import tritonclient.grpc as grpcclient

        grpc_client = grpcclient.InferenceServerClient(url)
        try:
            config = grpc_client.get_model_config(model, as_json=True)["config"]
        finally:
            grpc_client.close()
    else:
        import tritonclient.http as httpclient

        http_client = httpclient.InferenceServerClient(url)
        try:
            config = http_client.get_model_config(model)
        finally:
            http_client.close()
    batched = int(config.get("max_batch_size", 0)) > 0
    specs = [
        InputSpec(
            name=item["name"],
            datatype=str(item["data_type"]).removeprefix("TYPE_").replace("STRING", "BYTES"),
            shape=tuple(int(d) for d in item.get("dims", [])),
        )
        for item in config["input"]
    ]
    return specs, batched


def triton_target(
    protocol: Protocol,
    url: str,
    model: str,
    *,
    batch_size: int = 1,
    int_high: int = 2,
    seed: int = 0,
) -> TritonTarget:
    specs, batched = triton_input_specs(protocol, url, model)
    tensors = make_tensors(specs, batch_size, batched=batched, int_high=int_high, seed=seed)
    return TritonTarget(protocol=protocol, url=url, model=model, inputs=tensors)


def render_bodies(
    template: str,
    *,
    count: int = 16,
    rows: int = 1,
    features: int = 0,
    user_ids: Sequence[str] = (),
    seed: int = 0,
) -> tuple[bytes, ...]:
    """JSON bodies from a template with `$DATA` (rows x features floats) and `$USER_ID`.

    `'{"data": $DATA}'` gives the tabular body; `'{"user_id": "$USER_ID", "cutoff": 10}'`
    the recommender one. Bodies are validated as JSON here, not on the first request.
    """
    rng = np.random.default_rng(seed)
    users = itertools.cycle(user_ids or ["0"])
    bodies = []
    for _ in range(count):
        text = template
        if "$DATA" in text:
            matrix = rng.standard_normal((rows, features)).astype(np.float32)
            text = text.replace("$DATA", orjson.dumps(matrix.round(5).tolist()).decode())
        if "$USER_ID" in text:
            text = text.replace("$USER_ID", next(users))
        bodies.append(orjson.dumps(orjson.loads(text)))
    return tuple(bodies)
