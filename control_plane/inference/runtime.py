"""Per-model runtime data built once from the manifest: Triton name, tensors, id maps.

The manifest itself comes from the replica's ManifestStore (read once per model).

Registered models are immutable (ids are never reused), so an entry's content never
goes stale, but its model can leave the registry. `model_deleted` drops the entry on
every replica; a hit older than `ttl_s` asks SQL again whether the model still
exists (one lookup by id; the manifest is not read again), so a lost event costs at
most the TTL; while the event listener is not subscribed, every hit asks SQL. The
cache is bounded to keep memory flat when many models are registered.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import pydantic
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from conch_manifest.schema import (
    RECOMMENDER_INPUT,
    RECOMMENDER_ITEMS,
    RECOMMENDER_SCORES,
    ClassLabel,
    Manifest,
)
from control_plane.core.errors import BadRequestError, ModelLoadError, ModelNotFoundError
from control_plane.core.request_id import current_request_id
from control_plane.core.settings import default
from control_plane.db.models import Model
from control_plane.events.schemas import ModelDeleted
from control_plane.manifests.store import ManifestStore

logger = logging.getLogger(__name__)


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
    class_labels: list[ClassLabel] | None  # in the model's own type
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
    labels = next((o.typed_class_labels() for o in manifest.outputs if o.class_labels), None)
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
Runtime = RecommenderRuntime | TabularRuntime


class RuntimeCache:
    def __init__(
        self,
        manifests: ManifestStore,
        max_entries: int = default("runtime_cache_max_entries"),
        ttl_s: float = default("cache_ttl_s"),
        events_current: Callable[[], bool] = lambda: True,
    ) -> None:
        self.manifests = manifests
        self._max = max_entries
        self._ttl = ttl_s
        self._events_current = events_current
        # (kind, model id) -> (runtime, monotonic time SQL last said the model exists)
        self._entries: OrderedDict[tuple[str, int], tuple[Runtime, float]] = OrderedDict()
        # Bumped by every invalidation: a lookup that overlapped one may have read a
        # model just deleted, so its answer is used once but not cached.
        self._generation = 0

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
        """A fresh hit touches no database; otherwise one short session asks SQL."""
        key = (kind.__name__, model_id)
        trusted = self._events_current()
        entry = self._entries.get(key)
        cached: R | None = None
        if entry is not None and isinstance(entry[0], kind):
            cached, verified_at = entry[0], entry[1]
            if trusted and time.monotonic() - verified_at < self._ttl:
                self._entries.move_to_end(key)
                return cached
        generation = self._generation
        async with sessionmaker() as session:
            model = await session.get(Model, model_id)
        if model is None:
            self.forget(model_id)
            raise ModelNotFoundError(f"model {model_id} not found", model_id=model_id)
        # Content is immutable: a verified entry is reused, its manifest never read again.
        built = cached if cached is not None else await self._build(model, build)
        if generation == self._generation:
            # Verified only while events can reach us; else every hit asks SQL again.
            self._entries[key] = (built, time.monotonic() if trusted else -math.inf)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return built

    async def _build(self, model: Model, build: Callable[[Model, Manifest], R]) -> R:
        return build(model, await self._manifest(model))

    def forget(self, model_id: int) -> None:
        self._generation += 1
        for key in [key for key in self._entries if key[1] == model_id]:
            del self._entries[key]

    def invalidate(self) -> None:
        """After missing events (a resubscription): every entry asks SQL on its next hit."""
        self._generation += 1
        for key, (runtime, _) in list(self._entries.items()):
            self._entries[key] = (runtime, -math.inf)

    async def on_model_deleted(self, event: ModelDeleted) -> None:
        self.forget(event.model_id)

    async def _manifest(self, model: Model) -> Manifest:
        try:
            return (await self.manifests.still_present(model.triton_name)).manifest
        except (OSError, pydantic.ValidationError) as exc:
            # The path is in `exc`: it goes to the log, the response names the model only.
            reason = (
                "is missing" if isinstance(exc, FileNotFoundError)
                else "is invalid" if isinstance(exc, pydantic.ValidationError)
                else "is unreadable"
            )  # fmt: skip
            logger.warning(
                "manifest of model %s (%s) %s: %s [request %s]",
                model.id, model.triton_name, reason, exc, current_request_id(),
            )  # fmt: skip
            raise ModelLoadError(
                f"manifest of model {model.id} {reason} in the model repository",
                model_id=model.id,
            ) from exc
