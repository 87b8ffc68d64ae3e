"""/api/v1/keys: key management. The plaintext appears once, at creation.

An admin key restricted to a project manages only that project's keys, and
every key it creates is restricted to the same project (`service.create_key`).
"""

from __future__ import annotations

from fastapi import APIRouter, status

from control_plane.core.components import SettingsDep
from control_plane.core.openapi_errors import error_responses
from control_plane.core.types import KeyIdPath
from control_plane.db.audit import audit
from control_plane.db.session import SessionDep
from control_plane.keys import service
from control_plane.keys.deps import AdminAnyKey, AdminKeyKey, GuardedRoute
from control_plane.keys.schemas import KeyCreate, KeyCreated, KeyRead

router = APIRouter(prefix="/keys", tags=["keys"], route_class=GuardedRoute)


@router.post("", status_code=status.HTTP_201_CREATED, responses=error_responses(404))
async def create_key(
    body: KeyCreate, admin: AdminAnyKey, session: SessionDep, settings: SettingsDep
) -> KeyCreated:
    service.ensure_not_more_powerful(admin, body)
    key, token = await service.create_key(
        session,
        settings.secret_key.get_secret_value(),
        scopes=body.scopes,
        name=body.name,
        project_id=body.project_id,
        expires_at=body.expires_at,
        rate_limit=body.rate_limit,
    )
    audit(session, admin.key_id, "key.create", "api_key", key.id, scopes=body.scopes)
    return KeyCreated.model_validate({**KeyRead.model_validate(key).model_dump(), "key": token})


@router.get("")
async def list_keys(admin: AdminAnyKey, session: SessionDep) -> list[KeyRead]:
    keys = await service.list_keys(session, project_id=admin.project_id)
    return [KeyRead.model_validate(key) for key in keys]


@router.delete("/{key_id}")
async def revoke_key(key_id: KeyIdPath, admin: AdminKeyKey, session: SessionDep) -> KeyRead:
    key = await service.revoke_key(session, key_id)
    audit(session, admin.key_id, "key.revoke", "api_key", key.id)
    return KeyRead.model_validate(key)
