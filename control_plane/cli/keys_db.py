"""Bootstrap: create a key straight in SQL (no server needed), on a migrated database."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from control_plane.core.settings import Settings
from control_plane.db import upgrade
from control_plane.db.engine import create_engine, create_sessionmaker
from control_plane.keys.service import create_key


async def create_key_in_database(
    settings: Settings,
    *,
    scopes: Sequence[str],
    project_id: int | None = None,
    name: str = "",
    expires_at: datetime | None = None,
    rate_limit: str | None = None,
) -> str:
    await asyncio.to_thread(upgrade, settings.database_url)
    engine = create_engine(settings.database_url)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            _, token = await create_key(
                session,
                settings.secret_key.get_secret_value(),
                scopes=scopes,
                project_id=project_id,
                name=name,
                expires_at=expires_at,
                rate_limit=rate_limit,
            )
    finally:
        await engine.dispose()
    return token
