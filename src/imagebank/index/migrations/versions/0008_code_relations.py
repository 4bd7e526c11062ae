"""code relations for cohort search (descendants of a code)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A new table only: nothing else is copied or altered.
    op.create_table(
        "code_relations",
        sa.Column("system", sa.String(length=32), nullable=False),
        sa.Column("parent", sa.String(length=255), nullable=False),
        sa.Column("child", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("system", "parent", "child", name=op.f("pk_code_relations")),
    )


def downgrade() -> None:
    op.drop_table("code_relations")
