"""Warm-up requests built from a model's manifest: one row of zeros per input.

A model counts as ready only after Triton answered a real inference with it, so
the first client request never pays for lazy initialisation (session creation,
first-call allocation) and a model that loads but cannot infer is never routed to.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydantic

from conch_manifest.layout import load_manifest
from conch_manifest.schema import Manifest
from control_plane.core.errors import TritonError
from control_plane.triton.client import TritonGateway

_DTYPES = {"FP32": np.float32, "INT64": np.int64, "INT32": np.int32}


class WarmupRequest(pydantic.BaseModel):
    inputs: dict[str, list[int]]  # name -> shape
    dtypes: dict[str, str]
    outputs: list[str]


def warmup_request(repository: Path, triton_name: str) -> WarmupRequest | None:
    """None when the manifest is missing or names a datatype we cannot synthesise."""
    try:
        manifest: Manifest = load_manifest(repository, triton_name)
    except (OSError, pydantic.ValidationError):
        return None
    shapes: dict[str, list[int]] = {}
    dtypes: dict[str, str] = {}
    for tensor in manifest.inputs:
        if tensor.datatype not in _DTYPES:
            return None
        # -1 is the batch axis (or a free dimension): one row is enough to warm.
        shapes[tensor.name] = [1 if dim < 0 else dim for dim in tensor.shape]
        dtypes[tensor.name] = tensor.datatype
    return WarmupRequest(
        inputs=shapes, dtypes=dtypes, outputs=[tensor.name for tensor in manifest.outputs]
    )


def warmup_arrays(request: WarmupRequest) -> dict[str, npt.NDArray[np.generic]]:
    return {
        name: np.zeros(shape, dtype=_DTYPES[request.dtypes[name]])
        for name, shape in request.inputs.items()
    }


async def warm(triton: TritonGateway, repository: Path, name: str) -> None:
    """One inference straight after the load; raises TritonError when the model cannot."""
    request = await asyncio.to_thread(warmup_request, repository, name)
    if request is None:
        return  # no manifest we can read: Triton's own model_warmup is all there is
    try:
        await triton.infer_loaded(name, warmup_arrays(request), request.outputs)
    except TritonError as exc:
        raise TritonError(f"warm-up inference of {name!r} failed: {exc.message}") from exc
