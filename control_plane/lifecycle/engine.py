"""Seed 002's engine operations on this replica: apply the configuration, restart, clear.

The configuration is one SQL row for every replica (`tuning.py`); each replica applies
it here, from the management API on the replica that stored it and from the
reconciler (woken by `engine_config_changed`, and on every pass) elsewhere. A
revision already applied, or an older one read late, changes nothing.

Reloads go one model at a time through `ModelLifecycle.retune`: Triton swaps each in
place, so requests keep being served throughout and none fails.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from control_plane.core import metrics
from control_plane.core.errors import ConchError, TritonError
from control_plane.lifecycle.manager import ModelLifecycle
from control_plane.lifecycle.status import LoadState
from control_plane.lifecycle.tuning import EngineTuning

logger = logging.getLogger(__name__)


@dataclass
class Reloaded:
    reloaded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # name -> Triton's reason


@dataclass
class Cleared:
    unloaded: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # name -> why it stays loaded


async def apply_tuning(lifecycle: ModelLifecycle, tuning: EngineTuning) -> Reloaded | None:
    """Apply a stored configuration; None when this revision (or a newer one) already is
    (models whose reload failed are then tried again). Loaded models are reloaded only
    when the batching changed."""
    async with lifecycle.tuning_lock:
        current = lifecycle.tuning
        if tuning.revision <= current.revision:
            if lifecycle.untuned:
                await _reload(lifecycle, sorted(lifecycle.untuned))
            return None
        lifecycle.tuning = tuning
        lifecycle.max_loaded = tuning.model_cache_size or lifecycle.default_max_loaded
        metrics.LIFECYCLE_ENGINE_CONFIG_APPLIED.inc()
        logger.info("engine configuration revision %d applied", tuning.revision)
        result = Reloaded()
        if tuning.batching != current.batching:
            result = await _reload_all(lifecycle)
    await lifecycle.evict()  # a smaller cache size takes effect now
    return result


async def restart(lifecycle: ModelLifecycle) -> Reloaded:
    """Reload every loaded model (fresh backend instances), each swapped in place."""
    async with lifecycle.tuning_lock:
        lifecycle.generation += 1  # a changed config: Triton reloads even an unchanged model
        metrics.LIFECYCLE_ENGINE_RESTARTS.inc()
        return await _reload_all(lifecycle)


async def _reload_all(lifecycle: ModelLifecycle) -> Reloaded:
    # A model still loading may have read the old configuration: it is reloaded once
    # its load is done (retune waits for it).
    names = sorted(
        name
        for name, status in lifecycle.statuses.items()
        if status.state in (LoadState.ready, LoadState.loading) or lifecycle.loading(name)
    )
    return await _reload(lifecycle, names)


async def _reload(lifecycle: ModelLifecycle, names: list[str]) -> Reloaded:
    result = Reloaded()
    for name in names:
        try:
            reloaded = await lifecycle.retune(name)
        except ConchError as exc:  # one refusal must not stop the others
            metrics.LIFECYCLE_RETUNE_FAILURES.inc()
            logger.warning("could not reload %s with the engine configuration: %s", name, exc)
            lifecycle.untuned.add(name)
            result.failed[name] = exc.message
            continue
        if reloaded:
            result.reloaded.append(name)
        else:  # not loaded any more: its next load reads the configuration
            lifecycle.untuned.discard(name)
    return result


async def clear_cache(lifecycle: ModelLifecycle) -> Cleared:
    """Unload every loaded model an active slot does not pin and no request is using.
    They stay unloaded until asked for (a request loads one again on demand)."""
    result = Cleared()
    for name in lifecycle.loaded():
        if name in lifecycle.pinned:
            result.kept[name] = "pinned: an active deployment slot serves it"
            continue
        if lifecycle.triton.in_flight[name] > 0:
            result.kept[name] = "in use: requests are being served by it"
            continue
        status = lifecycle.status(name)
        status.evicted = True  # before the unload: reconcile must not load it back
        try:
            await lifecycle.unload(name)
        except TritonError as exc:  # still loaded, with the reason
            status.evicted = False
            result.kept[name] = exc.message
            continue
        result.unloaded.append(name)
    metrics.LIFECYCLE_CACHE_CLEARS.inc()
    return result
