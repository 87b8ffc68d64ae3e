"""/api/v1/keys: admin-only key management. The plaintext appears once, at creation."""

from __future__ import annotations

from fastapi import APIRouter, status

from control_plane.core.audit import audit
from control_plane.core.state import SessionDep, SettingsDep
from control_plane.keys import service
from control_plane.keys.deps import AdminKey
from control_plane.keys.schemas import KeyCreate, KeyCreated, KeyRead

router = APIRouter(prefix="/keys", tags=["keys"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_key(
    body: KeyCreate, admin: AdminKey, session: SessionDep, settings: SettingsDep
) -> KeyCreated:
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
async def list_keys(_: AdminKey, session: SessionDep) -> list[KeyRead]:
    return [KeyRead.model_validate(key) for key in await service.list_keys(session)]


@router.delete("/{key_id}")
async def revoke_key(key_id: int, admin: AdminKey, session: SessionDep) -> KeyRead:
    key = await service.revoke_key(session, key_id)
    audit(session, admin.key_id, "key.revoke", "api_key", key.id)
    return KeyRead.model_validate(key)
