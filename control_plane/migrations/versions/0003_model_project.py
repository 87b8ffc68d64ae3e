"""models: the project a model was registered into (optional)

A project-restricted key sees the models registered into its project as well as
those its slots name. Deleting the project sets the column to NULL (the model
becomes global) rather than deleting the model: see `Model.project_id`.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 14:30:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FK = "fk_models_project_id_projects"
_INDEX = "ix_models_project_id"


def _table_kwargs() -> dict[str, Any]:
    # SQLite adds a foreign key by copying the table: keep AUTOINCREMENT (0002).
    return {"sqlite_autoincrement": True} if op.get_bind().dialect.name == "sqlite" else {}


def upgrade() -> None:
    with op.batch_alter_table("models", table_kwargs=_table_kwargs()) as batch:
        batch.add_column(sa.Column("project_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(_FK, "projects", ["project_id"], ["id"], ondelete="SET NULL")
        batch.create_index(_INDEX, ["project_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("models", table_kwargs=_table_kwargs()) as batch:
        batch.drop_index(_INDEX)
        batch.drop_constraint(_FK, type_="foreignkey")
        batch.drop_column("project_id")
