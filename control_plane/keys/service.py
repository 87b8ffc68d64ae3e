"""Issue, list and revoke keys (services flush; the caller's session commits)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.core.errors import NotFoundError, ValidationError
from control_plane.db.base import utcnow
from control_plane.db.models import ApiKey, Project
from control_plane.events.bus import publish_after_commit
from control_plane.events.schemas import KeyRevoked
from control_plane.keys import tokens
from control_plane.keys.schemas import ALL_SCOPES


async def create_key(
    session: AsyncSession,
    secret_key: str,
    *,
    scopes: Sequence[str],
    name: str = "",
    project_id: int | None = None,
    expires_at: datetime | None = None,
    rate_limit: str | None = None,
) -> tuple[ApiKey, str]:
    """Store a new key and return it with its plaintext (never stored, never shown again)."""
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown or not scopes:
        raise ValidationError("unknown or missing scopes", unknown=unknown, allowed=ALL_SCOPES)
    if project_id is not None and await session.get(Project, project_id) is None:
        raise NotFoundError(f"project {project_id} not found", project_id=project_id)
    if expires_at is not None and expires_at.tzinfo is None:
        raise ValidationError("expires_at needs a timezone (e.g. 2030-01-01T00:00:00Z)")
    token = tokens.generate_token()
    key = ApiKey(
        name=name,
        token_hash=tokens.hash_token(secret_key, token),
        display_prefix=tokens.display_prefix(token),
        scopes=" ".join(sorted(set(scopes))),
        project_id=project_id,
        expires_at=expires_at,
        rate_limit=rate_limit,
    )
    session.add(key)
    await session.flush()
    return key, token


async def list_keys(session: AsyncSession) -> Sequence[ApiKey]:
    return (await session.scalars(select(ApiKey).order_by(ApiKey.id))).all()


async def revoke_key(session: AsyncSession, key_id: int) -> ApiKey:
    key = await session.get(ApiKey, key_id)
    if key is None:
        raise NotFoundError(f"API key {key_id} not found", key_id=key_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        await session.flush()
    # Every replica drops its cached verification when this arrives (after commit).
    publish_after_commit(session, KeyRevoked(key_id=key.id))
    return key
