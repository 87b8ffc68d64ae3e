"""The async engine and the request-scoped session."""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from control_plane.core.setting_values import async_database_url
from control_plane.core.settings import default


def create_engine(
    database_url: str,
    *,
    pool_size: int = default("sql_pool_size"),
    max_overflow: int = default("sql_max_overflow"),
    sqlite_busy_timeout_s: float = default("sqlite_busy_timeout_s"),
) -> AsyncEngine:
    """The pool sizes apply to server databases; SQLite gets the busy timeout."""
    url = async_database_url(database_url)
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": sqlite_busy_timeout_s})
        _sqlite_pragmas(engine.sync_engine)
        return engine
    return create_async_engine(
        url, pool_pre_ping=True, pool_size=pool_size, max_overflow=max_overflow
    )


def _sqlite_pragmas(engine: Engine) -> None:
    # WAL lets two replicas (or a CLI and a server) share one SQLite file.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: handlers read rows after the commit to build responses.
    return async_sessionmaker(engine, expire_on_commit=False)
