"""/api/v1/keys: key management. The plaintext appears once, at creation.

An admin key restricted to a project manages only that project's keys, and
every key it creates is restricted to the same project (`service.create_key`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from control_plane.core.components import Components, SettingsDep
from control_plane.core.openapi_errors import error_responses
from control_plane.core.types import KeyIdPath
from control_plane.db.audit import audit
from control_plane.db.session import SessionDep
from control_plane.keys import service
from control_plane.keys.access import Policy
from control_plane.keys.deps import AdminAnyKey, AdminKeyKey, GuardedRoute
from control_plane.keys.schemas import KeyCreate, KeyCreated, KeyRead, Principal
from control_plane.keys.webhooks import WebhookSecretRead, webhook_secret

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


class AnyScopePolicy(Policy):
    """Any valid key, whatever its scopes (and project): for what a key reads of itself."""

    async def authorize(
        self, components: Components, principal: Principal, resource_id: int | None
    ) -> None:
        return None


# The scope is nominal: `authorize` asks for none (every key has at least one).
AnyScopeKey = Annotated[Principal, Depends(AnyScopePolicy("predict", "any"))]


@router.get("/self/webhook-secret")
async def read_webhook_secret(
    key: AnyScopeKey, settings: SettingsDep, response: Response
) -> WebhookSecretRead:
    """The secret that signs this key's async prediction callbacks (`X-Conch-Signature`)."""
    response.headers["Cache-Control"] = "no-store"
    secret = webhook_secret(settings.secret_key.get_secret_value().encode(), key.key_id)
    return WebhookSecretRead(key_id=key.key_id, webhook_secret=secret.hex())


@router.delete("/{key_id}")
async def revoke_key(key_id: KeyIdPath, admin: AdminKeyKey, session: SessionDep) -> KeyRead:
    key = await service.revoke_key(session, key_id)
    audit(session, admin.key_id, "key.revoke", "api_key", key.id)
    return KeyRead.model_validate(key)
