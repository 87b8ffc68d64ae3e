"""Seed 002's `POST /api/inference/models/load`: import a model file, safely.

A thin door onto `control_plane.imports`: the file must lie in CONCH_IMPORT_DIR,
pickles need CONCH_ALLOW_PICKLE_IMPORT, the file goes through the `conch export`
exporter and its parity check in a child process, and the model is registered and
loaded like any other. An import that takes longer than CONCH_IMPORT_WAIT_S
answers 202 with a job to poll at `GET /api/inference/models/load/{job_id}`.
Only a write key restricted to no project may import: the model is global.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Path, status
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import async_sessionmaker

from control_plane.core.components import Components, SettingsDep, provided
from control_plane.core.openapi_errors import ErrorBody, error_responses
from control_plane.core.responses import OrjsonResponse
from control_plane.core.settings import Settings
from control_plane.events.bus import EventBus
from control_plane.imports.job_store import SharedImportJobs
from control_plane.imports.schemas import ImportJobRead, ModelLoadRequest, ModelLoadResponse
from control_plane.imports.service import ModelImports
from control_plane.keys.deps import GuardedRoute, WriteGlobalKey, route_matching
from control_plane.lifecycle.manager import ModelLifecycle
from control_plane.manifests.store import ManifestStore


@asynccontextmanager
async def _imports_lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Runs inside the app's lifespan (FastAPI nests an included router's), so the
    # components it needs exist; exports under way are stopped before they go.
    components: Components = app.state.components
    settings = components.get(Settings)
    redis = components.find(Redis)
    imports = ModelImports(
        settings,
        components.get(async_sessionmaker),
        components.get(EventBus),
        components.get(ManifestStore),
        components.get(ModelLifecycle),
        None
        if redis is None
        else SharedImportJobs(redis, settings.deployment_id, settings.import_job_ttl_s),
    )
    components.add(ModelImports, imports)
    try:
        yield
    finally:
        await imports.close()


router = APIRouter(
    prefix="/api/inference/models",
    tags=["engine"],
    route_class=GuardedRoute,
    lifespan=_imports_lifespan,
)

ImportsDep = Annotated[ModelImports, Depends(provided(ModelImports))]
JOB_ID = r"[0-9a-f]{32}"  # uuid4().hex, as ModelImports.start names a job
JobIdPath = Annotated[str, Path(pattern=f"^{JOB_ID}$", description="id of the import job")]


@router.post(
    "/load",
    response_model=ModelLoadResponse,
    responses={
        202: {"model": ImportJobRead, "description": "Still exporting: poll the job"},
        501: {"model": ErrorBody, "description": "The exporter's packages are not installed"},
        **error_responses(400, 404, 500, 503),
    },
)
async def load_model(
    body: ModelLoadRequest, key: WriteGlobalKey, imports: ImportsDep, settings: SettingsDep
) -> ModelLoadResponse | OrjsonResponse:
    """Export the file (parity-checked), register it and load it; 422 with the exporter's
    reason when it fails, and then nothing is kept."""
    job = imports.start(imports.admit(body, key.key_id))
    result = await imports.wait(job, settings.import_wait_s)
    if result is not None:
        return result
    return OrjsonResponse(job.read().model_dump(mode="json"), status_code=status.HTTP_202_ACCEPTED)


# Only job ids: a model named "load" keeps its own `GET models/load/info`.
jobs_router = APIRouter(route_class=route_matching("job_id", JOB_ID))


@jobs_router.get("/load/{job_id}", responses=error_responses(404))
async def read_import_job(
    job_id: JobIdPath, _: WriteGlobalKey, imports: ImportsDep
) -> ImportJobRead:
    """The job's state; `result` once loaded, `error` (the synchronous answer's body) once
    failed. Any replica answers (with Redis; else the one that took the import)."""
    return await imports.read(job_id)


router.include_router(jobs_router)
