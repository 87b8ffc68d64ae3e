"""Issue, list and revoke keys (services flush; the caller's session commits)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.core.errors import (
    PermissionDeniedError,
    ValidationError,
    key_not_found,
    project_not_found,
)
from control_plane.db.base import utcnow
from control_plane.db.models import ApiKey, Project
from control_plane.events.bus import publish_after_commit
from control_plane.events.schemas import KeyRevoked
from control_plane.keys import tokens
from control_plane.keys.schemas import ALL_SCOPES, KeyCreate, Principal


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
        raise project_not_found(project_id)
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


def ensure_not_more_powerful(creator: Principal, wanted: KeyCreate) -> None:
    """A key creates keys at most as powerful as itself: no project beyond its own, no
    life beyond its own expiry (creating keys needs the admin scope, which implies every
    other). Otherwise one restricted admin key could mint an unrestricted one."""
    if creator.project_id is not None:
        if wanted.project_id is None:
            raise PermissionDeniedError(
                "a key restricted to a project creates keys restricted to that project: "
                f"set project_id to {creator.project_id}",
                project_id=creator.project_id,
            )
        if wanted.project_id != creator.project_id:
            raise project_not_found(wanted.project_id)  # another project: as if unknown
    if creator.expires_at is not None and (
        wanted.expires_at is None or wanted.expires_at > creator.expires_at
    ):
        raise PermissionDeniedError(
            "a key cannot create a key that outlives it: set expires_at at or before "
            f"{creator.expires_at.isoformat()}",
            expires_at=creator.expires_at.isoformat(),
        )


async def list_keys(session: AsyncSession, *, project_id: int | None = None) -> Sequence[ApiKey]:
    """Every key, or only those restricted to `project_id` when it is given."""
    query = select(ApiKey).order_by(ApiKey.id)
    if project_id is not None:
        query = query.where(ApiKey.project_id == project_id)
    return (await session.scalars(query)).all()


async def revoke_key(session: AsyncSession, key_id: int) -> ApiKey:
    key = await session.get(ApiKey, key_id)
    if key is None:
        raise key_not_found(key_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        await session.flush()
    # Every replica drops its cached verification when this arrives (after commit).
    publish_after_commit(session, KeyRevoked(key_id=key.id))
    return key
