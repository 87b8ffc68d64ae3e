"""Warm-up requests built from a model's manifest: one row of zeros per input.

A model counts as ready only after Triton answered a real inference with it, so
the first client request never pays for lazy initialisation (session creation,
first-call allocation) and a model that loads but cannot infer is never routed to.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pydantic

from conch_manifest.schema import Manifest
from control_plane.core.errors import TritonError
from control_plane.manifests.store import ManifestStore
from control_plane.triton.client import TritonGateway

_DTYPES = {"FP32": np.float32, "INT64": np.int64, "INT32": np.int32}


class WarmupRequest(pydantic.BaseModel):
    inputs: dict[str, list[int]]  # name -> shape
    dtypes: dict[str, str]
    outputs: list[str]


def warmup_request(manifest: Manifest) -> WarmupRequest | None:
    """None when the manifest names a datatype we cannot synthesise."""
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


async def warm(triton: TritonGateway, manifests: ManifestStore, name: str) -> None:
    """One inference straight after the load; raises TritonError when the model cannot.
    The manifest comes from the replica's store (read once per model)."""
    try:
        manifest = (await manifests.get(name)).manifest
    except (OSError, pydantic.ValidationError):
        manifest = None
    request = None if manifest is None else warmup_request(manifest)
    if request is None:
        return  # no manifest we can read: Triton's own model_warmup is all there is
    try:
        await triton.infer_loaded(name, warmup_arrays(request), request.outputs)
    except TritonError as exc:
        raise TritonError(f"warm-up inference of {name!r} failed: {exc.message}") from exc
