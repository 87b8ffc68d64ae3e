"""Register an exported model: read and verify its manifest, store an immutable row.

A model may be registered into a project: that project's keys then see it
(`keys/access.py`). The row stays immutable: registering the same files into another
project (or into none) is a conflict, not a move.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pydantic
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from conch_manifest.layout import ManifestFileOutsideModelError, verify_files
from conch_manifest.schema import Manifest, content_digest
from control_plane.core.errors import ConflictError, ModelNotFoundError, ValidationError
from control_plane.core.request_id import current_request_id
from control_plane.db.models import DeploymentSlot, Model
from control_plane.events.bus import publish_after_commit
from control_plane.events.schemas import ModelDeleted, ModelTrained
from control_plane.manifests.store import ManifestStore
from control_plane.routing.repository import get_project

logger = logging.getLogger(__name__)


async def _read_manifest(manifests: ManifestStore, triton_name: str) -> tuple[Manifest, str]:
    # Read afresh, not from the store: a file changed under a registered name must be
    # seen here. Paths go to the log (with the request id to find them by), never into
    # a response.
    try:
        manifest = (await manifests.reload(triton_name)).manifest
    except (FileNotFoundError, NotADirectoryError) as exc:
        logger.warning(
            "register %r: no manifest (%s) [request %s]", triton_name, exc, current_request_id()
        )
        raise _no_manifest(triton_name) from None
    except OSError as exc:
        logger.warning(
            "register %r: manifest unreadable (%s) [request %s]",
            triton_name, exc, current_request_id(),
        )  # fmt: skip
        raise ValidationError(
            f"the manifest of {triton_name!r} could not be read", triton_name=triton_name
        ) from None
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'manifest'}: {error['msg']}"
            for error in exc.errors(include_url=False)
        )
        raise ValidationError(f"manifest of {triton_name!r} is invalid: {problems}") from None
    try:
        # Hashes every file: blocking, so in a thread like the read.
        await asyncio.to_thread(_check_files, manifests.repository, triton_name, manifest)
    except ValidationError:
        manifests.forget(triton_name)  # not a model anyone may be served from
        raise
    return manifest, content_digest(manifest)


def _no_manifest(triton_name: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"no manifest for {triton_name!r} in the model repository", triton_name=triton_name
    )


def _check_files(repository: Path, triton_name: str, manifest: Manifest) -> None:
    if manifest.triton_name != triton_name:
        raise ValidationError(
            "manifest names another model", expected=triton_name, found=manifest.triton_name
        )
    try:
        bad = verify_files(repository, manifest)
    except ManifestFileOutsideModelError as exc:
        raise ValidationError(
            f"manifest of {triton_name!r} lists files outside the model's directory",
            files=exc.files,
        ) from None
    if bad:
        raise ValidationError(
            f"files of {triton_name!r} do not match their manifest hashes", files=bad
        )


def _hidden(model: Model, project_id: int | None, visible: frozenset[int] | None) -> bool:
    """Registered elsewhere than `project_id`, and out of the caller's sight. (A model
    of the very project named is the caller's own, whatever its cache says.)"""
    return model.project_id != project_id and visible is not None and model.id not in visible


async def register_model(
    session: AsyncSession,
    manifests: ManifestStore | Path,
    triton_name: str,
    *,
    project_id: int | None = None,
    visible: frozenset[int] | None = None,
) -> Model:
    """Idempotent for the same model (its files and tensors, however often it was
    re-exported) into the same project; different content under a registered name, or
    another project, is a conflict. `project_id` must exist (404 otherwise).

    `visible` is the caller's view (`keys.access.visible_model_ids`; None: every model):
    a name registered outside it answers 404 exactly as a name with no manifest, and
    its files are not even read. `manifests` is the replica's store; a one-off caller
    (the demo seed) may pass the repository instead."""
    if isinstance(manifests, Path):
        manifests = ManifestStore(manifests)
    if project_id is not None:
        await get_project(session, project_id)
    existing = await session.scalar(select(Model).where(Model.triton_name == triton_name))
    if existing is not None and _hidden(existing, project_id, visible):
        raise _no_manifest(triton_name)  # as if it did not exist
    manifest, digest = await _read_manifest(manifests, triton_name)
    if existing is not None:
        if existing.manifest_sha256 != digest:
            raise ConflictError(
                f"{triton_name!r} is registered with other content; export under a new name",
                model_id=existing.id,
            )
        if existing.project_id != project_id:
            where = "no project" if existing.project_id is None else "another project"
            raise ConflictError(
                f"{triton_name!r} is registered into {where} (model {existing.id}); a model "
                "does not move: export under a new name to register it here",
                model_id=existing.id,
            )
        return existing
    model = Model(
        triton_name=triton_name,
        name=manifest.name,
        framework=manifest.framework,
        task=manifest.task,
        manifest_sha256=digest,
        project_id=project_id,
    )
    session.add(model)
    await session.flush()
    publish_after_commit(session, ModelTrained(model_id=model.id, triton_name=triton_name))
    return model


async def list_models(session: AsyncSession) -> Sequence[Model]:
    return (await session.scalars(select(Model).order_by(Model.id))).all()


async def get_model(session: AsyncSession, model_id: int) -> Model:
    model = await session.get(Model, model_id)
    if model is None:
        raise ModelNotFoundError(f"model {model_id} not found", model_id=model_id)
    return model


async def delete_model(session: AsyncSession, model_id: int) -> Model:
    """Remove from the registry (files stay); refused while any slot refers to it."""
    model = await get_model(session, model_id)
    slot_id = await session.scalar(
        select(DeploymentSlot.id).where(DeploymentSlot.model_id == model_id).limit(1)
    )
    if slot_id is not None:
        raise ConflictError(
            f"model {model_id} is used by slot {slot_id}; repoint or delete the slot first",
            model_id=model_id,
            slot_id=slot_id,
        )
    await session.delete(model)
    await session.flush()
    publish_after_commit(session, ModelDeleted(model_id=model.id, triton_name=model.triton_name))
    return model


async def disk_details(manifests: ManifestStore, triton_name: str) -> dict[str, Any]:
    """Inputs/outputs and bytes on disk, from the stored manifest (read once)."""
    try:
        stored = await manifests.get(triton_name)
    except (OSError, pydantic.ValidationError):  # the repository report says why
        return {"size_bytes": None}
    manifest = stored.manifest
    return {
        "size_bytes": stored.size_bytes,
        "inputs": [t.model_dump(include={"name", "datatype", "shape"}) for t in manifest.inputs],
        "outputs": [t.model_dump(include={"name", "datatype", "shape"}) for t in manifest.outputs],
    }
