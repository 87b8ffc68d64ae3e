"""Which names the lifecycle may load: SQL decides, never the request that asks.

A model deleted from the registry must not come back because a request, a cached
runtime or an operator's call names it. Every load asks SQL first (one indexed
query, against seconds of Triton's time). Names this replica learnt were deleted
(the `model_deleted` event, a reconciliation pass) are refused even while Triton
still has them loaded, until SQL registers the name again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from control_plane.core.errors import ModelNotFoundError, ServiceUnavailableError
from control_plane.registry.service import is_registered

# Deleted names remembered (oldest forgotten first): reconciliation keeps each one
# unloaded, so memory must stay flat however many models are ever deleted.
MAX_REMEMBERED = 4096


class RegistrationGuard:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker
        self._deleted: OrderedDict[str, None] = OrderedDict()

    def is_deleted(self, name: str) -> bool:
        return name in self._deleted

    def deleted(self) -> set[str]:
        return set(self._deleted)

    def mark_deleted(self, name: str) -> None:
        self._deleted[name] = None
        self._deleted.move_to_end(name)
        while len(self._deleted) > MAX_REMEMBERED:
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
