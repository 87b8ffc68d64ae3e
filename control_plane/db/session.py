"""The request's unit of work: services flush, this commits, then events go out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from control_plane.core.components import components_of
from control_plane.events.bus import EventBus, take_pending


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    components = components_of(request)
    sessionmaker = components.get(async_sessionmaker)
    async with sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()
            events = components.get(EventBus)
            for event in take_pending(session):
                await events.publish(event)


# scope="function": commit before the response is sent, so a failed commit is an error
# response and a client never reads data that was not stored.
SessionDep = Annotated[AsyncSession, Depends(_session, scope="function")]
