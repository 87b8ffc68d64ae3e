"""The app factory: `uvicorn control_plane.app:create_app --factory`.

The lifespan creates, once per process, the SQL engine, the Redis client, the
Triton gRPC client, the key verifier, the rate limiter and the event listener;
handlers find them by type through `Components` (core/components.py, state.py).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from redis.asyncio import Redis

from control_plane.abtest.routes import router as abtest_router
from control_plane.console.mount import mount_console
from control_plane.core import tracing
from control_plane.core.access_log import configure_logging
from control_plane.core.body_limit import BodyLimit
from control_plane.core.errors import install_error_handlers
from control_plane.core.loopback import LoopbackOnly
from control_plane.core.redis_clients import listening_redis
from control_plane.core.request_id import RequestIdMiddleware
from control_plane.core.settings import Settings, get_settings
from control_plane.db.engine import create_engine, create_sessionmaker
from control_plane.db.migrate import upgrade
from control_plane.engine_api.async_routes import ENDPOINTS as ENGINE_ASYNC_ENDPOINTS
from control_plane.engine_api.async_routes import router as engine_async_router
from control_plane.engine_api.engine_routes import router as engine_management_router
from control_plane.engine_api.load_routes import router as model_load_router
from control_plane.engine_api.model_routes import router as engine_models_router
from control_plane.engine_api.monitoring_routes import router as engine_monitoring_router
from control_plane.engine_api.predict_routes import ENDPOINTS as ENGINE_PREDICT_ENDPOINTS
from control_plane.engine_api.predict_routes import router as engine_predict_router
from control_plane.engine_api.stream_routes import router as engine_stream_router
from control_plane.events.bus import EventBus
from control_plane.inference.front import LaneInFront
from control_plane.inference.routes import router as inference_router
from control_plane.inference.tabular import router as tabular_router
from control_plane.jobs.runtime import start_jobs
from control_plane.keys.routes import router as keys_router
from control_plane.keys.verifier import KeyVerifier
from control_plane.keys.watch import KeyWatch
from control_plane.lifecycle.manager import ModelLifecycle
from control_plane.lifecycle.reconciler import Reconciler
from control_plane.lifecycle.routes import router as engine_router
from control_plane.manifests.store import ManifestStore
from control_plane.metrics_route import router as metrics_router
from control_plane.model_core.admission import PriorityGate
from control_plane.model_core.catalog import ModelCatalog
from control_plane.projects.routes import router as projects_router
from control_plane.ratelimit.limiter import RateLimiter
from control_plane.registry.routes import router as registry_router
from control_plane.routing.cache import RoutingCache
from control_plane.slots.routes import router as slots_router
from control_plane.state import AppState
from control_plane.triton.client import TritonGateway
from control_plane.triton.passthrough import TritonPassthrough
from control_plane.v2.routes import LANE_ENDPOINTS as V2_LANE_ENDPOINTS
from control_plane.v2.routes import router as v2_router

logger = logging.getLogger(__name__)


def _request_redis(settings: Settings) -> Redis | None:
    if settings.redis_url is None:
        return None
    # Short timeouts: a stalled Redis must cost a request milliseconds, not seconds.
    return Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_connect_timeout_s,
        health_check_interval=settings.redis_health_check_interval_s,
    )


def _events_redis(settings: Settings) -> Redis | None:
    url = settings.events_redis_url
    if url is None:
        return None
    return listening_redis(
        url,
        connect_timeout_s=settings.events_connect_timeout_s,
        health_check_interval_s=settings.redis_health_check_interval_s,
    )


def create_app(settings: Settings | None = None, *, migrate: bool | None = None) -> FastAPI:
    """Build the ASGI app. `migrate` defaults to True for SQLite (the dev database)."""
    settings = settings or get_settings()
    # LOG_LEVEL, LOG_FORMAT, CONCH_ACCESS_LOG: JSON lines written off the event loop.
    configure_logging(settings.log_level, settings.log_output, access_log=settings.access_log)
    run_migrations = settings.database_url.startswith("sqlite") if migrate is None else migrate
    # Traces when an OTLP endpoint is configured (core/tracing.py): one provider per process.
    traces_to = tracing.traces_endpoint(settings.otlp_endpoint, settings.otlp_traces_endpoint)
    tracer_provider = tracing.create_provider(traces_to) if traces_to else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if run_migrations:
            await asyncio.to_thread(upgrade, settings.database_url)
        redis = _request_redis(settings)  # connects lazily: nothing to close yet
        # First: a REDIS_URL the limiter cannot share limits through refuses to start,
        # before anything that would need closing exists.
        limiter = RateLimiter(
            redis,
            settings.rate_limit,
            settings.rate_limit_fallback,
            namespace=settings.deployment_id,
            retry_redis_after_s=settings.rate_limit_redis_retry_s,
            warn_every_s=settings.rate_limit_warn_interval_s,
            max_tracked_keys=settings.rate_limit_max_tracked_keys,
            redis_timeout_s=settings.redis_timeout_s,
        )
        engine = create_engine(
            settings.database_url,
            pool_size=settings.sql_pool_size,
            max_overflow=settings.sql_max_overflow,
            sqlite_busy_timeout_s=settings.sqlite_busy_timeout_s,
        )
        events_redis = _events_redis(settings)
        secret = settings.secret_key.get_secret_value()
        sessionmaker = create_sessionmaker(engine)
        triton = TritonGateway(
            settings.triton_grpc_url,
            timeout_s=settings.triton_timeout_s,
            load_timeout_s=settings.model_load_timeout_s,
            coalesce_in_flight=settings.coalesce_in_flight,
            http_url=settings.triton_infer_http_url,
            liveness_timeout_s=settings.triton_liveness_timeout_s,
            unload_wait_s=settings.triton_unload_wait_s,
            unload_poll_s=settings.triton_unload_poll_s,
            probe_concurrency=settings.triton_probe_concurrency,
        )
        manifests = ManifestStore(
            settings.model_repository, max_entries=settings.manifest_cache_max_entries
        )
        lifecycle = ModelLifecycle(
            triton,
            sessionmaker,
            settings.model_repository,
            max_loaded=settings.max_loaded_models,
            request_wait_s=settings.model_load_wait_s,
            load_timeout_s=settings.model_load_timeout_s,
            manifests=manifests,
            retry_min_s=settings.load_retry_min_s,
            retry_max_s=settings.load_retry_max_s,
            failed_unload_wait_s=settings.failed_load_unload_wait_s,
            deleted_remembered=settings.deleted_models_remembered,
        )
        events = EventBus(
            events_redis,
            settings.model_events_channel,
            publish_timeout_s=settings.events_publish_timeout_s,
            reconnect_min_s=settings.events_reconnect_min_s,
            reconnect_max_s=settings.events_reconnect_max_s,
            dedupe_size=settings.events_dedupe_size,
        )
        state = AppState(
            settings=settings,
            engine=engine,
            sessionmaker=sessionmaker,
            redis=redis,
            triton=triton,
            verifier=KeyVerifier(
                secret,
                settings.key_cache_ttl_s,
                settings.key_cache_max_entries,
                events_current=events.is_current,
                last_used_interval_s=settings.key_last_used_interval_s,
            ),
            routing=RoutingCache(settings.cache_ttl_s, events_current=events.is_current),
            limiter=limiter,
            events=events,
            manifests=manifests,
            models=ModelCatalog(
                manifests,
                max_entries=settings.runtime_cache_max_entries,
                ttl_s=settings.cache_ttl_s,
                events_current=events.is_current,
            ),
            lifecycle=lifecycle,
            reconciler=Reconciler(
                lifecycle,
                sessionmaker,
                settings.reconcile_interval_s,
                watch_triton_s=settings.triton_watch_interval_s,
            ),
        )
        state.events.on("key_revoked", state.verifier.on_key_revoked)
        state.events.on("slot_changed", state.routing.on_slot_changed)
        state.events.on("model_trained", state.routing.on_model_changed)
        state.events.on("model_deleted", state.routing.on_model_changed)
        state.events.on("model_deleted", state.models.on_model_deleted)
        state.events.on("model_trained", state.models.on_model_registered)
        state.events.on("model_deleted", state.manifests.on_model_deleted)
        # Events missed while disconnected may hide slot changes, revocations, deletions.
        state.events.on_subscribe(state.routing.invalidate)
        state.events.on_subscribe(state.verifier.clear)
        state.events.on_subscribe(state.models.invalidate)
        state.reconciler.attach(state.events)
        state.events.start()
        state.reconciler.start()  # the first pass runs now, not after a whole period
        app.state.conch = state
        app.state.components = state.components()
        # Open WebSockets hold their key: a revocation closes them (keys/watch.py).
        key_watch = KeyWatch()
        state.events.on("key_revoked", key_watch.on_key_revoked)
        state.events.on_subscribe(key_watch.recheck)
        app.state.components.add(KeyWatch, key_watch)
        if settings.predict_admission_limit > 0:
            app.state.components.add(PriorityGate, PriorityGate(settings.predict_admission_limit))
        jobs = start_jobs(app.state.components, settings, redis)
        # The Open Inference Protocol door forwards to Triton's HTTP port (control_plane/v2).
        passthrough = None
        if settings.triton_http_url:
            passthrough = TritonPassthrough(
                settings.triton_http_url, timeout_s=settings.triton_timeout_s
            )
            app.state.components.add(TritonPassthrough, passthrough)
        # What start-up allocated lives as long as the app: out of the collector's
        # sight, so that a full collection under load walks only what requests made.
        gc.freeze()
        if tracer_provider is not None:
            tracing.start(tracer_provider)
        try:
            yield
        finally:
            if jobs is not None:
                await jobs.stop()
            await state.events.stop()
            await state.reconciler.stop()
            await state.lifecycle.close()
            await state.triton.close()
            if passthrough is not None:
                await passthrough.close()
            await state.limiter.aclose()
            await state.verifier.drain()
            for client in (redis, events_redis):
                if client is not None:
                    await client.aclose()
            await engine.dispose()
            if tracer_provider is not None:
                await tracing.stop(tracer_provider)

    app = LaneInFront(
        title="Conch control plane",
        summary="Recommendations and predictions served by NVIDIA Triton.",
        version="0.1.0",
        lifespan=lifespan,
    )
    lane_endpoints = (*ENGINE_PREDICT_ENDPOINTS, *ENGINE_ASYNC_ENDPOINTS)
    # In front of every middleware, behind the server span when tracing (inference/front.py).
    app.put_lane_in_front(
        lane_endpoints,
        V2_LANE_ENDPOINTS,
        loopback_only=settings.uses_development_secret,
        traced=tracer_provider is not None,
    )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if settings.uses_development_secret:
        app.add_middleware(LoopbackOnly)
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app)
    app.include_router(inference_router)
    app.include_router(tabular_router)
    app.include_router(engine_predict_router)
    app.include_router(engine_async_router)
    app.include_router(engine_stream_router)
    app.include_router(metrics_router)
    app.include_router(v2_router)
    app.include_router(model_load_router)
    # Seed 002's model management, monitoring and engine management (GuardedRoute routers).
    for engine_api in (engine_models_router, engine_monitoring_router, engine_management_router):
        app.include_router(engine_api, prefix="/api/inference")
    routers = (
        projects_router, registry_router, slots_router, keys_router, abtest_router, engine_router,
    )  # fmt: skip
    for router in routers:
        app.include_router(router, prefix="/api/v1")
    mount_console(app)  # /console: the web console (control_plane/console)
    return app
