"""Per-replica cache of each project's routing table (sticky flag, salt, active slots)
and of the models the project's keys may see.

Project predictions are the hot path; reading the project and its slots from SQL
on every request cost more than the inference itself. A prediction by model id with
a project-restricted key asks the same entry which models the key may see
(`keys/access.py`), so it costs no SQL either. Entries live for a short TTL and are
dropped at once by events: `slot_changed` drops its project's entry, and
`model_trained` / `model_deleted` (a model registered into a project, or gone) drop
every entry, as those events do not name a project and are rare. So a change reaches
this replica at event speed (the replica that made it dispatches its own event
before answering), and within the TTL even when the event is lost. While the event
listener is not subscribed (Redis down, reconnecting) nothing is cached: every
project request reads SQL, the source of truth.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from control_plane.core import metrics
from control_plane.core.settings import default
from control_plane.core.single_flight import SingleFlight
from control_plane.events.schemas import ModelDeleted, ModelTrained, SlotChanged
from control_plane.routing.repository import get_project, project_model_ids, project_slots

_CACHE_HIT, _CACHE_MISS = metrics.cache_results("routing")


@dataclass(frozen=True)
class SlotRoute:
    id: int
    name: str
    model_id: int
    weight: int
    active: bool = True


@dataclass(frozen=True)
class ProjectRoutes:
    project_id: int
    sticky: bool
    salt: str
    slots: tuple[SlotRoute, ...]  # active slots, oldest first
    # The models the project's keys may see: those registered into the project and
    # those a slot of the project names, active or not.
    model_ids: frozenset[int]


class RoutingCache:
    def __init__(
        self,
        ttl_s: float = default("cache_ttl_s"),
        events_current: Callable[[], bool] = lambda: True,
    ) -> None:
        self._ttl = ttl_s
        self._events_current = events_current
        self._entries: dict[int, tuple[ProjectRoutes, float]] = {}
        # Bumped by every invalidation: a load that overlapped one may have read the
        # old slots, so its result is used once but not cached.
        self._generation = 0
        self._flights: SingleFlight[int, ProjectRoutes] = SingleFlight()

    async def routes(
        self, sessionmaker: async_sessionmaker[AsyncSession], project_id: int
    ) -> ProjectRoutes:
        trusted = self._events_current()
        entry = self._entries.get(project_id) if trusted else None
        if entry is not None and time.monotonic() - entry[1] < self._ttl:
            _CACHE_HIT.inc()
            return entry[0]
        _CACHE_MISS.inc()
        # One SQL read per project at a time, however many requests miss together.
        return await self._flights.load(
            project_id, lambda: self._load(sessionmaker, project_id, trusted)
        )

    async def _load(
        self, sessionmaker: async_sessionmaker[AsyncSession], project_id: int, trusted: bool
    ) -> ProjectRoutes:
        generation = self._generation
        async with sessionmaker() as session:
            project = await get_project(session, project_id)
            slots = await project_slots(session, project_id)
            registered = await project_model_ids(session, project_id)
            routes = ProjectRoutes(
                project_id=project.id,
                sticky=project.sticky,
                salt=project.salt,
                slots=tuple(
                    SlotRoute(s.id, s.name, s.model_id, s.weight) for s in slots if s.active
                ),
                model_ids=frozenset(registered).union(s.model_id for s in slots),
            )
        if trusted and generation == self._generation:
            self._entries[project_id] = (routes, time.monotonic())
        return routes

    def invalidate(self, project_id: int | None = None) -> None:
        self._generation += 1
        self._flights.detach(project_id)
        if project_id is None:
            self._entries.clear()
        else:
            self._entries.pop(project_id, None)

    async def on_slot_changed(self, event: SlotChanged) -> None:
        self.invalidate(event.project_id)

    async def on_model_changed(self, event: ModelTrained | ModelDeleted) -> None:
        self.invalidate()  # the event names no project: any entry may list the model
