"""An ingest that stored something leaves the query planner fresh statistics."""

from pathlib import Path

from sqlalchemy import text

from imagebank.services.archive import Archive


def test_ingest_refreshes_planner_statistics(archive: Archive, corpus: Path) -> None:
    archive.create_project("p")
    assert archive.ingest([corpus], "p").stored == 16
    with archive.engine.connect() as conn:
        if archive.engine.dialect.name == "sqlite":
            rows = conn.execute(text("SELECT tbl, idx FROM sqlite_stat1")).all()
            assert ("subjects", "ix_subjects_patient_id") in {tuple(r) for r in rows}
        else:
            analysed = conn.execute(text(
                "SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'studies'"
            )).scalar()
            assert analysed is not None
    assert archive.studies("p", patient_id="SYN0000000")[0]["patient_id"] == "SYN0000000"
