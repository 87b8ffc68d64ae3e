"""/api/v1/engine: this replica's Triton, its loaded models and where time goes."""

from __future__ import annotations

from fastapi import APIRouter

from control_plane.core import metrics
from control_plane.core.components import ComponentsDep
from control_plane.core.errors import TritonError
from control_plane.core.openapi_errors import error_responses
from control_plane.events.bus import EventBus
from control_plane.keys.deps import GuardedRoute, ReadGlobalKey
from control_plane.lifecycle.manager import ModelLifecycle
from control_plane.lifecycle.reconciler import Reconciler
from control_plane.lifecycle.schemas import EngineModel, EngineStatus
from control_plane.lifecycle.stats import summarize
from control_plane.triton.client import TritonGateway

router = APIRouter(tags=["engine"], route_class=GuardedRoute)


@router.get("/engine", responses=error_responses(502, 503, 504))
async def engine_status(_: ReadGlobalKey, components: ComponentsDep) -> EngineStatus:
    triton, lifecycle = components.get(TritonGateway), components.get(ModelLifecycle)
    live = await triton.is_live()
    metadata = await triton.server_metadata() if live else {}
    models: list[EngineModel] = []
    for name in lifecycle.loaded():
        try:
            summary = summarize(await triton.statistics(name))
        except TritonError:
            summary = summarize({})
        status = lifecycle.statuses[name]
        models.append(
            EngineModel(
                triton_name=name,
                state=status.state.value,
                pinned=name in lifecycle.pinned,
                last_used_at=status.last_used_at,
                load_error=status.load_error,
                queue_ms_total=summary["queue_ms_total"],
                compute_ms_total=summary["compute_ms_total"],
                request_count=summary["request_count"],
            )
        )
    return EngineStatus(
        server=str(metadata.get("name", "triton")),
        version=str(metadata.get("version", "unknown")),
        live=live,
        max_loaded_models=lifecycle.max_loaded,
        loaded_models=models,
        queue_ms_total=sum(m.queue_ms_total for m in models),
        compute_ms_total=sum(m.compute_ms_total for m in models),
        reconciler=components.get(Reconciler).snapshot(),
        listener_connected=components.get(EventBus).subscribed.is_set(),
        counters=metrics.snapshot("lifecycle.", "events."),
    )
