"""code relations and covering indexes for cohort search

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

# (table, old index and its columns, new index and its columns): each new index starts with
# the old one's columns, so it serves every query the old one did (decision 0022).
_WIDENED = [
    ("clinical_facts",
     "ix_clinical_facts_project_id_kind_system_code", ["project_id", "kind", "system", "code"],
     "ix_clinical_facts_cohort",
     ["project_id", "kind", "system", "code", "value_number", "start", "subject_id"]),
    ("studies", "ix_studies_subject_id", ["subject_id"],
     "ix_studies_subject_id_study_date_id", ["subject_id", "study_date", "id"]),
    ("series", "ix_series_study_id", ["study_id"],
     "ix_series_study_id_modality_project_id_id", ["study_id", "modality", "project_id", "id"]),
]


def upgrade() -> None:
    # A new table and new indexes: nothing is copied (SQLite adds and drops indexes in place).
    op.create_table(
        "code_relations",
        sa.Column("system", sa.String(length=32), nullable=False),
        sa.Column("parent", sa.String(length=255), nullable=False),
        sa.Column("child", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("system", "parent", "child", name=op.f("pk_code_relations")),
    )
    for table, old, _, new, columns in _WIDENED:
        # a code prefix is a LIKE on PostgreSQL: pattern_ops index it whatever the collation
        ops = {"code": "text_pattern_ops"} if table == "clinical_facts" else {}
        op.create_index(op.f(new), table, columns, postgresql_ops=ops)
        op.drop_index(op.f(old), table_name=table)


def downgrade() -> None:
    for table, old, old_columns, new, _ in reversed(_WIDENED):
        op.create_index(op.f(old), table, old_columns)
        op.drop_index(op.f(new), table_name=table)
    op.drop_table("code_relations")
