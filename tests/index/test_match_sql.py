"""Matching conditions run as SQL on a real index, SQLite and PostgreSQL alike."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from imagebank.domain.matching import parse_match
from imagebank.index.matching import condition_clause
from imagebank.index.tables import Series, Study, Subject
from imagebank.services.archive import Archive
from testkit import write_study


def _ids(archive: Archive, model: type, keyword: str, raw: str, *, fuzzy: bool = False
         ) -> set[str]:
    condition = parse_match(keyword, raw, fuzzy=fuzzy)
    assert condition is not None
    column = getattr(model, condition.column)
    with archive.sessions.begin() as session:
        return set(session.scalars(select(model.id).where(condition_clause(condition,
                                                                           column))))


def test_conditions_select_what_dicom_matching_says(archive: Archive, tmp_path: Path) -> None:
    archive.create_project("p")
    for patient in range(3):
        write_study(tmp_path / "in", patient, slices=1,
                    modality="MR" if patient == 2 else "CT")
    archive.ingest([tmp_path / "in"], "p", workers=1)
    studies = archive.studies("p")
    subjects = {s["subject_id"]: s for s in studies}
    assert len(studies) == 3
    first = studies[0]

    # single value, UID list, wildcards, case
    assert _ids(archive, Study, "StudyInstanceUID", first["study_instance_uid"]) == {
        first["id"]}
    uids = "\\".join(s["study_instance_uid"] for s in studies[:2])
    assert _ids(archive, Study, "StudyInstanceUID", uids) == {s["id"] for s in studies[:2]}
    name = first["patient_name"]
    family = name.split("^")[0]
    assert _ids(archive, Subject, "PatientName", family + "^*") == {first["subject_id"]}
    assert _ids(archive, Subject, "PatientName", family.lower() + "^*") == set()
    assert _ids(archive, Subject, "PatientName", family.lower() + "^*", fuzzy=True) == {
        first["subject_id"]}
    assert _ids(archive, Subject, "PatientName", name[:-1] + "?") == {first["subject_id"]}
    assert _ids(archive, Subject, "PatientName", "%") == set()  # SQL wildcards are literal
    assert parse_match("PatientName", "*") is None  # universal: no condition at all
    assert len(subjects) == 3

    # date ranges: inclusive, open at either end
    dates = sorted({s["study_date"] for s in studies})
    low, high = dates[0], dates[-1]
    everything = {s["id"] for s in studies}
    assert _ids(archive, Study, "StudyDate", f"{low}-{high}") == everything
    assert _ids(archive, Study, "StudyDate", f"-{low}") == {
        s["id"] for s in studies if s["study_date"] == low}
    assert _ids(archive, Study, "StudyDate", f"{high}-") == {
        s["id"] for s in studies if s["study_date"] == high}
    assert _ids(archive, Study, "StudyDate", "19000101-19000102") == set()

    # codes and numbers on series
    mr = _ids(archive, Series, "Modality", "MR")
    assert len(mr) == 1
    assert _ids(archive, Series, "Modality", "C?") | mr == _ids(archive, Series, "Modality",
                                                               "??")
    assert _ids(archive, Series, "SeriesNumber", "1") == _ids(archive, Series, "Modality",
                                                               "??")
