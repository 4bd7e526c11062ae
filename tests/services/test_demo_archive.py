"""The demo archive ``make run`` serves: synthetic studies with fictional clinical histories
dated around them, and an (empty) opt-out list so that shares work."""

from __future__ import annotations

from datetime import date

from sqlalchemy import text

from imagebank.services.archive import Archive
from imagebank.services.consent import optout_versions
from imagebank.services.demo import SYNTHETIC_PROJECT, build_demo


def test_the_demo_has_clinical_facts_beside_its_studies(sqlite_archive: Archive) -> None:
    result = build_demo(sqlite_archive, studies=4, shared=None)
    assert result[SYNTHETIC_PROJECT]["stored"] > 0
    facts = result[SYNTHETIC_PROJECT]["clinical_facts"]
    assert facts == sqlite_archive.stats()["clinical_facts"] > 0
    with sqlite_archive.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT s.patient_id, f.start, st.study_date FROM clinical_facts f "
            "JOIN subjects s ON s.id = f.subject_id JOIN studies st ON st.subject_id = s.id "
            "WHERE f.code = 'C34.1'")).all()
    # The diagnosis is linked to the patient's images, 30 days before their first study.
    assert rows and rows[0][0] == "SYN0000000"
    first = min(str(r[2]) for r in rows)
    start = rows[0][1] if isinstance(rows[0][1], str) else rows[0][1].isoformat()
    diagnosed = date.fromisoformat(str(start)[:10])
    assert (date(int(first[:4]), int(first[4:6]), int(first[6:])) - diagnosed).days == 30
    assert [v["entries"] for v in optout_versions(sqlite_archive)] == [0]
    again = build_demo(sqlite_archive, studies=4, shared=None)  # topping up adds nothing
    assert sqlite_archive.stats()["clinical_facts"] == facts
    assert again[SYNTHETIC_PROJECT]["stored"] == 0 and len(optout_versions(sqlite_archive)) == 1
