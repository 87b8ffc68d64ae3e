"""Register an exported model: read and verify its manifest, store an immutable row."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from pathlib import Path

import pydantic
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.core.errors import ConflictError, ModelNotFoundError, ValidationError
from control_plane.db.models import Model
from control_plane.events.bus import publish_after_commit
from control_plane.events.schemas import ModelTrained
from exporters.manifest import Manifest, manifest_path, verify_files


def _read_manifest(repository: Path, triton_name: str) -> tuple[Manifest, str]:
    path = manifest_path(repository, triton_name)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ModelNotFoundError(
            f"no manifest for {triton_name!r} in the model repository", path=str(path)
        ) from None
    try:
        manifest = Manifest.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        raise ValidationError(f"manifest of {triton_name!r} is invalid: {exc}") from exc
    if manifest.triton_name != triton_name:
        raise ValidationError(
            "manifest names another model", expected=triton_name, found=manifest.triton_name
        )
    bad = verify_files(repository, manifest)
    if bad:
        raise ValidationError(
            f"files of {triton_name!r} do not match their manifest hashes", files=bad
        )
    return manifest, hashlib.sha256(raw).hexdigest()


async def register_model(session: AsyncSession, repository: Path, triton_name: str) -> Model:
    """Idempotent for an unchanged manifest; a changed one is a conflict (rows are immutable)."""
    manifest, digest = await asyncio.to_thread(_read_manifest, repository, triton_name)
    existing = await session.scalar(select(Model).where(Model.triton_name == triton_name))
    if existing is not None:
        if existing.manifest_sha256 != digest:
            raise ConflictError(
                f"{triton_name!r} is registered with another manifest; export under a new name",
                model_id=existing.id,
            )
        return existing
    model = Model(
        triton_name=triton_name,
        name=manifest.name,
        framework=manifest.framework,
        task=manifest.task,
        manifest_sha256=digest,
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
