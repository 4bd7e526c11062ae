"""remote aes

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A new table only: nothing else is copied or altered.
    op.create_table(
        "remote_aes",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("ae_title", sa.String(length=16), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_remote_aes")),
    )
    op.create_index(op.f("ix_remote_aes_ae_title"), "remote_aes", ["ae_title"], unique=True)


def downgrade() -> None:
    op.drop_index(op.f("ix_remote_aes_ae_title"), table_name="remote_aes")
    op.drop_table("remote_aes")
