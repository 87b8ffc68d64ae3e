"""Console pages for operators: models on this replica, API keys, async queues.

Keys are managed as `/api/v1/keys` manages them (`keys.service`, the admin scope):
a new key's plaintext appears once, on the page that answers its creation.
"""

from __future__ import annotations

from typing import Annotated

import pydantic
from fastapi import APIRouter, Query, Request
from starlette.responses import RedirectResponse, Response

from control_plane.console import charts
from control_plane.console.deps import (
    ADMIN_ANY,
    ADMIN_KEY,
    READ_ANY,
    PostedForm,
    Viewer,
    authorize,
)
from control_plane.console.models_view import model_detail, model_rows
from control_plane.console.pages import base_path, form_list, render
from control_plane.core.components import ComponentsDep, SettingsDep
from control_plane.core.errors import ValidationError
from control_plane.core.types import KeyIdPath, ModelIdPath
from control_plane.db.audit import audit
from control_plane.db.models import ApiKey
from control_plane.db.session import SessionDep
from control_plane.jobs import listing
from control_plane.keys import service as keys
from control_plane.keys.schemas import ALL_SCOPES, KeyCreate
from control_plane.projects.service import list_projects

router = APIRouter()
_ID = Annotated[int | None, Query(ge=1, le=2**31 - 1)]


@router.get("/models")
async def models_page(
    request: Request, viewer: Viewer, session: SessionDep, components: ComponentsDep
) -> Response:
    await authorize(request, viewer, READ_ANY)
    rows = await model_rows(components, session, viewer.principal)
    return render(request, "models.html", viewer, models=rows)


@router.get("/models/{model_id}")
async def model_page(
    request: Request,
    model_id: ModelIdPath,
    viewer: Viewer,
    session: SessionDep,
    components: ComponentsDep,
) -> Response:
    await authorize(request, viewer, READ_ANY)
    detail = await model_detail(components, session, viewer.principal, model_id)
    figures = {}
    if detail.triton is not None:
        name = detail.row.model.name
        t = detail.triton
        figures["time"] = charts.bar_chart(
            "time",
            f"Triton's average queue and compute time per request, {name}",
            [("queue", t["avg_queue_ms"] or 0.0), ("compute", t["avg_compute_ms"] or 0.0)],
            "ms",
        )
        figures["batches"] = charts.bar_chart(
            "batches",
            f"Batches Triton formed, by size, {name}",
            [(f"batch of {b.batch_size}", float(b.count)) for b in t["batch_sizes"]],
            "batches",
        )
    return render(request, "model.html", viewer, detail=detail, figures=figures)


async def _keys_page(
    request: Request,
    viewer: Viewer,
    session: SessionDep,
    *,
    revoked: int | None = None,
    created: tuple[ApiKey, str] | None = None,
) -> Response:
    principal = viewer.principal
    listed = await keys.list_keys(session, project_id=principal.project_id)
    projects = [p for p in await list_projects(session) if principal.may_access_project(p.id)]
    return render(
        request, "keys.html", viewer, keys=listed, projects=projects, scopes=ALL_SCOPES,
        revoked=revoked, created=created,
    )  # fmt: skip


@router.get("/keys")
async def keys_page(
    request: Request, viewer: Viewer, session: SessionDep, revoked: _ID = None
) -> Response:
    await authorize(request, viewer, ADMIN_ANY)
    return await _keys_page(request, viewer, session, revoked=revoked)


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 12


def _key_request(form: dict[str, str], scopes: list[str]) -> KeyCreate:
    project = form.get("project_id", "").strip()
    wanted = {
        "name": form.get("name", "").strip(),
        "scopes": scopes,
        # Digits become a number for the model to bound; anything else it refuses as text.
        "project_id": int(project) if _digits(project) else project or None,
        "expires_at": form.get("expires_at", "").strip() or None,
        "rate_limit": form.get("rate_limit", "").strip() or None,
    }
    try:
        return KeyCreate.model_validate(wanted)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise ValidationError(f"the key cannot be created: {problems}") from None


@router.post("/keys")
async def create_key(
    request: Request, viewer: Viewer, form: PostedForm, session: SessionDep, settings: SettingsDep
) -> Response:
    await authorize(request, viewer, ADMIN_ANY)
    wanted = _key_request(form, await form_list(request, "scopes"))
    keys.ensure_not_more_powerful(viewer.principal, wanted)
    key, token = await keys.create_key(
        session,
        settings.secret_key.get_secret_value(),
        scopes=wanted.scopes,
        name=wanted.name,
        project_id=wanted.project_id,
        expires_at=wanted.expires_at,
        rate_limit=wanted.rate_limit,
    )
    audit(session, viewer.principal.key_id, "key.create", "api_key", key.id, scopes=wanted.scopes)
    await session.flush()
    return await _keys_page(request, viewer, session, created=(key, token))


@router.post("/keys/{key_id}/revoke")
async def revoke_key(
    request: Request, key_id: KeyIdPath, viewer: Viewer, _: PostedForm, session: SessionDep
) -> Response:
    await authorize(request, viewer, ADMIN_KEY, key_id)
    await keys.revoke_key(session, key_id)
    audit(session, viewer.principal.key_id, "key.revoke", "api_key", key_id)
    return RedirectResponse(f"{base_path(request)}/keys?revoked={key_id}", status_code=303)


@router.get("/queues")
async def queues_page(
    request: Request, viewer: Viewer, components: ComponentsDep, settings: SettingsDep
) -> Response:
    """Recent tasks the key may see; the queues' figures span every project, so they
    are shown to keys restricted to no project only (as `/api/inference/async/queues`)."""
    await authorize(request, viewer, READ_ANY)
    principal = viewer.principal
    figures = await listing.queues(components) if principal.project_id is None else None
    tasks = await listing.list_tasks(components, principal, limit=50, status=None)
    # A live worker reads the queue every second, or renews its tasks every third of
    # this while all its slots are busy; idle longer, its tasks are taken over.
    live_ms = settings.task_claim_after_s * 1000
    return render(
        request, "queues.html", viewer, queues=figures, tasks=tasks.tasks, live_ms=live_ms
    )
