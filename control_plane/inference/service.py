"""Top-K recommendations through Triton: map user ids in, item ids out, best first."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from control_plane.core.errors import UserNotInModelError
from control_plane.inference.runtime import RecommenderRuntime
from control_plane.triton.client import TritonGateway

# {"item_id": ..., "score": ...}: plain dicts, rendered straight to JSON by orjson
# (the response models in schemas.py document the same shape).
Item = dict[str, str | float]


async def recommend(
    triton: TritonGateway,
    runtime: RecommenderRuntime,
    user_ids: Sequence[str],
    cutoff: int,
) -> list[list[Item]]:
    """One list per user id; unknown users get an empty list (the batch contract)."""
    rows = [runtime.user_index.get(user) for user in user_ids]
    known = [row for row in rows if row is not None]
    if not known:
        return [[] for _ in user_ids]
    item_rows, score_rows = await _infer_rows(triton, runtime, known)
    limit = min(cutoff, runtime.max_k)
    results: list[list[Item]] = []
    position = 0
    for row in rows:
        if row is None:
            results.append([])
            continue
        results.append(_items(runtime, item_rows[position], score_rows[position], limit))
        position += 1
    return results


async def _infer_rows(
    triton: TritonGateway, runtime: RecommenderRuntime, rows: list[int]
) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.generic]]:
    indices = np.asarray(rows, dtype=np.int64).reshape(-1, 1)
    outputs = await triton.infer_rows(
        runtime.triton_name,
        runtime.input_name,
        indices,
        [runtime.items_output, runtime.scores_output],
        runtime.max_batch_size,
    )
    return outputs[runtime.items_output], outputs[runtime.scores_output]


def _items(
    runtime: RecommenderRuntime,
    items: npt.NDArray[np.generic],
    scores: npt.NDArray[np.generic],
    limit: int,
) -> list[Item]:
    chosen: list[Item] = []
    for index, score in zip(items.tolist(), scores.tolist(), strict=True):
        # -inf marks seen items and padding: "no more items".
        if not math.isfinite(score) or not 0 <= index < len(runtime.item_ids):
            continue
        chosen.append({"item_id": runtime.item_ids[index], "score": score})
        if len(chosen) == limit:
            break
    return chosen


async def recommend_one(
    triton: TritonGateway, runtime: RecommenderRuntime, user_id: str, cutoff: int
) -> list[Item]:
    if user_id not in runtime.user_index:
        raise UserNotInModelError(
            f"user {user_id!r} not in model {runtime.model_id}",
            user_id=user_id,
            model_id=runtime.model_id,
        )
    return (await recommend(triton, runtime, [user_id], cutoff))[0]
