"""Append-only record of management actions (who, what, on which object)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.db.models import AuditLog


def audit(
    session: AsyncSession,
    api_key_id: int | None,
    action: str,
    target_type: str,
    target_id: object,
    **details: Any,
) -> None:
    session.add(
        AuditLog(
            api_key_id=api_key_id,
            action=action,
            target_type=target_type,
            target_id=str(target_id),
            details=details or None,
        )
    )
