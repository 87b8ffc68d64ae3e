"""engine_config: seed 002's engine configuration, one row shared by every replica

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "engine_config",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("max_batch_size", sa.Integer(), nullable=True),
        sa.Column("batch_timeout_us", sa.Integer(), nullable=True),
        sa.Column("max_concurrent_requests", sa.Integer(), nullable=True),
        sa.Column("model_cache_size", sa.Integer(), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_engine_config_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_engine_config")),
    )


def downgrade() -> None:
    op.drop_table("engine_config")
