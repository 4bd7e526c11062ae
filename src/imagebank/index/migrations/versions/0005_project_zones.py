"""project zones and policies

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Columns with server defaults: SQLite adds them in place, existing projects become
    # identifiable (what every project was before zones existed).
    op.add_column("projects", sa.Column("zone", sa.String(length=16), nullable=False,
                                        server_default="identifiable"))
    op.add_column("projects", sa.Column("policy", sa.Text(), nullable=True))
    op.add_column("projects", sa.Column("deid_options", sa.Text(), nullable=False,
                                        server_default="[]"))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN in place (SQLite >= 3.35, PostgreSQL): a batch copy of the
    # table is refused once other tables' foreign keys point at its rows.
    for column in ("deid_options", "policy", "zone"):
        op.execute(f"ALTER TABLE projects DROP COLUMN {column}")
