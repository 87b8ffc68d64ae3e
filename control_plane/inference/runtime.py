"""Per-model runtime data read once from the manifest: Triton name and id maps as dicts.

Registered models are immutable, so an entry never goes stale; the cache is only
bounded to keep memory flat when many models are registered.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import pydantic
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.core.errors import BadRequestError, ModelLoadError, ModelNotFoundError
from control_plane.db.models import Model
from exporters.manifest import (
    RECOMMENDER_INPUT,
    RECOMMENDER_ITEMS,
    RECOMMENDER_SCORES,
    load_manifest,
)


@dataclass(frozen=True)
class RecommenderRuntime:
    model_id: int
    triton_name: str
    user_index: dict[str, int]  # external user id -> row
    item_ids: list[str]  # column -> external item id
    max_k: int
    max_batch_size: int  # Triton refuses larger requests: callers split by it (0: no batching)
    input_name: str = RECOMMENDER_INPUT
    items_output: str = RECOMMENDER_ITEMS
    scores_output: str = RECOMMENDER_SCORES


class RuntimeCache:
    def __init__(self, repository: Path, max_entries: int = 256) -> None:
        self.repository = repository
        self._max = max_entries
        self._entries: OrderedDict[int, RecommenderRuntime] = OrderedDict()

    async def recommender(self, session: AsyncSession, model_id: int) -> RecommenderRuntime:
        runtime = self._entries.get(model_id)
        if runtime is not None:
            self._entries.move_to_end(model_id)
            return runtime
        model = await session.get(Model, model_id)
        if model is None:
            raise ModelNotFoundError(f"model {model_id} not found", model_id=model_id)
        runtime = await asyncio.to_thread(self._read, model)
        self._entries[model_id] = runtime
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return runtime

    def _read(self, model: Model) -> RecommenderRuntime:
        try:
            manifest = load_manifest(self.repository, model.triton_name)
        except (OSError, pydantic.ValidationError) as exc:
            raise ModelLoadError(
                f"manifest of model {model.id} could not be read: {exc}", model_id=model.id
            ) from exc
        spec = manifest.recommender
        if spec is None:
            raise BadRequestError(
                f"model {model.id} is a {manifest.task} model, not a recommender",
                model_id=model.id,
                task=manifest.task,
            )
        return RecommenderRuntime(
            model_id=model.id,
            triton_name=model.triton_name,
            user_index={user: row for row, user in enumerate(spec.user_ids)},
            item_ids=list(spec.item_ids),
            max_k=spec.max_k,
            max_batch_size=manifest.max_batch_size,
        )
