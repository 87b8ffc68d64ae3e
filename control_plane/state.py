"""What the lifespan creates once per process, and how every layer finds it.

Only the app factory knows all of it; handlers and dependencies below ask the
`Components` registry for the one class they need (core/components.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from control_plane.core.components import Components
from control_plane.core.settings import Settings
from control_plane.events.bus import EventBus
from control_plane.keys.verifier import KeyVerifier
from control_plane.lifecycle.manager import ModelLifecycle
from control_plane.lifecycle.reconciler import Reconciler
from control_plane.manifests.store import ManifestStore
from control_plane.model_core.catalog import ModelCatalog
from control_plane.model_core.stats import InferenceStats
from control_plane.ratelimit.limiter import RateLimiter
from control_plane.routing.cache import RoutingCache
from control_plane.triton.client import TritonGateway


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: Redis | None
    triton: TritonGateway
    verifier: KeyVerifier
    limiter: RateLimiter
    events: EventBus
    manifests: ManifestStore
    models: ModelCatalog
    lifecycle: ModelLifecycle
    reconciler: Reconciler
    routing: RoutingCache = field(default_factory=RoutingCache)
    # What this replica measured about its predictions (every door records into it).
    stats: InferenceStats = field(default_factory=InferenceStats)

    def components(self) -> Components:
        components = Components()
        components.add(Settings, self.settings)
        components.add(AsyncEngine, self.engine)
        components.add(async_sessionmaker, self.sessionmaker)
        if self.redis is not None:
            components.add(Redis, self.redis)
        components.add(TritonGateway, self.triton)
        components.add(KeyVerifier, self.verifier)
        components.add(RateLimiter, self.limiter)
        components.add(EventBus, self.events)
        components.add(ManifestStore, self.manifests)
        components.add(ModelCatalog, self.models)
        components.add(ModelLifecycle, self.lifecycle)
        components.add(Reconciler, self.reconciler)
        components.add(RoutingCache, self.routing)
        components.add(InferenceStats, self.stats)
        return components
