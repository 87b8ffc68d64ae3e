"""Rendering console pages and reading their forms (the door's only HTML plumbing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse

from control_plane.console import charts
from control_plane.console.sessions import CSRF_FIELD, ConsoleSession
from control_plane.core.errors import BadRequestError, UnsupportedMediaTypeError, ValidationError
from control_plane.core.types import MAX_ID

PACKAGE = Path(__file__).parent
_TEMPLATES = Environment(
    loader=FileSystemLoader(PACKAGE / "templates"),
    autoescape=True,  # every value is escaped unless it is Markup (the charts)
    undefined=StrictUndefined,
    auto_reload=False,
    trim_blocks=True,
    lstrip_blocks=True,
)
_TEMPLATES.filters["percent"] = charts.percent
_TEMPLATES.globals["CSRF_FIELD"] = CSRF_FIELD
MAX_FORM_FIELDS = 50


def base_path(request: Request) -> str:
    """Where the console is mounted ("/console", behind any proxy prefix)."""
    return str(request.scope.get("root_path") or "/console")


def render(
    request: Request,
    template: str,
    viewer: ConsoleSession | None,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    page = _TEMPLATES.get_template(template).render(
        base=base_path(request), viewer=viewer, request_path=request.url.path, **context
    )
    return HTMLResponse(page, status_code=status_code, headers=headers)


async def read_form(request: Request) -> dict[str, str]:
    """An HTML form's fields (application/x-www-form-urlencoded; the last value of a
    repeated name wins, except `scopes`, which `form_list` reads)."""
    return {name: value for name, value in await _pairs(request)}


async def form_list(request: Request, name: str) -> list[str]:
    return [value for key, value in await _pairs(request) if key == name]


async def _pairs(request: Request) -> list[tuple[str, str]]:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        raise UnsupportedMediaTypeError(
            "console forms are sent as application/x-www-form-urlencoded",
            expected="application/x-www-form-urlencoded",
        )
    body = await request.body()  # cached by Starlette: read once however often asked
    try:
        return parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise BadRequestError("the form is not UTF-8 or has too many fields") from None


def form_id(form: dict[str, str], name: str) -> int:
    """An id posted in a form field (422 unless 1 <= id <= 2^31 - 1)."""
    text = form.get(name, "").strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 10) or not 1 <= int(text) <= MAX_ID:
        raise ValidationError(f"{name} must be a positive id", field=name)
    return int(text)
