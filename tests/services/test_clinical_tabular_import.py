"""Clinical tables into the index (``import_clinical(..., mapping=...)``, decision 0024): CSV and
Parquet give the same facts, records join the subject of the patient's images by NHS number,
a re-import adds nothing, bad rows and bad mappings are reported; SQLite and PostgreSQL.
Synthetic data only."""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import text

from imagebank.domain.clinical_mapping import MappingError
from imagebank.domain.errors import InvalidInputError
from imagebank.services.archive import Archive
from imagebank.services.clinical import import_clinical
from testkit import nhs_numbers, write_nhs_study

MAPPING = """\
version: 1
source: gp-pathology
columns:
  patient: nhs_number
  kind: type
  code: code
  system: code_system
  display: term
  value: result
  unit: units
  date: taken
  status: status
"""
#: Conditions and observations, from two code systems, without row IDs (hashed).
GOOD = MAPPING + """\
fixed:
  issuer: NHS
date_formats:
  date: "%d/%m/%Y"
empty_values: ["", "NULL"]
"""
HEADER = ["nhs_number", "type", "code", "code_system", "term", "result", "units", "taken",
          "status"]


def _rows(patients: list[str]) -> list[list[str]]:
    rows = []
    for i, nhs in enumerate(patients):
        rows.append([nhs, "condition", "C34.1", "ICD10", "Upper lobe, bronchus or lung",
                     "NULL", "NULL", f"{1 + i:02d}/03/2019", "active"])
        rows.append([nhs, "Observation", "4548-4", "http://loinc.org", "HbA1c", f"{5 + i}.5",
                     "%", f"{1 + i:02d}/04/2019", "final"])
        rows.append([nhs, "observation", "72166-2", "LOINC", "Tobacco smoking status",
                     "Never smoker", "NULL", f"{1 + i:02d}/05/2019", "final"])
    return rows


def _csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as out:
        csv.writer(out).writerows([HEADER, *rows])
    return path


def _parquet(path: Path, rows: list[list[str]]) -> Path:
    """The same rows, typed: the NHS number a number, the date a date, NULL a null."""
    columns: dict[str, Any] = {name: [None if r[i] == "NULL" else r[i] for r in rows]
                               for i, name in enumerate(HEADER)}
    columns["nhs_number"] = pa.array([int(r[0]) for r in rows], pa.int64())
    columns["taken"] = pa.array([datetime.strptime(r[7], "%d/%m/%Y").date() for r in rows],
                                pa.date32())
    pq.write_table(pa.table(columns), path)
    return path


def _facts(archive: Archive, project: str) -> list[tuple[Any, ...]]:
    with archive.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT s.patient_id, s.issuer_of_patient_id, f.kind, f.system, f.code, f.display, "
            "f.value_number, f.value_text, f.unit, f.start, f.status FROM clinical_facts f "
            "JOIN subjects s ON s.id = f.subject_id WHERE f.project_id = :p "
            "ORDER BY s.patient_id, f.start, f.code"), {"p": project})
        # The start as text to the second: SQLite gives text, PostgreSQL an aware datetime.
        return [(*row[:9], str(row[9])[:19].replace("T", " "), row[10]) for row in rows]


def test_csv_and_parquet_give_the_same_facts_and_a_reimport_adds_nothing(
        archive: Archive, tmp_path: Path) -> None:
    patients = nhs_numbers(4)
    rows = _rows(patients)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(GOOD)
    csv_file = _csv(tmp_path / "extract.csv", rows)
    archive.create_project("site")
    summary = import_clinical(archive, [csv_file], "site", mapping=mapping)
    assert summary.ok, summary.problems
    assert (summary.patients, summary.new_subjects, summary.facts, summary.added) == (4, 4, 12, 12)
    assert summary.by_kind == {"condition": 4, "observation": 8}
    assert summary.as_dict()["resources"] == 12
    facts = _facts(archive, "site")
    assert facts[:3] == [
        (patients[0], "NHS", "condition", "ICD10", "C34.1", "Upper lobe, bronchus or lung",
         None, "", "", facts[0][9], "active"),
        (patients[0], "NHS", "observation", "LOINC", "4548-4", "HbA1c", 5.5, "", "%",
         facts[1][9], "final"),
        (patients[0], "NHS", "observation", "LOINC", "72166-2", "Tobacco smoking status", None,
         "Never smoker", "", facts[2][9], "final"),
    ]
    assert [f[9] for f in facts[:3]] == [
        "2019-03-01 00:00:00", "2019-04-01 00:00:00", "2019-05-01 00:00:00"]
    # The same rows as Parquet (typed columns) into another project: the same facts.
    parquet_file = _parquet(tmp_path / "extract.parquet", rows)
    archive.create_project("copy")
    from_parquet = import_clinical(archive, [parquet_file], "copy", mapping=mapping)
    assert (from_parquet.facts, from_parquet.added) == (12, 12) and from_parquet.ok
    assert _facts(archive, "copy") == facts
    # Again, CSV then Parquet of the same rows into the first project: nothing new.
    for again in (import_clinical(archive, [csv_file], "site", mapping=mapping),
                  import_clinical(archive, [parquet_file], "site", mapping=mapping)):
        assert (again.facts, again.added, again.linked, again.new_subjects) == (12, 0, 4, 0)
    assert len(_facts(archive, "site")) == 12


def test_rows_join_the_subject_of_the_patients_images(archive: Archive,
                                                      tmp_path: Path) -> None:
    archive.create_project("site")
    nhs, other = nhs_numbers(2)
    images = write_nhs_study(tmp_path / "images", 0, nhs)
    assert archive.ingest([tmp_path / "images"], "site", workers=1).stored == len(images)
    [study] = archive.studies("site")
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(GOOD)
    # The NHS number written with spaces, as a letter would.
    spaced = f"{nhs[:3]} {nhs[3:6]} {nhs[6:]}"
    rows = [[spaced, *row[1:]] for row in _rows([nhs])] + _rows([other])
    summary = import_clinical(archive, [_csv(tmp_path / "x.csv", rows)], "site",
                              mapping=mapping)
    assert (summary.patients, summary.linked, summary.new_subjects) == (2, 1, 1)
    with archive.engine.connect() as conn:
        owners = dict(conn.execute(text(
            "SELECT s.patient_id, COUNT(*) FROM clinical_facts f JOIN subjects s "
            "ON s.id = f.subject_id GROUP BY s.patient_id")).all())
        subject = conn.execute(text("SELECT DISTINCT subject_id FROM clinical_facts f JOIN "
                                    "subjects s ON s.id = f.subject_id WHERE s.patient_id = :n"),
                               {"n": nhs}).scalar_one()
    assert owners == {nhs: 3, other: 3}
    assert subject == study["subject_id"]


def test_bad_rows_are_reported_by_row_without_values(archive: Archive, tmp_path: Path) -> None:
    archive.create_project("site")
    [nhs] = nhs_numbers(1)
    wrong = nhs[:9] + str((int(nhs[9]) + 1) % 10)
    rows = _rows([nhs])
    rows.insert(1, [wrong, *rows[0][1:]])                           # line 3
    rows.insert(2, [nhs, "condition", "C34.1", "ICD10", "", "", "", "2019-03-01", ""])  # line 4
    rows.insert(3, [nhs, "diagnosis", "C34.1", "ICD10", "", "", "", "01/03/2019", ""])  # 5
    rows.insert(4, [nhs, "condition", "NULL", "ICD10", "", "", "", "01/03/2019", ""])   # 6
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(GOOD)
    source = _csv(tmp_path / "x.csv", rows)
    summary = import_clinical(archive, [source], "site", mapping=mapping)
    assert not summary.ok
    assert summary.reasons == {"bad_nhs_number": 1, "bad_date": 1, "invalid": 1, "missing": 1}
    assert [(p.label, p.reason) for p in summary.problems] == [
        (f"{source}:3", "bad_nhs_number"), (f"{source}:4", "bad_date"),
        (f"{source}:5", "invalid"), (f"{source}:6", "missing")]
    assert [p.message for p in summary.problems] == [
        "column nhs_number is not an NHS number (ten digits with a valid check digit)",
        "column taken is not a date as %d/%m/%Y",
        "column type is not a fact kind (condition, observation, procedure, medication, "
        "encounter, report, imaging_study)",
        "column code is empty; expected a code"]
    assert summary.facts == summary.added == 3 == len(_facts(archive, "site"))
    assert all(wrong not in p.label + p.message for p in summary.problems)


def test_every_mapping_problem_is_reported_at_once(sqlite_archive: Archive,
                                                   tmp_path: Path) -> None:
    sqlite_archive.create_project("site")
    mapping = tmp_path / "bad.yaml"
    mapping.write_text(MAPPING + "fixed:\n  issuer: NHS\n  kind: finding\n  patient: x\n"
                       "date_format: {date: '%d/%m/%Y'}\n")
    source = _csv(tmp_path / "x.csv", _rows(nhs_numbers(1)))
    with pytest.raises(MappingError) as caught:
        import_clinical(sqlite_archive, [source], "site", mapping=mapping)
    assert caught.value.problems == (
        f"{mapping}:15: fixed.kind: also given as columns.kind; expected a column or a fixed "
        "value, not both",
        f"{mapping}:16: fixed.patient: cannot be a fixed value; expected it under columns",
        f"{mapping}:17: date_format: unknown field; did you mean date_formats? expected one of: "
        "version, source, delimiter, empty_values, columns, fixed, date_formats",
    )
    assert sqlite_archive.stats()["clinical_facts"] == 0
    with pytest.raises(MappingError, match="no such file"):
        import_clinical(sqlite_archive, [source], "site", mapping=tmp_path / "none.yaml")
    with pytest.raises(InvalidInputError, match="--strict"):
        import_clinical(sqlite_archive, [source], "site", mapping=mapping, strict=True)
