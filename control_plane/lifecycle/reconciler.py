"""SQL is the source of truth: converge this replica's Triton on it, events or not.

The desired set is every model in an active slot (pinned), models registered
since the last pass (what a lost `model_trained` would have loaded) and models
used recently. Every pass unloads models that left the registry, whoever loaded
them back, and scans the model repository: bad entries are reported and skipped,
never a failed pass. A pass runs at start, after every (re)subscription to Redis
(events sent while disconnected are lost), on `slot_changed`, when Triton is
reachable again after an outage (a restarted Triton is empty), and every
`interval_s`, so a lost event delays convergence by at most one period. Each
pass also applies the engine configuration row (seed 002) before any load, so
`engine_config_changed` only wakes it, as `slot_changed` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from control_plane.core import metrics
from control_plane.core.errors import ConchError, TritonError
from control_plane.core.settings import default
from control_plane.core.tasks import cancel_and_wait
from control_plane.db.models import DeploymentSlot, Model
from control_plane.events.bus import EventBus
from control_plane.events.schemas import (
    EngineConfigChanged,
    ModelDeleted,
    ModelTrained,
    SlotChanged,
)
from control_plane.lifecycle.engine import apply_tuning
from control_plane.lifecycle.manager import ModelLifecycle
from control_plane.lifecycle.repository import RepositoryScanner
from control_plane.lifecycle.status import LoadState
from control_plane.lifecycle.tuning import stored_tuning

logger = logging.getLogger(__name__)

# Triton's states of a model that holds (or is about to hold) a backend.
_IN_TRITON = ("READY", "LOADING", "UNLOADING")


async def pinned_models(session: AsyncSession) -> set[str]:
    query = (
        select(Model.triton_name)
        .join(DeploymentSlot, DeploymentSlot.model_id == Model.id)
        .where(DeploymentSlot.active.is_(True))
        .distinct()
    )
    return set((await session.scalars(query)).all())


def adopt(
    lifecycle: ModelLifecycle, index: dict[str, dict[str, str]], registered: Iterable[str]
) -> None:
    """Align memory with Triton's repository index (a restart, an operator's unload)."""
    for name in registered:
        state = index.get(name, {}).get("state")
        status = lifecycle.statuses.get(name)
        if lifecycle.loading(name) or (status and status.state is LoadState.unloading):
            continue  # a load or unload in progress will set the state itself
        if state == "READY" and (status is None or status.state is not LoadState.ready):
            lifecycle.status(name).mark_ready()
        elif state != "READY" and status is not None and status.state is LoadState.ready:
            status.mark_unloaded()


def recently_used(lifecycle: ModelLifecycle, window_s: float) -> set[str]:
    """Unpinned models used lately and not evicted by us: worth having back."""
    horizon = time.monotonic() - window_s
    recent = [
        s
        for s in lifecycle.statuses.values()
        if s.last_used >= horizon and not s.evicted and s.triton_name not in lifecycle.pinned
    ]
    recent.sort(key=lambda s: s.last_used, reverse=True)
    return {s.triton_name for s in recent[: lifecycle.max_loaded]}


class Reconciler:
    def __init__(
        self,
        lifecycle: ModelLifecycle,
        sessionmaker: async_sessionmaker[AsyncSession],
        interval_s: float,
        watch_triton_s: float = default("triton_watch_interval_s"),
    ) -> None:
        self.lifecycle = lifecycle
        self.sessionmaker = sessionmaker
        self.interval_s = interval_s
        # How often Triton's liveness is checked: a restart is noticed within about this.
        self.watch_triton_s = watch_triton_s
        self.passes = 0
        self.last_pass_at: float | None = None
        self.last_error: str | None = None
        # Registered names as of the last pass (None before the first): names that
        # appear later are new models whose model_trained this replica may have missed.
        self._registered: set[str] | None = None
        self._scanner = RepositoryScanner(lifecycle.repository)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None

    def attach(self, events: EventBus) -> None:
        events.on("model_trained", self.on_model_trained)
        events.on("model_deleted", self.on_model_deleted)
        events.on("slot_changed", self.on_slot_changed)
        events.on("engine_config_changed", self.on_engine_config_changed)
        events.on_subscribe(self.wake)

    def wake(self) -> None:
        self._wake.set()

    # Handlers return at once: the work runs in background tasks, never in a request.
    async def on_model_trained(self, event: ModelTrained) -> None:
        metrics.LIFECYCLE_EVENTS.labels("model_trained").inc()
        if self._registered is not None:
            self._registered.add(event.triton_name)  # handled here: not "fresh" later
        self.lifecycle.registration.registered([event.triton_name])  # (again, maybe)
        self.lifecycle.status(event.triton_name).touch()  # new: most recently wanted
        self.lifecycle.load_in_background(event.triton_name, retry_failed=True)

    async def on_model_deleted(self, event: ModelDeleted) -> None:
        metrics.LIFECYCLE_EVENTS.labels("model_deleted").inc()
        self.lifecycle.retire_in_background(event.triton_name)

    async def on_slot_changed(self, event: SlotChanged) -> None:
        metrics.LIFECYCLE_EVENTS.labels("slot_changed").inc()
        self.wake()

    async def on_engine_config_changed(self, event: EngineConfigChanged) -> None:
        metrics.LIFECYCLE_EVENTS.labels("engine_config_changed").inc()
        if event.revision > self.lifecycle.tuning.revision:
            self.wake()  # the pass reads the row itself: SQL, not the event, is the truth

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="conch-reconciler")
        if self._watch is None:
            self._watch = asyncio.create_task(self._watch_triton(), name="conch-triton-watch")

    async def stop(self) -> None:
        task, self._task = self._task, None
        watch, self._watch = self._watch, None
        await cancel_and_wait(watch)
        await cancel_and_wait(task)

    async def _watch_triton(self) -> None:
        """A pass as soon as Triton answers again after an outage: it came back empty
        (restarted), and the next period would leave the pinned models unloaded, and
        this replica unready, for up to `interval_s`. The pass refreshes what the
        lifecycle believes is loaded from Triton's own index (adopt)."""
        live = True
        while True:
            await asyncio.sleep(self.watch_triton_s)
            was_live, live = live, await self.lifecycle.triton.is_live()
            if live and not was_live:
                metrics.LIFECYCLE_TRITON_RETURNS.inc()
                logger.warning("Triton is reachable again: reconciling now")
                self.wake()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            pause = self.interval_s
            started = time.perf_counter()
            try:
                await self.reconcile()
                self.last_error = None
                metrics.RECONCILE_LAST_SUCCESS.set(time.time())
            except (SQLAlchemyError, TritonError, OSError) as exc:
                self.last_error = str(exc)
                pause = min(pause, 5.0)  # e.g. Triton still starting beside us
                metrics.LIFECYCLE_RECONCILE_ERRORS.inc()
                logger.warning("reconcile failed (next in %.0fs): %s", pause, exc)
            metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
            # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation
            # that lands as the event is set, and stop() then waited forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._wake.wait()

    async def reconcile(self) -> None:
        # Copied before reading SQL: a name an event adds meanwhile is then surely in
        # the rows read, never mistaken for a deleted model.
        known = None if self._registered is None else set(self._registered)
        async with self.sessionmaker() as session:
            rows = (await session.execute(select(Model.id, Model.triton_name))).all()
            pinned = await pinned_models(session)
            tuning = await stored_tuning(session)
        registered = {name: model_id for model_id, name in rows}
        lifecycle = self.lifecycle
        lifecycle.pinned = frozenset(pinned)
        lifecycle.bad_entries = await asyncio.to_thread(self._scanner.scan)
        lifecycle.registration.registered(registered)
        for name in (known or set()) - registered.keys():  # deleted, heard of or not
            lifecycle.registration.mark_deleted(name)
        gone = (lifecycle.registration.deleted() | set(lifecycle.statuses)) - registered.keys()
        index = await lifecycle.triton.repository_index([*registered, *gone])
        adopt(lifecycle, index, registered)
        # After adopt (models a previous process loaded are retuned too), before any
        # load below (each reads it).
        await apply_tuning(lifecycle, tuning)

        fresh = set() if known is None else registered.keys() - known
        for name in fresh:
            lifecycle.status(name).touch()

        recent = recently_used(lifecycle, window_s=max(10 * self.interval_s, 300.0))
        for name in pinned | fresh | recent:
            lifecycle.load_in_background(name)
        for name in sorted(gone):  # on every pass: whoever loaded it, it stays unloaded
            if name in lifecycle.statuses or index.get(name, {}).get("state") in _IN_TRITON:
                await self._retire(name)
        self._registered = set(registered)
        await lifecycle.evict()
        self.passes += 1
        self.last_pass_at = time.time()
        metrics.LIFECYCLE_RECONCILES.inc()

    async def _retire(self, name: str) -> None:
        try:
            await self.lifecycle.retire(name)
        except ConchError as exc:  # one model Triton will not unload must not stop the pass
            logger.warning("could not unload %s, which is not registered: %s", name, exc.message)

    def snapshot(self) -> dict[str, Any]:
        return {
            "passes": self.passes,
            "last_pass_at": self.last_pass_at,
            "interval_s": self.interval_s,
            "last_error": self.last_error,
        }
