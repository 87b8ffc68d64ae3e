"""Console pages: sign-in and sign-out, projects and their slots, A/B results, promote.

Every page is plain HTML that works without JavaScript: links to read, forms to
change (each with the session's CSRF token), 303 redirects after a change.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Query, Request
from markupsafe import Markup
from starlette.responses import RedirectResponse, Response

from control_plane.abtest import service as abtest
from control_plane.console import charts
from control_plane.console.deps import (
    READ_PROJECT,
    WRITE_PROJECT,
    PostedForm,
    Viewer,
    authorize,
)
from control_plane.console.pages import base_path, form_id, read_form, render
from control_plane.console.service import ProjectAB, project_ab, projects_overview
from control_plane.console.sessions import (
    COOKIE,
    CSRF_FIELD,
    SIGN_IN_COOKIE,
    SIGN_IN_TTL_S,
    check_csrf,
    clear_cookie,
    set_cookie,
    sign_in,
    sign_out,
)
from control_plane.core.components import SettingsDep, components_of
from control_plane.core.errors import ConchError, slot_not_found
from control_plane.core.types import ProjectIdPath
from control_plane.db.audit import audit
from control_plane.db.base import utcnow
from control_plane.db.session import SessionDep
from control_plane.routing.repository import get_project

router = APIRouter()


def _see_other(request: Request, path: str) -> RedirectResponse:
    return RedirectResponse(base_path(request) + path, status_code=303)


@router.get("/")
async def home(request: Request) -> Response:
    return _see_other(request, "/projects")


@router.get("/sign-in")
async def sign_in_page(request: Request, settings: SettingsDep) -> Response:
    return _sign_in_form(request, settings)


def _sign_in_form(
    request: Request, settings: SettingsDep, error: ConchError | None = None
) -> Response:
    # A token for this form alone (double submit): a page of another site cannot read
    # the cookie, so it cannot post a key of its choosing and sign the browser in.
    token = secrets.token_urlsafe(32)
    response = render(
        request,
        "sign_in.html",
        None,
        status_code=error.status_code if error else 200,
        headers=error.headers if error else None,
        sign_in_token=token,
        error=error.message if error else None,
    )
    set_cookie(response, request, settings, SIGN_IN_COOKIE, token, SIGN_IN_TTL_S)
    return response


@router.post("/sign-in")
async def sign_in_submit(request: Request, settings: SettingsDep) -> Response:
    form = await read_form(request)
    check_csrf(request.cookies.get(SIGN_IN_COOKIE, ""), form.get(CSRF_FIELD))
    try:
        session_id, ttl_s = await sign_in(components_of(request), settings, form.get("api_key"))
    except ConchError as exc:  # a wrong key, a key without the read scope, 429, 503
        return _sign_in_form(request, settings, exc)
    response = _see_other(request, "/projects")
    set_cookie(response, request, settings, COOKIE, session_id, ttl_s)
    response.delete_cookie(SIGN_IN_COOKIE, path=base_path(request))
    return response


@router.post("/sign-out")
async def sign_out_submit(
    request: Request, viewer: Viewer, _: PostedForm, settings: SettingsDep
) -> Response:
    await sign_out(components_of(request), viewer.session_id)
    response = _see_other(request, "/sign-in")
    clear_cookie(response, request, settings)
    return response


@router.get("/projects")
async def projects_page(request: Request, viewer: Viewer, session: SessionDep) -> Response:
    rows = await projects_overview(session, viewer.principal, utcnow())
    return render(request, "projects.html", viewer, projects=rows)


def _note(view: ProjectAB, slot_id: int) -> str:
    if slot_id == view.results.control_slot_id:
        return "control"
    return "winner" if slot_id == view.results.winner_slot_id else ""


def _ab_charts(view: ProjectAB) -> dict[str, Markup]:
    name = view.project.name
    colours = {s.result.slot_id: charts.colour(i) for i, s in enumerate(view.slots)}
    intervals: dict[str, list[charts.Interval]] = {"ctr": [], "conversion": []}
    for slot in view.slots:
        r, note = slot.result, _note(view, slot.result.slot_id)
        for metric, rate, ci in (
            ("ctr", r.ctr, slot.ctr_interval),
            ("conversion", r.conversion_rate, slot.conversion_interval),
        ):
            low, high = ci if ci else (None, None)
            intervals[metric].append(
                charts.Interval(r.slot_name, rate, low, high, note, colours[r.slot_id])
            )
    names = {s.result.slot_id: s.result.slot_name for s in view.slots}
    days = view.trend.days

    def trend(metric: dict[int, list[float | None]]) -> list[charts.Series]:
        return [charts.Series(names[s], metric[s], colours[s]) for s in view.trend_slot_ids]

    return {
        "ctr": charts.interval_chart(
            "ctr", f"Click-through rate per slot with 95% intervals, {name}", intervals["ctr"]
        ),
        "conversion": charts.interval_chart(
            "conversion",
            f"Conversion rate per slot with 95% intervals, {name}",
            intervals["conversion"],
        ),
        "ctr_trend": charts.line_chart(
            "ctr-trend",
            f"Daily click-through rate, last {len(days)} days, {name}",
            days,
            trend(view.trend.ctr),
        ),
        "conversion_trend": charts.line_chart(
            "conversion-trend",
            f"Daily conversion rate, last {len(days)} days, {name}",
            days,
            trend(view.trend.conversion),
        ),
    }


@router.get("/projects/{project_id}")
async def project_page(
    request: Request,
    project_id: ProjectIdPath,
    viewer: Viewer,
    session: SessionDep,
    settings: SettingsDep,
    alpha: Annotated[float, Query(gt=0, lt=1)] = 0.05,
    min_impressions: Annotated[int, Query(ge=1, le=2**31 - 1)] = 100,
    promoted: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> Response:
    await authorize(request, viewer, READ_PROJECT, project_id)
    view = await project_ab(
        session, project_id, settings, utcnow(), alpha=alpha, min_impressions=min_impressions
    )
    return render(
        request,
        "project.html",
        viewer,
        view=view,
        charts=_ab_charts(view),
        can_write=viewer.principal.has_scope("write"),
        promoted=next((s for s in view.slots if s.result.slot_id == promoted), None),
    )


@router.get("/projects/{project_id}/promote")
async def promote_confirmation(
    request: Request,
    project_id: ProjectIdPath,
    slot_id: Annotated[int, Query(ge=1, le=2**31 - 1)],
    viewer: Viewer,
    session: SessionDep,
    settings: SettingsDep,
) -> Response:
    """What promoting would change, and the form that does it (the confirmation step)."""
    await authorize(request, viewer, WRITE_PROJECT, project_id)
    view = await project_ab(session, project_id, settings, utcnow(), with_trend=False)
    chosen = next((s for s in view.slots if s.result.slot_id == slot_id), None)
    if chosen is None:
        raise slot_not_found(slot_id)
    return render(request, "promote.html", viewer, view=view, chosen=chosen)


@router.post("/projects/{project_id}/promote")
async def promote_submit(
    request: Request, project_id: ProjectIdPath, viewer: Viewer, form: PostedForm,
    session: SessionDep,
) -> Response:  # fmt: skip
    """The A/B service's promote: the slot takes all traffic, the others stop."""
    await authorize(request, viewer, WRITE_PROJECT, project_id)
    slot_id = form_id(form, "slot_id")
    await get_project(session, project_id)
    await abtest.promote(session, project_id, slot_id)
    audit(
        session, viewer.principal.key_id, "project.promote", "project", project_id,
        slot_id=slot_id, via="console",
    )  # fmt: skip
    return _see_other(request, f"/projects/{project_id}?promoted={slot_id}")
