"""links from FHIR ImagingStudy facts to DICOM studies

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 12:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "clinical_study_links",
        sa.Column("fact_id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=63), nullable=False),
        sa.Column("study_id", sa.String(length=32), nullable=False),
        sa.Column("matched_by", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(["fact_id"], ["clinical_facts.id"],
                                name=op.f("fk_clinical_study_links_fact_id_clinical_facts")),
        sa.PrimaryKeyConstraint("fact_id", name=op.f("pk_clinical_study_links")),
    )
    op.create_index(op.f("ix_clinical_study_links_project_id_study_id"),
                    "clinical_study_links", ["project_id", "study_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_clinical_study_links_project_id_study_id"),
                  table_name="clinical_study_links")
    op.drop_table("clinical_study_links")
