"""Clinical data into the index (``services.clinical``): the synthea FHIR bundles and NDJSON,
each fact once, linked to the subject of the patient's images by NHS number, on SQLite and
PostgreSQL."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import text

from imagebank.domain.clinical import is_valid_nhs_number
from imagebank.domain.errors import PermissionDeniedError
from imagebank.ingest.fhir import FhirReader
from imagebank.services.archive import Archive
from imagebank.services.clinical import import_clinical
from testkit import SHARED_DATA, write_nhs_study

BUNDLES = SHARED_DATA / "synthea-fhir-r4"
NDJSON = SHARED_DATA / "synthea-bulk-ndjson-10"


def _nhs_number() -> str:
    return next(str(n) + str(d) for n in range(999_000_001, 999_001_000) for d in range(10)
                if is_valid_nhs_number(str(n) + str(d)))


def _fact_counts(archive: Archive) -> dict[str, int]:
    with archive.engine.connect() as conn:
        rows = conn.execute(text("SELECT kind, COUNT(*) FROM clinical_facts GROUP BY kind"))
        return {str(kind): int(n) for kind, n in rows}


def test_every_fact_is_stored_once_under_its_patient(archive: Archive) -> None:
    archive.create_project("site")
    reader = FhirReader()
    expected = {r.source_id: len(r.facts) for r in reader.records([BUNDLES, NDJSON])
                if hasattr(r, "facts")}
    summary = import_clinical(archive, [BUNDLES, NDJSON], "site")
    assert summary.ok and summary.patients == len(expected) == 19
    assert summary.facts == summary.added == sum(expected.values())
    assert _fact_counts(archive) == dict(reader.facts) == dict(summary.by_kind)
    assert archive.stats()["clinical_facts"] == summary.facts
    assert summary.new_subjects == 19 and len(archive.subjects("site", limit=100)) == 19
    # Again: nothing new.
    again = import_clinical(archive, [BUNDLES, NDJSON], "site")
    assert again.added == 0 and again.facts == summary.facts
    assert again.new_subjects == 0 and again.linked == 19
    assert sum(_fact_counts(archive).values()) == summary.facts


def test_records_join_the_subject_of_the_patients_images(archive: Archive,
                                                         tmp_path: Path) -> None:
    archive.create_project("site")
    nhs = _nhs_number()
    # A patient's images, their PatientID the NHS number, IssuerOfPatientID left empty.
    images = write_nhs_study(tmp_path / "images", 0, nhs)
    assert archive.ingest([tmp_path / "images"], "site", workers=1).stored == len(images)
    [study] = archive.studies("site")
    # The same patient's FHIR bundle, with the NHS number among its identifiers.
    source = sorted(BUNDLES.glob("*.json"))[0]
    bundle = json.loads(source.read_text())
    patient = next(e["resource"] for e in bundle["entry"]
                   if e["resource"]["resourceType"] == "Patient")
    patient["identifier"].append({"system": "https://fhir.nhs.uk/Id/nhs-number",
                                  "value": nhs})
    (tmp_path / "fhir").mkdir()
    (tmp_path / "fhir" / "bundle.json").write_text(json.dumps(bundle))
    summary = import_clinical(archive, [tmp_path / "fhir"], "site")
    assert summary.patients == summary.linked == 1 and summary.new_subjects == 0
    with archive.engine.connect() as conn:
        owners = conn.execute(text("SELECT DISTINCT subject_id FROM clinical_facts")).all()
    assert [row[0] for row in owners] == [study["subject_id"]]


def test_a_research_project_refuses_clinical_data(archive: Archive) -> None:
    archive.create_project("lab", zone="research",
                           policy=(Path(__file__).resolve().parents[2] / "docs" / "policies"
                                   / "leeds.yaml").read_text())
    with pytest.raises(PermissionDeniedError, match="research project"):
        import_clinical(archive, [BUNDLES], "lab")
    assert _fact_counts(archive) == {}


def test_problems_are_counted_and_the_rest_is_imported(sqlite_archive: Archive,
                                                       tmp_path: Path) -> None:
    sqlite_archive.create_project("site")
    folder = tmp_path / "extract"
    shutil.copytree(NDJSON, folder)
    with (folder / "Observation.000.ndjson").open("w") as out:
        out.write('{"resourceType": "Observation", "id": "o1", "status": "final", '
                  '"code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}, '
                  '"subject": {"reference": "Patient/nobody"}}\n')
        out.write('{"resourceType": "Observation", "id": \n')
    summary = import_clinical(sqlite_archive, [folder], "site")
    assert not summary.ok
    assert summary.reasons == {"orphan": 1, "not_json": 1}
    assert summary.facts == sum(_fact_counts(sqlite_archive).values()) > 3000
    assert all("nobody" not in p.message for p in summary.problems)


def test_a_patient_without_identifier_is_a_problem_that_names_no_id(sqlite_archive: Archive,
                                                                    tmp_path: Path) -> None:
    sqlite_archive.create_project("site")
    folder = tmp_path / "extract"
    folder.mkdir()
    (folder / "Patient.000.ndjson").write_text(
        '{"resourceType": "Patient", "id": "9434765919", "gender": "female"}\n')
    (folder / "Condition.000.ndjson").write_text(
        '{"resourceType": "Condition", "id": "c1", "subject": {"reference": '
        '"Patient/9434765919"}, "code": {"coding": [{"system": "http://snomed.info/sct", '
        '"code": "254637007"}]}}\n')
    summary = import_clinical(sqlite_archive, [folder], "site")
    assert summary.reasons == {"no_identifier": 1} and summary.facts == 0
    assert _fact_counts(sqlite_archive) == {}
    assert all("9434765919" not in p.label + p.message for p in summary.problems)
