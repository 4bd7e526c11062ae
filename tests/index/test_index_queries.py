"""study_query filters and the index reads, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
from imagebank.index import repo
from imagebank.services.archive import Archive

# (patient n, study number, date, accession, modalities)
STUDIES = [
    (1, 0, "20200101", "ACC-A", ["CT"]),
    (1, 1, "20200315", "ACC-B", ["MR"]),
    (2, 0, "20200315", "ACC-C", ["CT", "MR"]),
    (3, 0, "20211231", "ACC-D", ["CT"]),
    (3, 1, "20220101", "ACC-E", ["MR", "MR"]),
]


def _study_bytes(patient: int, number: int, date: str, accession: str,
                 modalities: list[str]) -> list[tuple[bytes, str]]:
    specs = [SeriesSpec(modality=m, slices=1, rows=32, columns=32,
                        extra={"AccessionNumber": accession}) for m in modalities]
    return [(to_bytes(ds), f"{patient}-{number}-{i}")
            for i, ds in enumerate(make_study(SyntheticPatient.make(patient), study_number=number,
                                              series=specs, study_date=date))]


@pytest.fixture
def filled(archive: Archive) -> Archive:
    archive.create_project("q")
    archive.create_project("other")
    items = [item for s in STUDIES for item in _study_bytes(*s)]
    summary = archive.ingest_bytes(items, "q")
    assert summary.stored == len(items) == 7
    # The same study in another project does not leak into "q" queries.
    assert archive.ingest_bytes(_study_bytes(*STUDIES[0]), "other").stored == 1
    return archive


def _accessions(archive: Archive, project: str | None = "q", **filters: object) -> list[str]:
    return sorted(s["accession_number"] for s in archive.studies(project, **filters))


def test_no_filter(filled: Archive) -> None:
    assert _accessions(filled) == ["ACC-A", "ACC-B", "ACC-C", "ACC-D", "ACC-E"]
    assert _accessions(filled, None) == ["ACC-A", "ACC-A", "ACC-B", "ACC-C", "ACC-D", "ACC-E"]


def test_patient_id(filled: Archive) -> None:
    assert _accessions(filled, patient_id=SyntheticPatient.make(1).patient_id) == [
        "ACC-A", "ACC-B"]
    assert _accessions(filled, patient_id=SyntheticPatient.make(3).patient_id) == [
        "ACC-D", "ACC-E"]
    assert _accessions(filled, patient_id="nobody") == []
    # Exact match, not a prefix.
    assert _accessions(filled, patient_id=SyntheticPatient.make(1).patient_id[:-1]) == []


def test_date_ranges_are_inclusive(filled: Archive) -> None:
    assert _accessions(filled, study_date_from="20200315", study_date_to="20200315") == [
        "ACC-B", "ACC-C"]
    assert _accessions(filled, study_date_from="20200101", study_date_to="20200315") == [
        "ACC-A", "ACC-B", "ACC-C"]
    assert _accessions(filled, study_date_from="20211231") == ["ACC-D", "ACC-E"]
    assert _accessions(filled, study_date_to="20200101") == ["ACC-A"]
    assert _accessions(filled, study_date_from="20200102", study_date_to="20200314") == []
    assert _accessions(filled, study_date_from="20220102") == []


def test_modality_matches_any_series(filled: Archive) -> None:
    assert _accessions(filled, modality="CT") == ["ACC-A", "ACC-C", "ACC-D"]
    assert _accessions(filled, modality="MR") == ["ACC-B", "ACC-C", "ACC-E"]
    assert _accessions(filled, modality="US") == []


def test_accession_and_combined_filters(filled: Archive) -> None:
    assert _accessions(filled, accession_number="ACC-C") == ["ACC-C"]
    assert _accessions(filled, accession_number="ACC") == []
    assert _accessions(filled, modality="MR", study_date_from="20200315",
                       study_date_to="20211231") == ["ACC-B", "ACC-C"]
    assert _accessions(filled, patient_id=SyntheticPatient.make(3).patient_id,
                       modality="CT") == ["ACC-D"]


def test_studies_are_newest_first_with_patient_attributes(filled: Archive) -> None:
    rows = filled.studies("q")
    assert [r["study_date"] for r in rows] == sorted((r["study_date"] for r in rows),
                                                     reverse=True)
    first = rows[0]
    patient = SyntheticPatient.make(3)
    assert first["patient_id"] == patient.patient_id
    assert first["patient_name"] == patient.name
    assert first["issuer_of_patient_id"] == patient.issuer
    assert first["modalities_in_study"] == "MR"
    assert first["num_series"] == 2
    assert [r["accession_number"] for r in filled.studies("q", limit=2, offset=1)] == [
        r["accession_number"] for r in rows[1:3]]


def test_study_query_by_uid_and_subject(filled: Archive) -> None:
    study = filled.studies("q", accession_number="ACC-C")[0]
    with filled.sessions.begin() as session:
        by_uid = session.execute(repo.study_query(
            ["q"], study_instance_uid=study["study_instance_uid"])).all()
        by_subject = session.execute(repo.study_query(["q"], subject_id=study["subject_id"])).all()
        both_projects = session.execute(repo.study_query(
            None, study_instance_uid=filled.studies("q", accession_number="ACC-A")[0][
                "study_instance_uid"])).all()
    assert [row[0].id for row in by_uid] == [study["id"]]
    assert [row[0].id for row in by_subject] == [study["id"]]
    assert len(both_projects) == 2  # the same study UID in "q" and "other"
    assert len({row[0].id for row in both_projects}) == 2


def test_modalities_in_study_combines_series(filled: Archive) -> None:
    study = filled.studies("q", accession_number="ACC-C")[0]
    assert study["modalities_in_study"] == "CT\\MR"
    assert study["num_series"] == 2
    assert study["num_instances"] == 2
    assert {s["modality"] for s in filled.series(study["id"])} == {"CT", "MR"}


def test_find_by_uid(filled: Archive) -> None:
    study = filled.studies("q", accession_number="ACC-B")[0]
    series = filled.series(study["id"])[0]
    instance = filled.instances(series["id"])[0]
    assert [(lvl, r["id"]) for lvl, r in filled.find(study["study_instance_uid"])] == [
        ("study", study["id"])]
    assert [(lvl, r["id"]) for lvl, r in filled.find(series["series_instance_uid"])] == [
        ("series", series["id"])]
    assert [(lvl, r["id"]) for lvl, r in filled.find(instance["sop_instance_uid"])] == [
        ("instance", instance["id"])]
    assert filled.find("1.2.3.4.5.6") == []
