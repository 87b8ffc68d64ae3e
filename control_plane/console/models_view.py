"""What the console's model pages show: the registry, this replica's Triton, lineage.

Load states are the answering replica's (`lifecycle.ModelLifecycle`), as seed 002's
`/api/inference/models/list` reports them; Triton's figures are its statistics API
summed by `lifecycle.stats.summarize`, read through the engine API's monitoring
helper (a slow or absent Triton reads as "not measured", never as an error page).

Lineage is the manifest's (console/lineage.py): an optimized model has no parent
model in the registry, its export optimized the graph it publishes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pydantic
from sqlalchemy.ext.asyncio import AsyncSession

from conch_manifest.schema import Manifest
from control_plane.console.lineage import Lineage, lineage_of
from control_plane.core.components import Components
from control_plane.core.settings import Settings
from control_plane.db.models import Model
from control_plane.engine_api.monitoring import from_triton
from control_plane.keys.access import ensure_model, visible_model_ids
from control_plane.keys.schemas import Principal
from control_plane.lifecycle.manager import ModelLifecycle
from control_plane.lifecycle.stats import summarize
from control_plane.manifests.store import ManifestStore
from control_plane.registry import service as registry


@dataclass(frozen=True)
class ModelRow:
    model: Model
    state: str
    pinned: bool
    loaded_at: datetime | None
    load_error: str | None
    lineage: Lineage | None  # None: the manifest could not be read


async def _manifest(manifests: ManifestStore, triton_name: str) -> Manifest | None:
    try:
        return (await manifests.get(triton_name)).manifest
    except (OSError, pydantic.ValidationError):  # the repository report says why
        return None


def _row(components: Components, model: Model, manifest: Manifest | None) -> ModelRow:
    lifecycle = components.get(ModelLifecycle)
    status = lifecycle.statuses.get(model.triton_name)
    return ModelRow(
        model=model,
        state=status.state.value if status else "unloaded",
        pinned=model.triton_name in lifecycle.pinned,
        loaded_at=status.loaded_at if status else None,
        load_error=(status.load_error if status else None) or model.load_error,
        lineage=None if manifest is None else lineage_of(manifest),
    )


async def model_rows(
    components: Components, session: AsyncSession, principal: Principal
) -> list[ModelRow]:
    """The registry as the key sees it (a project's key: its project's models)."""
    models = list(await registry.list_models(session))
    visible = await visible_model_ids(components, principal)
    if visible is not None:
        models = [m for m in models if m.id in visible]
    manifests = components.get(ManifestStore)
    found = await asyncio.gather(*(_manifest(manifests, m.triton_name) for m in models))
    return [_row(components, m, o) for m, o in zip(models, found, strict=True)]


@dataclass(frozen=True)
class ModelDetail:
    row: ModelRow
    triton: dict[str, Any] | None  # summarize(): None when Triton has no figures for it


async def model_detail(
    components: Components, session: AsyncSession, principal: Principal, model_id: int
) -> ModelDetail:
    await ensure_model(components, principal, model_id)  # 404 outside the key's project
    model = await registry.get_model(session, model_id)
    row = _row(components, model, await _manifest(components.get(ManifestStore), model.triton_name))
    triton = None
    if row.state == "ready":
        timeout_s = components.get(Settings).monitoring_triton_timeout_s
        gateway = components.get(ModelLifecycle).triton
        raw = await from_triton(gateway.statistics(model.triton_name), timeout_s)
        triton = None if raw is None else summarize(raw)
    return ModelDetail(row, triton)
