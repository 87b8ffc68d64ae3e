"""Per-model runtime data read once from the manifest: Triton name, tensors, id maps.

Registered models are immutable, so an entry never goes stale; the cache is only
bounded to keep memory flat when many models are registered.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pydantic
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from control_plane.core.errors import BadRequestError, ModelLoadError, ModelNotFoundError
from control_plane.db.models import Model
from exporters.manifest import (
    RECOMMENDER_INPUT,
    RECOMMENDER_ITEMS,
    RECOMMENDER_SCORES,
    Manifest,
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


@dataclass(frozen=True)
class TabularRuntime:
    """A model that takes feature rows: one FP32 input of `n_features` columns."""

    model_id: int
    triton_name: str
    task: str
    input_name: str
    n_features: int
    output_names: list[str]
    class_labels: list[str] | None
    max_batch_size: int


def _recommender(model: Model, manifest: Manifest) -> RecommenderRuntime:
    spec = manifest.recommender
    if spec is None:
        raise BadRequestError(
            f"model {model.id} is a {manifest.task} model, not a recommender; "
            "send feature rows to /api/v1/models/{model_id}/predict",
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


def _tabular(model: Model, manifest: Manifest) -> TabularRuntime:
    if manifest.recommender is not None or len(manifest.inputs) != 1:
        raise BadRequestError(
            f"model {model.id} does not take feature rows; use /inference/predict/{model.id}",
            model_id=model.id,
            task=manifest.task,
        )
    spec = manifest.inputs[0]
    labels = next((o.class_labels for o in manifest.outputs if o.class_labels), None)
    return TabularRuntime(
        model_id=model.id,
        triton_name=model.triton_name,
        task=manifest.task,
        input_name=spec.name,
        n_features=spec.shape[-1],
        output_names=[o.name for o in manifest.outputs],
        class_labels=labels,
        max_batch_size=manifest.max_batch_size,
    )


R = TypeVar("R", RecommenderRuntime, TabularRuntime)


class RuntimeCache:
    def __init__(self, repository: Path, max_entries: int = 256) -> None:
        self.repository = repository
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, int], RecommenderRuntime | TabularRuntime] = (
            OrderedDict()
        )

    async def recommender(
        self, sessionmaker: async_sessionmaker[AsyncSession], model_id: int
    ) -> RecommenderRuntime:
        return await self._get(sessionmaker, model_id, RecommenderRuntime, _recommender)

    async def tabular(
        self, sessionmaker: async_sessionmaker[AsyncSession], model_id: int
    ) -> TabularRuntime:
        return await self._get(sessionmaker, model_id, TabularRuntime, _tabular)

    async def _get(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        model_id: int,
        kind: type[R],
        build: Callable[[Model, Manifest], R],
    ) -> R:
        """A cache hit touches no database; a miss opens its own short session."""
        key = (kind.__name__, model_id)
        runtime = self._entries.get(key)
        if isinstance(runtime, kind):
            self._entries.move_to_end(key)
            return runtime
        async with sessionmaker() as session:
            model = await session.get(Model, model_id)
        if model is None:
            raise ModelNotFoundError(f"model {model_id} not found", model_id=model_id)
        built = build(model, await asyncio.to_thread(self._manifest, model))
        self._entries[key] = built
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return built

    def _manifest(self, model: Model) -> Manifest:
        try:
            return load_manifest(self.repository, model.triton_name)
        except (OSError, pydantic.ValidationError) as exc:
            raise ModelLoadError(
                f"manifest of model {model.id} could not be read: {exc}", model_id=model.id
            ) from exc
