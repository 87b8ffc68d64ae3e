"""Loads, warm-ups, unloads and eviction of models in this replica's Triton.

Every inference passes through `ensure` (installed as the gateway's loader): a
ready model costs a dict lookup; a cold one starts ONE load shared by every
request that wants it (single-flight), and each request waits for it only as long
as its deadline allows, then gets 503 + Retry-After while the load goes on.
Pinned models (those in an active slot) are never evicted; the others are
unloaded least-recently-used beyond `max_loaded`.

Every load passes the engine configuration (seed 002, `tuning.py`) as Triton's
config override, so a model loaded first, again after an eviction, or after a
restart always runs with the stored batching; `ensure` also refuses a request
beyond the configured `max_concurrent_requests` (503 + Retry-After).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from control_plane.core import metrics
from control_plane.core.errors import (
    ConchError,
    ConflictError,
    ModelLoadError,
    ModelNotFoundError,
    ServiceUnavailableError,
    TritonError,
    TritonTimeoutError,
    TritonUnavailableError,
)
from control_plane.core.settings import default
from control_plane.lifecycle.queue import LoadQueue
from control_plane.lifecycle.registered import RegistrationGuard, record_load_error
from control_plane.lifecycle.status import LoadState, ModelStatus
from control_plane.lifecycle.tuning import EngineTuning, override_json
from control_plane.lifecycle.warmup import warm
from control_plane.manifests.store import ManifestStore
from control_plane.triton.client import TritonGateway

logger = logging.getLogger(__name__)


class ModelLoadingError(ServiceUnavailableError):
    """The model is being loaded and will not be ready within this request's deadline."""


class EngineBusyError(ServiceUnavailableError):
    """This replica already has `max_concurrent_requests` requests inside Triton."""


# A request refused for concurrency is worth retrying almost at once.
_BUSY_RETRY_AFTER_S = 1.0
_LOADED = metrics.MODEL_LOAD_SECONDS.labels("loaded")
_LOAD_FAILED = metrics.MODEL_LOAD_SECONDS.labels("failed")


class ModelLifecycle:
    def __init__(
        self,
        triton: TritonGateway,
        sessionmaker: async_sessionmaker[AsyncSession],
        repository: Path,
        *,
        max_loaded: int,
        request_wait_s: float,
        load_timeout_s: float,
        manifests: ManifestStore,
        retry_min_s: float = default("load_retry_min_s"),
        retry_max_s: float = default("load_retry_max_s"),
        failed_unload_wait_s: float = default("failed_load_unload_wait_s"),
        deleted_remembered: int = default("deleted_models_remembered"),
    ) -> None:
        self.triton = triton
        self.manifests = manifests
        self.sessionmaker = sessionmaker
        self.repository = repository
        self.max_loaded = max_loaded
        self.default_max_loaded = max_loaded  # when the engine config sets no cache size
        # The engine configuration applied here (lifecycle/engine.py sets it) and the
        # restart generation: both go into every load's config override.
        self.tuning = EngineTuning()
        self.generation = 0
        # Explicit reloads per model: Triton ignores a load whose config it already
        # serves, so each reload changes the generation the override carries.
        self._reloads: Counter[str] = Counter()
        self.tuning_lock = asyncio.Lock()
        # Loaded models whose reload with the configuration failed: retried each pass.
        self.untuned: set[str] = set()
        self.request_wait_s = request_wait_s
        self.load_timeout_s = load_timeout_s
        # A failed load is retried automatically after retry_min_s, doubling to retry_max_s.
        self.retry_min_s, self.retry_max_s = retry_min_s, retry_max_s
        # A model that failed to load or warm is unloaded at once (a half-loaded model
        # must not linger), waiting this long for Triton to let it go.
        self.failed_unload_wait_s = failed_unload_wait_s
        self.statuses: dict[str, ModelStatus] = {}
        self.pinned: frozenset[str] = frozenset()
        self._loads: dict[str, asyncio.Task[None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._queue = LoadQueue()
        self._evict_lock = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()
        # SQL decides what may be loaded; names heard to be deleted are refused at once.
        self.registration = RegistrationGuard(sessionmaker, deleted_remembered)
        # Bad entries of the model repository (name -> reason), from the last scan:
        # never handed to Triton, whose reason for them says nothing useful.
        self.bad_entries: dict[str, str] = {}
        triton.loader = self.ensure
        triton.on_not_loaded = self.forget

    def status(self, name: str) -> ModelStatus:
        status = self.statuses.get(name)
        if status is None:
            status = self.statuses[name] = ModelStatus(name)
        return status

    def loading(self, name: str) -> bool:
        return name in self._loads

    def loaded(self) -> list[str]:
        return sorted(n for n, s in self.statuses.items() if s.state is LoadState.ready)

    def repository_problems(self) -> dict[str, str]:
        """Bad repository entries and models Triton refused to load here: name -> reason."""
        refused = {
            name: status.load_error
            for name, status in self.statuses.items()
            if status.state is LoadState.failed and status.load_error
        }
        return dict(sorted({**refused, **self.bad_entries}.items()))

    # --- the request path -------------------------------------------------------------

    async def ensure(self, name: str) -> None:
        """Called before every inference: ready models return at once."""
        status = self.statuses.get(name)
        deleted = self.registration.is_deleted(name)
        if status is not None and status.state is LoadState.ready and not deleted:
            status.touch()
            self._admit()
            return
        if deleted:  # 404 even while Triton still has it, unless registered again since
            await self.registration.check(name)
        status = self.status(name)
        status.touch()  # a cold model being asked for is the most recently used
        metrics.LIFECYCLE_ON_DEMAND_LOADS.inc()
        await self.wait_loaded(name, self.request_wait_s)
        self._admit()

    def _admit(self) -> None:
        """Seed 002's max_concurrent_requests, counted as requests inside Triton through
        this replica's gateway (every door's inference passes here). The gateway counts
        the request in the same step `ensure` returns in: no other request can slip in."""
        limit = self.tuning.max_concurrent_requests
        if limit is not None and self.triton.in_flight.total() >= limit:
            metrics.LIFECYCLE_CONCURRENCY_REFUSALS.inc()
            raise EngineBusyError(
                f"this replica is serving its maximum of {limit} concurrent requests; "
                "retry shortly",
                retry_after_s=_BUSY_RETRY_AFTER_S,
                max_concurrent_requests=limit,
            )

    def forget(self, name: str) -> None:
        """Triton says the model is not loaded (restart, someone else unloaded it)."""
        status = self.status(name)
        if status.state is LoadState.ready:
            status.mark_unloaded()

    async def wait_loaded(self, name: str, wait_s: float, *, retry_failed: bool = False) -> None:
        """Join (or start) the one load of `name`; wait for it at most `wait_s`."""
        status = self.status(name)
        if status.state is LoadState.ready:
            return
        if status.backing_off and not retry_failed:
            raise ModelLoadError(
                status.load_error or f"model {name!r} failed to load",
                triton_name=name,
                retry_after_s=round(status.retry_after_s, 1),
            )
        task = self._start_load(name)
        self._queue.hurry(name)  # someone waits: jump the queue of background loads
        try:
            await asyncio.wait_for(asyncio.shield(task), wait_s)
        except TimeoutError:
            raise ModelLoadingError(
                f"model {name!r} is loading; retry shortly",
                retry_after_s=max(1.0, wait_s / 2),
                triton_name=name,
            ) from None

    async def prepare(self, name: str) -> None:
        """Before a slot points at `name`: loaded and warmed here, or a refusal (409/503)."""
        self.status(name).touch()
        try:
            await self.wait_loaded(name, self.load_timeout_s, retry_failed=True)
        except ModelLoadError as exc:
            raise ConflictError(
                f"model cannot serve, the slot was not changed: {exc.message}",
                triton_name=name,
                load_error=exc.message,
            ) from exc

    async def reload(self, name: str) -> None:
        """Triton's load of a loaded model swaps in place: the old copy serves meanwhile."""
        status = self.status(name)
        async with self._lock(name):
            await self.registration.check(name)
            reason = self.bad_entries.get(name)
            if reason is not None:  # the load would fail, and take the serving copy with it
                raise ConflictError(
                    f"model {name!r} cannot be reloaded: its repository entry is bad ({reason})",
                    triton_name=name,
                    repository_error=reason,
                )
            try:
                self._reloads[name] += 1
                await self._triton_load(name)
                await self._warm(name)
            except (ModelLoadError, TritonError) as exc:
                if not isinstance(exc, TritonUnavailableError | TritonTimeoutError):
                    await self._fail(status, exc.message)
                raise
            status.mark_ready()
        await self._record_error(name, None)

    # --- loads in the background (events, reconcile, management API) -----------------

    def load_in_background(self, name: str, *, retry_failed: bool = False) -> None:
        status = self.status(name)
        if status.state in (LoadState.ready, LoadState.loading):
            return
        if status.backing_off and not retry_failed:
            return
        self._start_load(name)

    def _start_load(self, name: str) -> asyncio.Task[None]:
        task = self._loads.get(name)
        if task is None:
            self._queue.reset(name)
            task = asyncio.create_task(self._load(name), name=f"conch-load-{name}")
            self._loads[name] = task
            task.add_done_callback(lambda done: self._load_finished(name, done))
        return task

    def _load_finished(self, name: str, task: asyncio.Task[None]) -> None:
        if self._loads.get(name) is task:
            del self._loads[name]
        if not task.cancelled():
            task.exception()  # retrieved: failures were logged and recorded in _load

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def _load(self, name: str) -> None:
        queued = await self._queue.turn(name)
        try:
            await self._load_now(name)
        finally:
            if queued:
                self._queue.release()

    async def _load_now(self, name: str) -> None:
        status = self.status(name)
        async with self._lock(name):  # never overlaps an unload of the same model
            if status.state is LoadState.ready:
                return
            try:
                await self.registration.check(name)
            except ModelNotFoundError:
                self.statuses.pop(name, None)  # nothing to remember of an unregistered name
                raise
            status.state = LoadState.loading
            started = time.monotonic()
            try:
                self._refuse_bad_entry(name)
                await self._triton_load(name)
                await self._warm(name)
            except (TritonUnavailableError, TritonTimeoutError) as exc:
                # Triton itself is the problem, not the model: no backoff, no record.
                status.mark_unloaded()
                status.state = LoadState.unloaded
                metrics.LIFECYCLE_LOAD_ERRORS.inc()
                _LOAD_FAILED.observe(time.monotonic() - started)
                logger.warning("loading %s: %s", name, exc.message)
                raise
            except (ModelLoadError, TritonError) as exc:
                _LOAD_FAILED.observe(time.monotonic() - started)
                await self._fail(status, exc.message)
                raise
            except BaseException:
                status.state = LoadState.unloaded
                raise
            status.mark_ready()
            self.untuned.discard(name)  # loaded with the configuration in force
            if status.last_used == 0.0:
                status.last_used = time.monotonic()  # loaded now: not the first to evict
        elapsed = time.monotonic() - started
        _LOADED.observe(elapsed)
        metrics.LIFECYCLE_LOADS.inc()
        metrics.LIFECYCLE_MODEL_LOADS.labels(name).inc()
        logger.info("loaded and warmed %s in %.2fs", name, elapsed)
        await self._record_error(name, None)
        self._spawn(self.evict())

    async def _triton_load(self, name: str) -> None:
        """Every load, with the engine configuration as Triton's config override."""
        # Both counters only grow: each restart or reload gives the model a new value.
        generation = self.generation + self._reloads[name]
        config = await asyncio.to_thread(
            override_json, self.repository, name, self.tuning, generation
        )
        await self.triton.load(name, self.load_timeout_s, config=config)

    async def retune(self, name: str) -> bool:
        """Load a ready model again with the current engine configuration; False when
        it is not loaded (its next load applies the configuration anyway).

        Triton swaps it in place: the old copy serves until the new one is ready, and
        stays if Triton refuses the new config, so a refusal leaves the model serving.
        """
        status = self.status(name)
        async with self._lock(name):
            if status.state is not LoadState.ready:
                return False
            await self._triton_load(name)
            try:
                await self._warm(name)
            except TritonError as exc:  # the new copy cannot infer: it must not serve
                await self._fail(status, exc.message)
                raise
        self.untuned.discard(name)
        return True

    def _refuse_bad_entry(self, name: str) -> None:
        reason = self.bad_entries.get(name)
        if reason is not None:
            raise ModelLoadError(
                f"model {name!r} could not be loaded: its repository entry is bad ({reason})",
                triton_name=name,
            )

    async def _warm(self, name: str) -> None:
        await warm(self.triton, self.manifests, name)

    async def _fail(self, status: ModelStatus, reason: str) -> None:
        status.mark_failed(reason, retry_min_s=self.retry_min_s, retry_max_s=self.retry_max_s)
        metrics.LIFECYCLE_LOAD_FAILURES.inc()
        logger.warning(
            "model %s failed to load (attempt %d, retry in %.0fs): %s",
            status.triton_name, status.failures, status.retry_after_s, reason,
        )  # fmt: skip
        with contextlib.suppress(TritonError):  # a half-loaded model must not linger
            await self.triton.unload(status.triton_name, wait_s=self.failed_unload_wait_s)
        await self._record_error(status.triton_name, reason)

    async def _record_error(self, name: str, reason: str | None) -> None:
        await record_load_error(self.sessionmaker, name, reason)

    # --- unloads and eviction ---------------------------------------------------------

    async def unload(self, name: str) -> None:
        """Unloaded only once Triton says so: a refusal leaves it loaded, with the reason."""
        status = self.status(name)
        async with self._lock(name):
            await self._unload_in_triton(status)
            status.mark_unloaded()
        metrics.LIFECYCLE_UNLOADS.inc()
        logger.info("unloaded %s", name)

    async def _unload_in_triton(self, status: ModelStatus) -> None:
        name, before = status.triton_name, status.state
        status.state = LoadState.unloading
        try:
            await self.triton.unload(name)
        except TritonError as exc:
            status.mark_unload_failed(f"Triton did not unload {name!r}: {exc.message}", before)
            metrics.LIFECYCLE_UNLOAD_FAILURES.inc()
            raise
        except BaseException:  # cancelled mid-unload: Triton's answer is unknown
            status.state = before
            raise

    # --- models that left the registry ------------------------------------------------

    def retire_in_background(self, name: str) -> None:
        """`model_deleted`: refused from now on (requests get 404), unloaded soon after."""
        self.registration.mark_deleted(name)
        self._spawn(self._retire_logged(name))

    async def retire(self, name: str) -> bool:
        """Unload and forget a model SQL no longer registers; False if it is registered."""
        async with self._lock(name):  # after a load in progress, never during one
            try:
                await self.registration.check(name)
            except ModelNotFoundError:
                pass
            else:
                return False
            status = self.statuses.get(name)
            if status is None:
                await self.triton.unload(name)  # a no-op for Triton when not loaded
            else:  # kept, with the reason, while Triton refuses: the next pass retries
                await self._unload_in_triton(status)
            self.statuses.pop(name, None)
        metrics.LIFECYCLE_RETIRED.inc()
        logger.info("unloaded %s: it left the registry", name)
        return True

    async def _retire_logged(self, name: str) -> None:
        try:
            await self.retire(name)
        except ConchError as exc:  # Triton or SQL unreachable: the next pass retries
            logger.warning("could not unload deleted model %s: %s", name, exc.message)

    async def evict(self) -> list[str]:
        """Unload least-recently-used unpinned models beyond `max_loaded`; never one in use."""
        evicted: list[str] = []
        async with self._evict_lock:
            unpinned = [
                s
                for s in self.statuses.values()
                if s.state is LoadState.ready and s.triton_name not in self.pinned
            ]
            excess = len(unpinned) - self.max_loaded
            for status in sorted(unpinned, key=lambda s: s.last_used):
                if excess <= 0:
                    break
                name = status.triton_name
                if self.triton.in_flight[name] > 0 or name in self._loads:
                    continue
                status.evicted = True  # before the unload: reconcile must not reload it
                try:
                    await self.unload(name)
                except TritonError as exc:  # still loaded: it frees nothing
                    status.evicted = False
                    logger.warning("could not evict %s: %s", name, exc.message)
                    continue
                metrics.LIFECYCLE_EVICTIONS.inc()
                evicted.append(name)
                excess -= 1
        return evicted

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        for task in [*self._loads.values(), *self._background]:
            task.cancel()
        for task in [*self._loads.values(), *self._background]:
            with contextlib.suppress(BaseException):
                await task
