"""Import a model file: export it (child process), register it, load it; or leave no trace.

One import is a job: admitted synchronously (the import directory, the path, the
type and the pickle rule answer 403/404/422 before anything runs), then run as a
task that the request awaits for `CONCH_IMPORT_WAIT_S`; past that the caller gets
202 and polls the job. The replica that took the import runs it and keeps the job
in memory; with Redis, a copy lets every replica answer the poll (job_store.py).
A restart cancels the exports under way.

Nothing is left half-done: the exporter publishes atomically or not at all; when
the registration or the load fails afterwards, the SQL row is deleted, the model
unloaded and the directory the export published removed (never one that was
already there, nor a row that was).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from conch_manifest.names import InvalidModelNameError, check_model_name
from control_plane.core.errors import (
    ConchError,
    NotFoundError,
    PermissionDeniedError,
    ServiceUnavailableError,
    ValidationError,
)
from control_plane.core.settings import Settings
from control_plane.db.audit import audit
from control_plane.db.models import Model
from control_plane.events.bus import EventBus, take_pending
from control_plane.imports import paths
from control_plane.imports.job_store import HEARTBEAT_S, SharedImportJobs
from control_plane.imports.runner import ExportTimeoutError, run_exporter
from control_plane.imports.schemas import (
    ImportFailure,
    ImportJobRead,
    ImportStep,
    JobStatus,
    ModelLoadRequest,
    ModelLoadResponse,
    ParityReport,
    compile_note,
)
from control_plane.lifecycle.manager import ModelLifecycle
from control_plane.manifests.store import ManifestStore
from control_plane.registry import service as registry

logger = logging.getLogger(__name__)

MAX_NAME_LENGTH = 100  # the exporters' limit (the Triton name adds a content hash)


class ExporterUnavailableError(ConchError):
    """This server cannot run that exporter (its packages are not installed)."""

    status_code = 501


@dataclass
class ImportJob:
    id: str
    request: ModelLoadRequest
    source: paths.ImportSource
    name: str
    key_id: int | None
    started: float = field(default_factory=time.monotonic)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    status: JobStatus = "queued"
    finished_at: datetime | None = None
    result: ModelLoadResponse | None = None
    error: ConchError | None = None
    task: asyncio.Task[ModelLoadResponse] | None = None
    copier: asyncio.Task[None] | None = None  # keeps the Redis copy current (job_store.py)
    workdir: Path | None = None  # the private copy's directory, named in exporter messages

    def read(self) -> ImportJobRead:
        error = None
        if self.error is not None:
            error = ImportFailure(
                error=type(self.error).__name__,
                message=self.error.message,
                details=self.error.details,
            )
        return ImportJobRead(
            job_id=self.id,
            status=self.status,
            model_path=self.source.shown,
            model_type=self.request.model_type,
            name=self.name,
            created_at=self.created_at,
            finished_at=self.finished_at,
            result=self.result,
            error=error,
        )


class ModelImports:
    """The import jobs of this process; one per app (engine_api/load_routes.py)."""

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        events: EventBus,
        manifests: ManifestStore,
        lifecycle: ModelLifecycle,
        shared: SharedImportJobs | None = None,
    ) -> None:
        self.settings = settings
        self.shared = shared  # None without Redis: one replica, its memory is enough
        self.sessionmaker = sessionmaker
        self.events = events
        self.manifests = manifests
        self.lifecycle = lifecycle
        self.jobs: OrderedDict[str, ImportJob] = OrderedDict()
        self._exports = asyncio.Semaphore(settings.import_concurrency)

    # --- admission: everything the caller got wrong, before anything runs -------------

    def admit(self, body: ModelLoadRequest, key_id: int | None) -> ImportJob:
        import_dir = self.settings.import_dir
        if import_dir is None:
            raise PermissionDeniedError(
                "model import is not configured on this server (CONCH_IMPORT_DIR)",
                setting="CONCH_IMPORT_DIR",
            )
        model_type = paths.check_model_type(body.model_type)
        source = paths.resolve_source(import_dir, body.model_path)
        paths.check_pickle_allowed(
            model_type, source.path, self.settings.allow_pickle_import, source.shown
        )
        if model_type == "torchscript" and not (body.input_shape or body.sample_data):
            raise ValidationError(
                "a torchscript import needs input_shape (one sample, without the batch axis) "
                "or sample_data"
            )
        if model_type == "torchscript" and body.compile_model:
            # Refused, not served uncompiled with compiled=false: a caller that asked for it
            # and never reads `compiled` would believe it got it. Nothing has run yet, so
            # resending without it (or exporting to ONNX) costs nothing.
            raise ValidationError(
                "compile_model is not available for torchscript (the pytorch backend serves "
                "the archive as saved); send compile_model=false, or export the module to "
                "ONNX (conch export torch --format onnx --optimize)",
                model_type=model_type,
                compile_model=True,
            )
        job = ImportJob(uuid.uuid4().hex, body, source, _model_name(body, source), key_id)
        return job

    def start(self, job: ImportJob) -> ImportJob:
        self.jobs[job.id] = job
        self._forget_old()
        job.task = asyncio.create_task(self._run(job), name=f"conch-import-{job.id}")
        job.task.add_done_callback(lambda done: _retrieve(done))
        if self.shared is not None:
            job.copier = asyncio.create_task(self._copy_while_running(job, self.shared))
        return job

    async def _copy_while_running(self, job: ImportJob, shared: SharedImportJobs) -> None:
        assert job.task is not None
        while True:
            try:
                await shared.publish(job.read())
            except RedisError as exc:  # the poll on this replica still answers
                logger.warning("could not copy import job %s to Redis: %s", job.id, exc)
            if job.task.done():
                return
            await asyncio.wait({job.task}, timeout=HEARTBEAT_S)

    async def wait(self, job: ImportJob, wait_s: float) -> ModelLoadResponse | None:
        """The result within `wait_s`, its error raised, or None while it still runs."""
        assert job.task is not None
        done, _ = await asyncio.wait({job.task}, timeout=wait_s)
        if not done:
            return None
        return job.task.result()  # raises the job's ConchError

    async def read(self, job_id: str) -> ImportJobRead:
        """The job's state, from this replica's memory or from the copy of the one
        running it."""
        job = self.jobs.get(job_id)
        if job is not None:
            return job.read()
        copied = None if self.shared is None else await self.shared.read(job_id)
        if copied is None:
            raise NotFoundError(f"import job {job_id[:64]!r} not found", job_id=job_id[:64])
        return copied

    def _forget_old(self) -> None:
        finished = [j for j in self.jobs.values() if j.finished_at is not None]
        for job in finished[: max(0, len(finished) - self.settings.import_jobs_remembered)]:
            del self.jobs[job.id]

    async def close(self) -> None:
        tasks = [t for job in self.jobs.values() for t in (job.task, job.copier) if t is not None]
        for task in tasks:
            task.cancel()  # each stops its exporter child (runner.py)
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    # --- the job ---------------------------------------------------------------------

    async def _run(self, job: ImportJob) -> ModelLoadResponse:
        try:
            job.result = await self._import(job)
            job.status = "loaded"
            return job.result
        except ConchError as exc:
            job.error, job.status = exc, "failed"
            raise
        except Exception as exc:  # logged with its trace; the caller gets a 500 body
            logger.exception("import %s failed unexpectedly", job.id)
            job.error, job.status = ConchError("the import failed; see the server log"), "failed"
            raise job.error from exc
        finally:
            job.finished_at = datetime.now(UTC)

    async def _import(self, job: ImportJob) -> ModelLoadResponse:
        async with self._exports:
            job.status = "exporting"
            outcome = await self._export(job)
        export_s = time.monotonic() - job.started
        triton_name: str = outcome["triton_name"]
        published_now = not outcome["reused"]
        job.status = "registering"
        try:
            model, created = await self._register(job, triton_name)
        except BaseException:
            if published_now:
                await self._remove_directory(triton_name)
            raise
        register_s = time.monotonic() - job.started - export_s
        job.status = "loading"
        try:
            self.lifecycle.status(triton_name).touch()
            await self.lifecycle.wait_loaded(
                triton_name, self.settings.model_load_timeout_s, retry_failed=True
            )
        except BaseException as exc:
            await self._undo(model.id if created else None, triton_name, published_now)
            if isinstance(exc, ConchError):
                raise ValidationError(
                    f"the model was exported but did not load: {exc.message}; nothing was kept",
                    triton_name=triton_name,
                ) from exc
            raise
        load_time = time.monotonic() - job.started
        return await self._response(
            job, outcome, model, created, load_time,
            {"export": export_s, "register": register_s, "load": load_time - export_s - register_s},
        )  # fmt: skip

    async def _export(self, job: ImportJob) -> dict[str, Any]:
        request = job.request
        work = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="conch-import-"))
        job.workdir = work
        try:
            copy = await asyncio.to_thread(paths.copy_source, job.source, work)
            child_request = {
                "model_type": request.model_type,
                "model_path": str(copy),
                "name": job.name,
                "repository": str(self.settings.model_repository),
                "allow_pickle": self.settings.allow_pickle_import,
                "sample": request.sample_data,
                "input_shape": request.input_shape,
                "atol": request.atol,
                "rtol": request.rtol,
                "optimize": request.compile_model,
            }
            try:
                outcome: dict[str, Any] = await run_exporter(
                    child_request, work / "result.json", self.settings.import_timeout_s
                )
            except ExportTimeoutError as exc:
                raise ValidationError(f"{exc} (CONCH_IMPORT_TIMEOUT_S)") from None
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        if not outcome.get("ok"):
            raise self._export_failure(job, outcome)
        return outcome

    def _export_failure(self, job: ImportJob, outcome: dict[str, Any]) -> ConchError:
        reason = self._scrub(str(outcome.get("error", "the export failed")), job)
        steps = [
            _scrub_step(step, lambda text: self._scrub(text, job)) for step in outcome["steps"]
        ]
        failed = next((s["name"] for s in steps if s["status"] == "failed"), None)
        kind = outcome.get("kind")
        if kind == "dependency":
            return ExporterUnavailableError(
                f"this server cannot import {job.request.model_type} models: {reason}"
            )
        if kind == "triton":
            return ServiceUnavailableError(f"the parity check's Triton did not start: {reason}")
        if kind == "internal":
            logger.warning("import %s: exporter failed: %s", job.id, reason)
            return ConchError(f"the exporter failed: {reason}")
        return ValidationError(reason, model_path=job.source.shown, step=failed, steps=steps)

    def _scrub(self, text: str, job: ImportJob) -> str:
        """The exporter's message without server paths (the private copy, the repository)."""
        replacements = {
            str(self.settings.model_repository.resolve()): "<model repository>",
            str(self.settings.model_repository): "<model repository>",
        }
        if job.workdir is not None:
            replacements = {
                str(job.workdir / job.source.path.name): job.source.shown,
                str(job.workdir): "<import>",
                **replacements,
            }
        for secret, shown in replacements.items():
            text = text.replace(secret, shown)
        return text

    async def _register(self, job: ImportJob, triton_name: str) -> tuple[Model, bool]:
        async with self.sessionmaker() as session:
            existed = await session.scalar(select(Model.id).where(Model.triton_name == triton_name))
            model = await registry.register_model(session, self.manifests, triton_name)
            audit(
                session, job.key_id, "model.import", "model", model.id,
                triton_name=triton_name, model_type=job.request.model_type,
                source=job.source.relative,
            )  # fmt: skip
            await self._commit(session)
        return model, existed is None

    async def _commit(self, session: AsyncSession) -> None:
        # This job's own unit of work, as the request session dependency does it.
        await session.commit()
        for event in take_pending(session):
            await self.events.publish(event)

    async def _undo(self, model_id: int | None, triton_name: str, published_now: bool) -> None:
        """Delete what this import created: its row, the loaded model, its directory."""
        try:
            if model_id is not None:
                async with self.sessionmaker() as session:
                    await registry.delete_model(session, model_id)
                    await self._commit(session)
                await self.lifecycle.retire(triton_name)
            self.manifests.forget(triton_name)
            if published_now and model_id is not None:
                await self._remove_directory(triton_name)
        except Exception:  # the load's reason is what the caller needs; this goes to the log
            logger.exception("import of %s: could not undo everything", triton_name)

    async def _remove_directory(self, triton_name: str) -> None:
        check_model_name(triton_name)  # never a path out of the repository
        target = self.settings.model_repository / triton_name
        await asyncio.to_thread(shutil.rmtree, target, True)

    async def _response(
        self,
        job: ImportJob,
        outcome: dict[str, Any],
        model: Model,
        created: bool,
        load_time: float,
        timings: dict[str, float],
    ) -> ModelLoadResponse:
        details = await registry.disk_details(self.manifests, model.triton_name)
        size = details.get("size_bytes") or 0
        status = self.lifecycle.statuses.get(model.triton_name)
        optimization = outcome.get("optimization")  # the published manifest's record
        message = "Model loaded successfully" if created else "Model already imported; loaded"
        return ModelLoadResponse(
            message=message,
            model_id=model.id,
            model_type=job.request.model_type,
            compiled=optimization is not None,
            load_time=round(load_time, 3),
            model_size_mb=round(size / 1_000_000, 3),
            loaded_at=status.loaded_at if status is not None else None,
            name=model.name,
            triton_name=model.triton_name,
            framework=model.framework,
            task=model.task,
            job_id=job.id,
            already_published=bool(outcome["reused"]),
            compile_note=compile_note(optimization),
            parity=ParityReport.model_validate(outcome["parity"]),
            steps=[ImportStep.model_validate(step) for step in outcome["steps"]],
            timings={phase: round(seconds, 3) for phase, seconds in timings.items()},
        )


def _model_name(body: ModelLoadRequest, source: paths.ImportSource) -> str:
    name = body.name or _name_from_file(source.path)
    try:
        return check_model_name(name, max_length=MAX_NAME_LENGTH)
    except InvalidModelNameError as exc:
        raise ValidationError(f"{exc}; give a name", name=name[:120]) from None


def _name_from_file(path: Path) -> str:
    """`my model.v2.onnx` -> `my_model.v2`: the file's stem within the name rule."""
    stem = path.name.split(".")[0] if path.name.startswith(".") else path.stem
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "_-.") else "_" for c in stem)
    while ".." in cleaned:
        cleaned = cleaned.replace("..", ".")
    return cleaned.strip(".")[:MAX_NAME_LENGTH] or "model"


def _scrub_step(step: dict[str, Any], scrub: Any) -> dict[str, Any]:
    return {**step, "detail": scrub(str(step.get("detail", "")))}


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # kept on the job; retrieved so asyncio does not log it again
