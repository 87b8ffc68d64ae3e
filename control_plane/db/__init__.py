"""Persistence: typed SQLAlchemy models, the async engine, Alembic migrations."""

from control_plane.db.migrate import upgrade

__all__ = ["upgrade"]
