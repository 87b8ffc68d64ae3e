"""One prediction through the core: validate, call Triton, decode, measure.

Every door calls `predict` (or, with tensors it built itself, `call_model`), so
each model is validated, batched, prioritised, timed and counted the same way
whichever door its request came through.

Priorities are seed 002's names mapped to Triton's levels
(`conch_manifest/priorities.py`); None sends level 0, the model's own default
(`normal` for exported models). `batch_size` caps the rows of each Triton
request below the model's max_batch_size; rows of one input go through the
gateway's coalescer, a model of several inputs is called chunk by chunk.

`call_model` counts every call in `InferenceStats`, whichever door made it: a
success with the measured time of its Triton requests, a failure when Triton
refused, timed out or the caller gave up (cancelled). A request refused for its
input (400) never reached the model and is not counted against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from conch_manifest.priorities import DEFAULT_PRIORITY_LEVEL, PRIORITY_LEVELS
from control_plane.core.errors import BadRequestError
from control_plane.model_core.admission import PriorityGate
from control_plane.model_core.handle import ModelHandle
from control_plane.model_core.inputs import MAX_ROWS, Tensors, input_tensors
from control_plane.model_core.outputs import Payload, decode_outputs
from control_plane.model_core.stats import InferenceStats
from control_plane.triton.client import TritonGateway


@dataclass(frozen=True, slots=True)
class Prediction:
    payload: Payload  # predictions, and probabilities / outputs where they apply
    rows: int
    seconds: float  # measured: validation, Triton and decoding


def priority_level(priority: str | None) -> int:
    """Triton's level for a seed-002 priority name; None -> 0 (the model's default)."""
    if priority is None:
        return 0
    level = PRIORITY_LEVELS.get(priority)
    if level is None:
        raise BadRequestError(
            f"unknown priority {priority[:40]!r}; one of {', '.join(PRIORITY_LEVELS)}",
            priority=priority[:40],
        )
    return level


async def predict(
    gateway: TritonGateway,
    handle: ModelHandle,
    data: object,
    *,
    priority: str | None = None,
    timeout_s: float | None = None,
    stats: InferenceStats | None = None,
    return_probabilities: bool = False,
    batch_size: int | None = None,
    max_rows: int = MAX_ROWS,
    gate: PriorityGate | None = None,
) -> Prediction:
    """`data` in any form `inputs.py` accepts -> the decoded answer (`outputs.py`).

    400 for bad data (naming the feature or input), Triton's 502/503, 504 past
    `timeout_s` (None: the gateway's deadline). With a `gate`, the prediction
    waits its turn by priority (`admission.py`).
    """
    level = priority_level(priority)
    admission = (
        contextlib.nullcontext() if gate is None else gate.admitted(level or DEFAULT_PRIORITY_LEVEL)
    )
    async with admission:
        return await _predict(
            gateway,
            handle,
            data,
            level,
            timeout_s,
            stats,
            return_probabilities,
            batch_size,
            max_rows,
        )


async def _predict(
    gateway: TritonGateway,
    handle: ModelHandle,
    data: object,
    level: int,
    timeout_s: float | None,
    stats: InferenceStats | None,
    return_probabilities: bool,
    batch_size: int | None,
    max_rows: int,
) -> Prediction:
    started = time.perf_counter()
    tensors, n_rows = input_tensors(handle, data, max_rows=max_rows)
    outputs = await call_model(
        gateway,
        handle,
        tensors,
        priority=level,
        timeout_s=timeout_s,
        batch_size=batch_size,
        stats=stats,
    )
    payload = decode_outputs(handle, outputs, n_rows, return_probabilities=return_probabilities)
    return Prediction(payload, n_rows, time.perf_counter() - started)


async def call_model(
    gateway: TritonGateway,
    handle: ModelHandle,
    tensors: Tensors,
    outputs: Sequence[str] | None = None,
    *,
    priority: int = 0,
    timeout_s: float | None = None,
    batch_size: int | None = None,
    stats: InferenceStats | None = None,
) -> dict[str, npt.NDArray[Any]]:
    """The core's one Triton call: tensors whose first axis is rows, split into requests
    of at most min(batch_size, the model's max_batch_size) rows; outputs joined again."""
    if stats is None:
        return await _call(gateway, handle, tensors, outputs, priority, timeout_s, batch_size)
    started = time.perf_counter()
    try:
        result = await _call(gateway, handle, tensors, outputs, priority, timeout_s, batch_size)
    except BaseException:
        stats.record(handle.model_id, time.perf_counter() - started, ok=False)
        raise
    stats.record(handle.model_id, time.perf_counter() - started, ok=True)
    return result


async def _call(
    gateway: TritonGateway,
    handle: ModelHandle,
    tensors: Tensors,
    outputs: Sequence[str] | None,
    priority: int,
    timeout_s: float | None,
    batch_size: int | None,
) -> dict[str, npt.NDArray[Any]]:
    names = handle.output_names if outputs is None else outputs
    limit = handle.max_batch_size
    if batch_size is not None and limit > 0:
        limit = max(1, min(batch_size, limit))
    if len(tensors) == 1:
        ((input_name, rows),) = tensors.items()
        return await gateway.infer_rows(
            handle.triton_name,
            input_name,
            rows,
            names,
            limit,
            priority=priority,
            timeout_s=timeout_s,
        )
    n_rows = len(next(iter(tensors.values())))
    size = limit or 1
    chunks = [
        {name: array[start : start + size] for name, array in tensors.items()}
        for start in range(0, n_rows, size)
    ]
    results = await asyncio.gather(
        *(
            gateway.infer(handle.triton_name, chunk, names, priority=priority, timeout_s=timeout_s)
            for chunk in chunks
        )
    )
    if len(results) == 1:
        return results[0]
    return {name: np.concatenate([result[name] for result in results]) for name in names}
