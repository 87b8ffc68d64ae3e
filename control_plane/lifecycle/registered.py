"""Which names the lifecycle may load: SQL decides, never the request that asks.

A model deleted from the registry must not come back because a request, a cached
runtime or an operator's call names it. Every load asks SQL first (one indexed
query, against seconds of Triton's time). Names this replica learnt were deleted
(the `model_deleted` event, a reconciliation pass) are refused even while Triton
still has them loaded, until SQL registers the name again.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from control_plane.core.errors import ModelNotFoundError, ServiceUnavailableError
from control_plane.core.settings import default
from control_plane.db.models import Model

logger = logging.getLogger(__name__)


class RegistrationGuard:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        max_remembered: int = default("deleted_models_remembered"),
    ) -> None:
        self.sessionmaker = sessionmaker
        # Deleted names remembered (oldest forgotten first): reconciliation keeps each
        # one unloaded, so memory must stay flat however many models are ever deleted.
        self._max_remembered = max_remembered
        self._deleted: OrderedDict[str, None] = OrderedDict()

    def is_deleted(self, name: str) -> bool:
        return name in self._deleted

    def deleted(self) -> set[str]:
        return set(self._deleted)

    def mark_deleted(self, name: str) -> None:
        self._deleted[name] = None
        self._deleted.move_to_end(name)
        while len(self._deleted) > self._max_remembered:
            self._deleted.popitem(last=False)

    def registered(self, names: Iterable[str]) -> None:
        """SQL registers these (again): a name deleted once may be registered anew."""
        for name in names:
            self._deleted.pop(name, None)

    async def check(self, name: str) -> None:
        """404 unless SQL registers `name`; 503 while SQL cannot say (never load blind)."""
        try:
            found = await is_registered(self.sessionmaker, name)
        except SQLAlchemyError as exc:
            raise ServiceUnavailableError(
                "the model registry cannot be read; retry shortly",
                retry_after_s=2,
                triton_name=name,
            ) from exc
        if not found:
            self.mark_deleted(name)
            raise ModelNotFoundError(f"model {name!r} is not registered", triton_name=name)
        self.registered([name])


async def record_load_error(
    sessionmaker: async_sessionmaker[AsyncSession], triton_name: str, reason: str | None
) -> None:
    """Triton's reason on the model row (its own transaction: no request is involved),
    so every replica's API and the CLI show it; None clears it after a good load."""
    query = update(Model).where(Model.triton_name == triton_name)
    if reason is None:
        query = query.where(Model.load_error.is_not(None))
    try:
        async with sessionmaker() as session, session.begin():
            await session.execute(query.values(load_error=reason))
    except SQLAlchemyError as exc:
        logger.warning("could not record the load state of %s: %s", triton_name, exc)


async def is_registered(sessionmaker: async_sessionmaker[AsyncSession], triton_name: str) -> bool:
    """Whether SQL registers a model under this Triton name (its own short session)."""
    async with sessionmaker() as session:
        found = await session.scalar(select(Model.id).where(Model.triton_name == triton_name))
    return found is not None
