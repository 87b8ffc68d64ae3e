"""Liveness probes of SQL and Redis, shared by every health endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine


async def answers(probe: Awaitable[object], timeout_s: float) -> bool:
    """Whether a ping (of SQL or Redis) succeeds within `timeout_s`."""
    try:
        await asyncio.wait_for(probe, timeout_s)
    except (TimeoutError, OSError, SQLAlchemyError, RedisError):
        return False
    return True


async def sql_ping(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
