"""The clinical import's write path (decision 0025): patients linked a batch at a time, the
driver-level inserts of ``repo.add_clinical_facts``, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from imagebank.domain.clinical import NHS_NUMBER_SYSTEM
from imagebank.index import repo
from imagebank.index.tables import ClinicalFact
from imagebank.ingest.fhir import FhirReader
from imagebank.services import clinical
from imagebank.services.archive import Archive
from imagebank.services.clinical import import_clinical
from testkit import SHARED_DATA, nhs_numbers

BUNDLES = sorted((SHARED_DATA / "synthea-fhir-r4").glob("*.json"))
NDJSON = SHARED_DATA / "synthea-bulk-ndjson-10"


def _subject(archive: Archive, project: str) -> str:
    subject_id = archive.ids.subject_id(project, "S1", "urn:test")
    with archive.sessions.begin() as session:
        repo.add_subjects(session, [{"id": subject_id, "project_id": project,
                                     "patient_id": "S1", "issuer_of_patient_id": "urn:test",
                                     "patient_birth_date": None, "patient_sex": None,
                                     "patient_name": None}])
    return subject_id


def _rows(subject: str, first: int, count: int) -> list[dict[str, Any]]:
    base = datetime(2019, 5, 1, 10, 30, tzinfo=UTC)
    return [{"id": f"{n:032x}", "project_id": "site", "subject_id": subject,
             "kind": "observation", "system": "LOINC", "code": "718-7",
             "display": "Hemoglobin", "value_number": None if n % 3 == 0 else n / 10,
             "value_text": "", "value_system": "", "unit": "g/dL",
             "start": base + timedelta(days=n, microseconds=n % 7),
             "end": None if n % 2 else base + timedelta(days=n, hours=1),
             "status": "final", "detail": "{}" if n % 5 else '{"other_codes":[["SNOMED","1"]]}'}
            for n in range(first, first + count)]


def test_facts_are_inserted_once_and_read_back_as_written(archive: Archive) -> None:
    archive.create_project("site")
    subject = _subject(archive, "site")
    rows = _rows(subject, 0, 2500)  # more than one multi-row statement on SQLite
    with archive.sessions.begin() as session:
        assert repo.add_clinical_facts(session, rows) == 2500
    with archive.sessions.begin() as session:  # again, with 100 new: only those count
        assert repo.add_clinical_facts(session, rows[::-1] + _rows(subject, 2500, 100)) == 100
    with archive.sessions.begin() as session:
        stored = {r.id: r for r in session.scalars(select(ClinicalFact))}
        # Times compare as SQLAlchemy writes them (the cohort compiler's date ranges).
        after = datetime(2019, 5, 1, 10, 30, tzinfo=UTC) + timedelta(days=2000)
        later = session.scalar(select(func.count()).select_from(ClinicalFact)
                               .where(ClinicalFact.start >= after))
    assert len(stored) == 2600 and later == 600
    for row in rows[:50]:
        got = stored[row["id"]]
        assert repo.aware(got.start) == row["start"]
        assert repo.aware(got.end) == row["end"]
        assert got.value_number == row["value_number"] and got.detail == row["detail"]
        assert (got.kind, got.system, got.code, got.unit, got.status) == (
            "observation", "LOINC", "718-7", "g/dL", "final")
        assert repo.aware(got.imported_at) is not None


def _bundle(tmp_path: Path, name: str, source: Path, nhs: str) -> Path:
    """A copy of a synthea bundle whose patient also carries ``nhs``."""
    data = json.loads(source.read_text())
    patient = next(e["resource"] for e in data["entry"]
                   if e["resource"]["resourceType"] == "Patient")
    patient["identifier"].insert(0, {"system": NHS_NUMBER_SYSTEM, "value": nhs})
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_small_batches_give_the_same_import(archive: Archive, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Many batches: every fact once, under its patient; two patients with one NHS number
    in one batch are one subject."""
    archive.create_project("site")
    [nhs] = nhs_numbers(1)
    # Two bundles of two different synthea patients that name the same NHS number: the
    # second joins the subject the first made, in the same batch.
    first = _bundle(tmp_path, "a.json", BUNDLES[0], nhs)
    second = _bundle(tmp_path, "b.json", BUNDLES[1], nhs)
    monkeypatch.setattr(clinical, "BATCH", 7)
    reader = FhirReader()
    for _ in reader.records([first, second, NDJSON]):
        pass
    reports: list[int] = []
    summary = import_clinical(archive, [first, second, NDJSON], "site",
                              progress=lambda s: reports.append(s.facts))
    assert summary.ok and summary.patients == 15
    assert summary.new_subjects == 14 and summary.linked == 1
    assert summary.facts == summary.added == sum(reader.facts.values()) > 1500
    assert len(reports) > 200 and reports == sorted(reports)
    subjects = {s["patient_id"]: s["id"] for s in archive.subjects("site", limit=100)}
    assert len(subjects) == 14 and nhs in subjects
    with archive.sessions.begin() as session:
        per_subject = dict(session.execute(
            select(ClinicalFact.subject_id, func.count()).group_by(ClinicalFact.subject_id)
        ).all())
    counts = {r.source_id: len(r.facts) for r in FhirReader().records([first, second])
              if hasattr(r, "facts")}
    assert per_subject[subjects[nhs]] == sum(counts.values())
    assert sum(per_subject.values()) == summary.facts


class _Stop(Exception):
    pass


def test_an_import_stopped_by_its_progress_keeps_whole_batches(
        sqlite_archive: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    sqlite_archive.create_project("site")
    monkeypatch.setattr(clinical, "BATCH", 100)
    seen: list[int] = []

    def progress(summary: clinical.ClinicalSummary) -> None:
        seen.append(summary.facts)
        if len(seen) == 3:
            raise _Stop

    with pytest.raises(_Stop):
        import_clinical(sqlite_archive, [NDJSON], "site", progress=progress)
    # A batch is committed before its progress report (a job's cancellation): three.
    assert seen == [100, 200, 300]
    assert sqlite_archive.stats()["clinical_facts"] == 300
