"""Where every door finds a model: handles by id, or by any name a caller uses.

The manifest itself comes from the replica's ManifestStore (read once per model).

Registered models are immutable (ids are never reused), so a handle's content
never goes stale, but its model can leave the registry. `model_deleted` drops
the entry on every replica; a hit older than `ttl_s` asks SQL again whether the
model still exists (one lookup by id; the manifest is not read again), so a lost
event costs at most the TTL; while the event listener is not subscribed, every
hit asks SQL. The cache is bounded to keep memory flat when many models are
registered.

`resolve` also accepts a model's Triton name or its registered name (the newest
model of that name the caller may see). What a name points to is cached for the
same TTL; `model_trained` (a registration) drops every cached name, so a model
registered under an existing name is what the name means at once where the
event arrives, and within the TTL where it is lost.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

import pydantic
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from conch_manifest.schema import Manifest
from control_plane.core import access_log, metrics
from control_plane.core.errors import ModelLoadError, ModelNotFoundError, model_not_found
from control_plane.core.request_id import current_request_id
from control_plane.core.settings import default
from control_plane.core.single_flight import SingleFlight
from control_plane.core.types import MAX_ID
from control_plane.db.models import Model
from control_plane.events.schemas import ModelDeleted, ModelTrained
from control_plane.manifests.store import ManifestStore
from control_plane.model_core.handle import ModelHandle, build_handle

logger = logging.getLogger(__name__)
_MODELS_HIT, _MODELS_MISS = metrics.cache_results("models")
_NAMES_HIT, _NAMES_MISS = metrics.cache_results("model_names")

Sessionmaker = async_sessionmaker[AsyncSession]
K = TypeVar("K")
V = TypeVar("V")


class ModelCatalog:
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
        # model id -> (handle, monotonic time SQL last said the model exists)
        self._entries: OrderedDict[int, tuple[ModelHandle, float]] = OrderedDict()
        # a name a caller used -> (the ids it may name, best first; when SQL said so)
        self._names: OrderedDict[str, tuple[tuple[int, ...], float]] = OrderedDict()
        # Bumped by every invalidation: a lookup that overlapped one may have read a
        # model just deleted, so its answer is used once but not cached.
        self._generation = 0
        self._model_flights: SingleFlight[int, ModelHandle] = SingleFlight()
        self._name_flights: SingleFlight[str, tuple[int, ...]] = SingleFlight()

    async def get(self, sessionmaker: Sessionmaker, model_id: int) -> ModelHandle:
        """A fresh hit touches no database; otherwise one short session asks SQL
        (one at a time per model, however many requests miss together)."""
        trusted = self._events_current()
        entry = self._entries.get(model_id)
        if entry is not None and trusted and time.monotonic() - entry[1] < self._ttl:
            self._entries.move_to_end(model_id)
            _MODELS_HIT.inc()
            access_log.note_model(entry[0].triton_name)
            return entry[0]
        _MODELS_MISS.inc()
        handle = await self._model_flights.load(
            model_id, lambda: self._verify(sessionmaker, model_id, trusted)
        )
        access_log.note_model(handle.triton_name)
        return handle

    async def _verify(
        self, sessionmaker: Sessionmaker, model_id: int, trusted: bool
    ) -> ModelHandle:
        entry = self._entries.get(model_id)
        cached = None if entry is None else entry[0]
        generation = self._generation
        async with sessionmaker() as session:
            model = await session.get(Model, model_id)
        if model is None:
            self.forget(model_id)
            raise ModelNotFoundError(f"model {model_id} not found", model_id=model_id)
        # Content is immutable: a verified entry is reused, its manifest never read again.
        handle = cached if cached is not None else build_handle(model, await self._manifest(model))
        if generation == self._generation:
            # Verified only while events can reach us; else every hit asks SQL again.
            self._remember(self._entries, model_id, handle, trusted)
        return handle

    async def resolve(
        self, sessionmaker: Sessionmaker, ref: str, *, visible: frozenset[int] | None = None
    ) -> ModelHandle:
        """The model a caller names: its Conch id, its Triton name, or its registered
        name (the newest model of that name among `visible`, every model when None).
        Unknown and invisible answer the same 404, naming what was asked."""
        if ref.isdigit() and not ref.startswith("0") and int(ref) <= MAX_ID:
            model_id = int(ref)
            if visible is not None and model_id not in visible:
                raise model_not_found(model_id)
            return await self.get(sessionmaker, model_id)
        for model_id in await self._named(sessionmaker, ref):
            if visible is None or model_id in visible:
                return await self.get(sessionmaker, model_id)
        raise ModelNotFoundError(f"model {ref[:200]!r} not found", model_id=ref[:200])

    async def _named(self, sessionmaker: Sessionmaker, ref: str) -> tuple[int, ...]:
        """Every model `ref` may name, best first: the one whose Triton name it is
        (unique), then those registered under it, newest first."""
        trusted = self._events_current()
        entry = self._names.get(ref)
        if entry is not None and trusted and time.monotonic() - entry[1] < self._ttl:
            self._names.move_to_end(ref)
            _NAMES_HIT.inc()
            return entry[0]
        _NAMES_MISS.inc()
        return await self._name_flights.load(ref, lambda: self._look_up(sessionmaker, ref, trusted))

    async def _look_up(
        self, sessionmaker: Sessionmaker, ref: str, trusted: bool
    ) -> tuple[int, ...]:
        generation = self._generation
        async with sessionmaker() as session:
            found = await session.scalars(
                select(Model.id)
                .where(or_(Model.triton_name == ref, Model.name == ref))
                .order_by((Model.triton_name == ref).desc(), Model.id.desc())
            )
            ids = tuple(found)
        if generation == self._generation and ids:
            self._remember(self._names, ref, ids, trusted)
        return ids

    def _remember(
        self, table: OrderedDict[K, tuple[V, float]], key: K, value: V, trusted: bool
    ) -> None:
        table[key] = (value, time.monotonic() if trusted else -math.inf)
        table.move_to_end(key)
        while len(table) > self._max:
            table.popitem(last=False)

    def forget(self, model_id: int) -> None:
        self._bump()
        self._entries.pop(model_id, None)
        for name in [name for name, (ids, _) in self._names.items() if model_id in ids]:
            del self._names[name]

    def invalidate(self) -> None:
        """After missing events (a resubscription): every entry asks SQL on its next hit."""
        self._bump()
        for model_id, (handle, _) in list(self._entries.items()):
            self._entries[model_id] = (handle, -math.inf)
        self._names.clear()

    async def on_model_deleted(self, event: ModelDeleted) -> None:
        self.forget(event.model_id)

    async def on_model_registered(self, event: ModelTrained) -> None:
        """A new model may be the newest of a name already cached."""
        self._bump()
        self._names.clear()

    def _bump(self) -> None:
        """An invalidation: lookups already running may predate it, later ones don't join them."""
        self._generation += 1
        self._model_flights.detach()
        self._name_flights.detach()

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
