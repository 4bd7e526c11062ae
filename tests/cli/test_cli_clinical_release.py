"""``imagebank share --clinical`` and ``imagebank export --clinical --subject`` (decision
0026): the clinical tables beside the images, said in the summary and the JSON lines, and the
refusals as one line."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
from clikit import assert_one_line_error, cli, run

from imagebank.index.tables import ClinicalFact
from imagebank.services.archive import Archive
from testkit import (
    REPO,
    add_clinical_patient,
    nhs_numbers,
    optout_list,
    write_nhs_study,
)

LEEDS = REPO / "docs" / "policies" / "leeds.yaml"


def _site(tmp_path: Path, patients: int = 2) -> tuple[Path, dict[str, str]]:
    """A data folder whose project "site" holds patients with images and FHIR facts, and a
    research project "lab" keeping modified dates: ({NHS number: subject ID})."""
    data = tmp_path / "data"
    cli("project", "create", "site", data=data)
    cli("project", "create", "lab", "--research", "--policy", LEEDS, "--option",
        "retain_long_modified_dates", data=data)
    cli("optout", "import", optout_list(tmp_path), "--date", "2026-11-01", data=data)
    numbers = nhs_numbers(patients)
    with Archive.open(data, workers=1) as archive:
        for i, nhs in enumerate(numbers):
            add_clinical_patient(archive, tmp_path / "inputs", "site", nhs, i, bundle=i)
        subjects = {str(s["patient_id"]): str(s["id"]) for s in archive.subjects("site")}
    return data, {nhs: subjects[nhs] for nhs in numbers}


def test_share_with_clinical_tables(tmp_path: Path) -> None:
    data, subjects = _site(tmp_path)
    shared = cli("share", "--from", "site", "--to", "lab", "--clinical", data=data)
    lines = shared.stdout.strip().splitlines()
    assert lines[0].startswith("8 of 8 objects released (2 patients, 0 there already)")
    assert lines[1].startswith("Clinical tables: ") and " of 2 patients; " in lines[1]
    assert lines[1].endswith("facts.csv written, facts.parquet written, subjects.csv "
                             "written, subjects.parquet written.")
    with Archive.open(data, workers=1) as archive:
        names = sorted(str(r["name"]).split("-", 2)[2]
                       for r in archive.resources("lab", "project", "lab"))
        pseudonyms = {s["patient_id"] for s in archive.studies("lab")}
        [facts] = [r for r in archive.resources("lab", "project", "lab")
                   if str(r["name"]).endswith("-facts.parquet")]
        rows = pq.read_table(io.BytesIO(archive.store.get(facts["object_key"]))).to_pylist()
    assert names == ["facts.csv", "facts.parquet", "subjects.csv", "subjects.parquet"]
    assert {r["patient"] for r in rows} == pseudonyms and len(pseudonyms) == 2
    again = cli("share", "--from", "site", "--to", "lab", "--clinical", data=data)
    assert "facts.csv unchanged, facts.parquet unchanged" in again.stdout
    assert not any(nhs in shared.stdout + again.stdout for nhs in subjects)


def test_export_of_chosen_subjects_with_json_lines(tmp_path: Path) -> None:
    data, subjects = _site(tmp_path)
    first = next(iter(subjects.values()))
    out = tmp_path / "out"
    result = run("export", "site", out, "--policy", LEEDS, "--option",
                 "retain_long_modified_dates", "--clinical", "--subject", first, "--jsonl",
                 data=data)
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["event"] == "summary" and summary["patients"] == 1
    assert summary["clinical"]["patients"] == 1
    with open(out / "clinical" / "facts.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == summary["clinical"]["facts"] > 0
    [patient] = [p.name for p in out.iterdir() if p.name.startswith("IB")]
    assert {r["patient"] for r in rows} == {patient}


def test_clinical_tables_to_a_dicom_node_are_refused(tmp_path: Path) -> None:
    data, _subjects = _site(tmp_path, patients=1)
    refused = cli("export", "site", "dicom://PACS@127.0.0.1:104", "--policy", LEEDS,
                  "--clinical", data=data, expect=2)
    assert_one_line_error(refused, "images only")
    unknown = cli("share", "--from", "site", "--to", "lab", "--subject", "0" * 32, data=data,
                  expect=2)
    assert_one_line_error(unknown, "No subject")


def _extra_study(data: Path, tmp_path: Path, nhs: str) -> None:
    """A second study (MR) of the patient whose PatientID is ``nhs``."""
    folder = tmp_path / "extra"
    write_nhs_study(folder, 0, nhs, study_number=1, modality="MR")
    cli("ingest", folder, "-p", "site", data=data)


def test_cohort_release_takes_the_matched_people_and_studies(tmp_path: Path) -> None:
    data, subjects = _site(tmp_path)
    nhs_a = next(iter(subjects))
    _extra_study(data, tmp_path, nhs_a)  # patient A: a CT and an MR study
    # Only the first bundle's patient had a myocardial infarction (SNOMED 22298006).
    query = "condition[SNOMED:22298006] and imaging[modality = CT]"
    shared = cli("cohort-release", query, "-p", "site", "--to", "lab", "--clinical",
                 data=data)
    assert shared.stdout.startswith("4 of 4 objects released (1 patients, 0 there already)")
    with Archive.open(data, workers=1) as archive:
        studies = archive.studies("lab")
        [facts] = [r for r in archive.resources("lab", "project", "lab")
                   if str(r["name"]).endswith("-facts.parquet")]
        rows = pq.read_table(io.BytesIO(archive.store.get(facts["object_key"]))).to_pylist()
        with archive.sessions.begin() as session:
            expected = session.query(ClinicalFact).filter(
                ClinicalFact.subject_id == subjects[nhs_a]).count()
    assert [s["modalities_in_study"] for s in studies] == ["CT"]  # not the MR study
    assert len(rows) == expected and {r["patient"] for r in rows} == {studies[0]["patient_id"]}
    [manifest_path] = (data / "releases").glob("*.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["cohort"] == query
    assert manifest["clinical"]["patients"] == 1
    # Exported instead: the same people, to a zip; a query that matches no one is refused.
    out = tmp_path / "cohort.zip"
    exported = cli("cohort-release", query, "-p", "site", "--out", out, "--policy", LEEDS,
                   "--clinical", data=data)
    assert "4 of 4 objects released (1 patients" in exported.stdout
    nobody = cli("cohort-release", "condition[SNOMED:1234567]", "-p", "site", "--to", "lab",
                 data=data, expect=2)
    assert_one_line_error(nobody, "matches no one")
    bad = cli("cohort-release", "condition[SNOMED:", "-p", "site", "--to", "lab", data=data,
              expect=2)
    assert bad.stderr.startswith("error: ")
