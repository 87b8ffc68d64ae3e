"""Top-K recommendations through Triton: map user ids in, item ids out, best first."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from control_plane.core.errors import UserNotInModelError
from control_plane.model_core.handle import ModelHandle, RecommenderIndex
from control_plane.model_core.predict import call_model
from control_plane.model_core.stats import InferenceStats
from control_plane.triton.client import TritonGateway

# {"item_id": ..., "score": ...}: plain dicts, rendered straight to JSON by orjson
# (the response models in schemas.py document the same shape).
Item = dict[str, str | float]


async def recommend(
    triton: TritonGateway,
    model: ModelHandle,
    user_ids: Sequence[str],
    cutoff: int,
    stats: InferenceStats | None = None,
) -> list[list[Item]]:
    """One list per user id; unknown users get an empty list (the batch contract)."""
    index = model.as_recommender()
    rows = [index.user_index.get(user) for user in user_ids]
    known = [row for row in rows if row is not None]
    if not known:
        return [[] for _ in user_ids]
    item_rows, score_rows = await _infer_rows(triton, model, index, known, stats)
    limit = min(cutoff, index.max_k)
    results: list[list[Item]] = []
    position = 0
    for row in rows:
        if row is None:
            results.append([])
            continue
        results.append(_items(index, item_rows[position], score_rows[position], limit))
        position += 1
    return results


async def _infer_rows(
    triton: TritonGateway,
    model: ModelHandle,
    index: RecommenderIndex,
    rows: list[int],
    stats: InferenceStats | None,
) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.generic]]:
    indices = np.asarray(rows, dtype=np.int64).reshape(-1, 1)
    outputs = await call_model(
        triton,
        model,
        {index.input_name: indices},
        [index.items_output, index.scores_output],
        stats=stats,
    )
    return outputs[index.items_output], outputs[index.scores_output]


def _items(
    index: RecommenderIndex,
    items: npt.NDArray[np.generic],
    scores: npt.NDArray[np.generic],
    limit: int,
) -> list[Item]:
    chosen: list[Item] = []
    for column, score in zip(items.tolist(), scores.tolist(), strict=True):
        # -inf marks seen items and padding: "no more items".
        if not math.isfinite(score) or not 0 <= column < len(index.item_ids):
            continue
        chosen.append({"item_id": index.item_ids[column], "score": score})
        if len(chosen) == limit:
            break
    return chosen


async def recommend_one(
    triton: TritonGateway,
    model: ModelHandle,
    user_id: str,
    cutoff: int,
    stats: InferenceStats | None = None,
) -> list[Item]:
    if user_id not in model.as_recommender().user_index:
        raise UserNotInModelError(
            f"user {user_id!r} not in model {model.model_id}",
            user_id=user_id,
            model_id=model.model_id,
        )
    return (await recommend(triton, model, [user_id], cutoff, stats))[0]
