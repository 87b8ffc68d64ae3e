"""The console's dependencies: who is signed in, and a form that proves it came from us.

Authorization is the API's own: each page names a `keys.access.Policy` and calls
its `authorize` (403 without the scope; 404 for a resource outside the key's
project, the same answer as for one that does not exist).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from control_plane.console.pages import read_form
from control_plane.console.sessions import (
    COOKIE,
    CSRF_FIELD,
    ConsoleSession,
    check_csrf,
    current_session,
)
from control_plane.core.components import components_of
from control_plane.keys.access import Policy

READ_ANY = Policy("read", "any")
READ_GLOBAL = Policy("read", "global")
READ_PROJECT = Policy("read", "project_id")
WRITE_PROJECT = Policy("write", "project_id")
ADMIN_ANY = Policy("admin", "any")
ADMIN_KEY = Policy("admin", "key_id")


async def _viewer(request: Request) -> ConsoleSession:
    return await current_session(components_of(request), request.cookies.get(COOKIE))


Viewer = Annotated[ConsoleSession, Depends(_viewer)]


async def _posted(request: Request, viewer: Viewer) -> dict[str, str]:
    """The form's fields, once its CSRF token matched the session's (403 otherwise)."""
    form = await read_form(request)
    check_csrf(viewer.csrf_token, form.get(CSRF_FIELD))
    return form


PostedForm = Annotated[dict[str, str], Depends(_posted)]


async def authorize(
    request: Request, viewer: ConsoleSession, policy: Policy, resource_id: int | None = None
) -> None:
    await policy.authorize(components_of(request), viewer.principal, resource_id)
