"""models: ids are never reused (SQLite AUTOINCREMENT)

Events, audit entries and replicas' reconciliation name models by id; once models
can be deleted, SQLite would hand a deleted model's id to the next one. PostgreSQL
sequences never reuse ids, so this only rebuilds the SQLite table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 23:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _rebuild_models(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        "models", recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
    ):
        pass


def upgrade() -> None:
    _rebuild_models(True)


def downgrade() -> None:
    _rebuild_models(False)
