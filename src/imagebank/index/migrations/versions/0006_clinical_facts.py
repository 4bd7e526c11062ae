"""clinical facts

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A new table only: nothing else is copied or altered.
    op.create_table(
        "clinical_facts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=63), nullable=False),
        sa.Column("subject_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("system", sa.String(length=255), nullable=False),
        sa.Column("code", sa.String(length=255), nullable=False),
        sa.Column("display", sa.Text(), nullable=False),
        sa.Column("value_number", sa.Float(), nullable=True),
        sa.Column("value_text", sa.Text(), nullable=False),
        sa.Column("value_system", sa.String(length=255), nullable=False),
        sa.Column("unit", sa.String(length=64), nullable=False),
        sa.Column("start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"],
                                name=op.f("fk_clinical_facts_project_id_projects")),
        sa.ForeignKeyConstraint(["subject_id"], ["subjects.id"],
                                name=op.f("fk_clinical_facts_subject_id_subjects")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clinical_facts")),
    )
    op.create_index(op.f("ix_clinical_facts_project_id_kind_system_code"), "clinical_facts",
                    ["project_id", "kind", "system", "code"])
    op.create_index(op.f("ix_clinical_facts_subject_id_kind_start"), "clinical_facts",
                    ["subject_id", "kind", "start"])


def downgrade() -> None:
    op.drop_index(op.f("ix_clinical_facts_subject_id_kind_start"), table_name="clinical_facts")
    op.drop_index(op.f("ix_clinical_facts_project_id_kind_system_code"),
                  table_name="clinical_facts")
    op.drop_table("clinical_facts")
