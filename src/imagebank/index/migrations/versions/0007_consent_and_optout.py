"""consent, the national data opt-out, release lineage, withdrawn subjects

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 11:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A nullable column: SQLite adds it in place, without copying the table.
    op.add_column("subjects", sa.Column("withdrawn_at", sa.DateTime(timezone=True),
                                        nullable=True))
    op.create_table(
        "consents",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("person_key", sa.String(length=32), nullable=False),
        sa.Column("target_project", sa.String(length=63), nullable=False),
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("decided_on", sa.String(length=10), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consents")),
    )
    op.create_index(op.f("ix_consents_person_key"), "consents", ["person_key"])
    op.create_table(
        "optout_lists",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("list_date", sa.String(length=10), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_optout_lists")),
    )
    op.create_table(
        "optout_entries",
        sa.Column("list_id", sa.String(length=32), nullable=False),
        sa.Column("person_key", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(["list_id"], ["optout_lists.id"],
                                name=op.f("fk_optout_entries_list_id_optout_lists")),
        sa.PrimaryKeyConstraint("list_id", "person_key", name=op.f("pk_optout_entries")),
    )
    op.create_table(
        "release_subjects",
        sa.Column("target_project", sa.String(length=63), nullable=False),
        sa.Column("source_subject_id", sa.String(length=32), nullable=False),
        sa.Column("pseudonym", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=63), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["target_project"], ["projects.id"],
                                name=op.f("fk_release_subjects_target_project_projects")),
        sa.ForeignKeyConstraint(["source_subject_id"], ["subjects.id"],
                                name=op.f("fk_release_subjects_source_subject_id_subjects")),
        sa.PrimaryKeyConstraint("target_project", "source_subject_id",
                                name=op.f("pk_release_subjects")),
    )
    op.create_index(op.f("ix_release_subjects_source_subject_id"), "release_subjects",
                    ["source_subject_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_release_subjects_source_subject_id"), table_name="release_subjects")
    op.drop_table("release_subjects")
    op.drop_table("optout_entries")
    op.drop_table("optout_lists")
    op.drop_index(op.f("ix_consents_person_key"), table_name="consents")
    op.drop_table("consents")
    # In place (SQLite 3.35+ drops a column without copying the table its keys point at).
    op.drop_column("subjects", "withdrawn_at")
