"""ingest/fhir.py on the real synthea data: bundles and bulk NDJSON into clinical records,
counted independently with plain json; problems name where, never a value."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from imagebank.domain.clinical import NHS_NUMBER_SYSTEM, ClinicalRecord, FactKind, PatientRef
from imagebank.ingest.fhir import FhirProblem, FhirReader, PatientFact, fhir_datetime
from testkit import SHARED_DATA

BUNDLES = SHARED_DATA / "synthea-fhir-r4"
NDJSON = SHARED_DATA / "synthea-bulk-ndjson-10"
KINDS = {
    "Condition": "condition",
    "Observation": "observation",
    "Procedure": "procedure",
    "MedicationRequest": "medication",
    "MedicationStatement": "medication",
    "Encounter": "encounter",
    "DiagnosticReport": "report",
    "ImagingStudy": "imaging_study",
}
VALUES = ("valueQuantity", "valueCodeableConcept", "valueString", "valueInteger", "valueBoolean")


def _resources(folder: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.json")):
        out += [e["resource"] for e in json.loads(path.read_text())["entry"]]
    for path in sorted(folder.glob("*.ndjson")):
        out += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out


def _expected_facts(resources: list[dict[str, Any]]) -> Counter[str]:
    expected: Counter[str] = Counter()
    for r in resources:
        kind = KINDS.get(r["resourceType"])
        if kind:
            expected[kind] += 1
            for component in r.get("component", []):
                expected[kind] += any(v in component for v in VALUES)
    return expected


def _split(items: list[Any]) -> tuple[list[ClinicalRecord], list[FhirProblem]]:
    records = [i for i in items if isinstance(i, ClinicalRecord)]
    problems = [i for i in items if isinstance(i, FhirProblem)]
    assert len(records) + len(problems) == len(items)
    return records, problems


@pytest.mark.parametrize("folder", [BUNDLES, NDJSON], ids=["bundles", "ndjson"])
def test_counts_match_a_plain_json_count(folder: Path) -> None:
    resources = _resources(folder)
    reader = FhirReader()
    records, problems = _split(list(reader.records([folder])))
    assert problems == []
    patients = [r for r in resources if r["resourceType"] == "Patient"]
    assert len(records) == len(patients) > 0
    assert sorted(r.source_id for r in records) == sorted(f"Patient/{p['id']}" for p in patients)
    got: Counter[str] = Counter()
    for record in records:
        got.update(f.kind.value for f in record.facts)
    expected = _expected_facts(resources)
    assert got == expected
    assert dict(reader.facts) == dict(expected)
    assert reader.resources == Counter(r["resourceType"] for r in resources) + (
        Counter(Bundle=len(list(folder.glob("*.json"))))
    )
    read = set(KINDS) | {"Patient", "Medication"}
    assert reader.skipped == Counter(
        r["resourceType"] for r in resources if r["resourceType"] not in read
    )
    # Every fact sits under the patient its resource names.
    owner = {}
    for r in resources:
        ref = (r.get("subject") or r.get("patient") or {}).get("reference", "")
        if r["resourceType"] in KINDS:
            owner[f"{r['resourceType']}/{r['id']}"] = "Patient/" + ref.rsplit(":", 1)[-1].rsplit(
                "/", 1
            )[-1]
    for record in records:
        for fact in record.facts:
            assert owner[fact.source_id.split("#")[0]] == record.source_id


def test_both_folders_together_and_streaming() -> None:
    reader = FhirReader()
    items = list(reader.read([BUNDLES, NDJSON]))
    records = [i for i in items if isinstance(i, ClinicalRecord)]
    facts = [i for i in items if isinstance(i, PatientFact)]
    assert not [i for i in items if isinstance(i, FhirProblem)]
    assert len(records) == 6 + 13
    assert all(r.facts == [] for r in records)
    # A record comes before its facts.
    seen: set[str] = set()
    for item in items:
        if isinstance(item, ClinicalRecord):
            seen.add(item.source_id)
        elif isinstance(item, PatientFact):
            assert item.patient in seen
    assert len(facts) == sum(_expected_facts(_resources(BUNDLES) + _resources(NDJSON)).values())


def test_fields_of_the_facts() -> None:
    records, _ = _split(list(FhirReader().records([BUNDLES])))
    facts = [f for r in records for f in r.facts]
    studies = [f for f in facts if f.kind is FactKind.IMAGING_STUDY]
    assert len(studies) == 6
    for path in BUNDLES.glob("*.json"):
        for entry in json.loads(path.read_text())["entry"]:
            resource = entry["resource"]
            if resource["resourceType"] == "ImagingStudy":
                uid = resource["identifier"][0]["value"].removeprefix("urn:oid:")
                study = next(f for f in studies if f.source_id.endswith(resource["id"]))
                assert study.study_uids == (uid,)
                assert study.modalities == (resource["series"][0]["modality"]["code"],)
                assert study.start is not None and study.start.tzinfo is not None
    height = next(f for f in facts if f.code == "8302-2")
    assert height.system == "LOINC" and height.unit == "cm" and height.value_number
    pressures = [f for f in facts if "#component" in f.source_id]
    assert {f.code for f in pressures} >= {"8480-6", "8462-4"}  # systolic, diastolic
    assert all(f.value_number is not None and f.unit == "mm[Hg]" for f in pressures)
    coded = [f for f in facts if f.value_system]
    assert coded and all(f.value_text for f in coded)
    conditions = [f for f in facts if f.kind is FactKind.CONDITION]
    assert all(f.system == "SNOMED" and f.code and f.start for f in conditions)
    medications = [f for f in facts if f.kind is FactKind.MEDICATION]
    assert medications and all(f.system == "RXNORM" and f.code for f in medications)
    reports = [f for f in facts if f.kind is FactKind.REPORT]
    assert reports and all(f.value_text == "" for f in reports)
    deceased = [r for r in records if r.deceased is not None]
    assert len(deceased) == 1
    assert {r.sex for r in records} == {"M"}


def test_times() -> None:
    assert fhir_datetime("2019").isoformat() == "2019-01-01T00:00:00+00:00"
    assert fhir_datetime("2019-05").isoformat() == "2019-05-01T00:00:00+00:00"
    assert fhir_datetime("2019-05-07").isoformat() == "2019-05-07T00:00:00+00:00"
    assert fhir_datetime("2019-05-07T10:00:00-04:00").isoformat() == "2019-05-07T14:00:00+00:00"
    assert fhir_datetime("2019-05-07T10:00:00.123Z").isoformat() == (
        "2019-05-07T10:00:00.123000+00:00"
    )
    for bad in ("2019-13", "2019-02-30", "20190507", "yesterday", "2019-05-07 10:00", 2019):
        with pytest.raises(ValueError):
            fhir_datetime(bad)


def _valid_nhs_number() -> str:
    for n in range(999_000_001, 999_001_000):
        nine = str(n)
        total = sum(int(d) * w for d, w in zip(nine, range(10, 1, -1), strict=True))
        check = (11 - total % 11) % 11
        if check != 10:
            return nine + str(check)
    raise AssertionError


def _bundle_copy(tmp_path: Path) -> tuple[Path, dict[str, Any], list[str]]:
    """A copy of one synthea bundle under a neutral name, and the patient's identifying
    strings (names, identifier values) that no message may hold."""
    source = sorted(BUNDLES.glob("*.json"))[0]
    bundle = json.loads(source.read_text())
    patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] ==
                   "Patient")
    secrets = [i["value"] for i in patient["identifier"]]
    for name in patient["name"]:
        secrets += [name["family"], *name["given"]]
    return tmp_path / "bundle.json", bundle, secrets


def test_an_nhs_number_identifier(tmp_path: Path) -> None:
    path, bundle, _ = _bundle_copy(tmp_path)
    number = _valid_nhs_number()
    patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] ==
                   "Patient")
    spaced = f"{number[:3]} {number[3:6]} {number[6:]}"
    patient["identifier"].append({"system": NHS_NUMBER_SYSTEM, "value": spaced})
    path.write_text(json.dumps(bundle))
    records, problems = _split(list(FhirReader().records([path])))
    assert problems == []
    (record,) = records
    assert PatientRef("NHS", number) in record.identifiers
    assert record.preferred() == PatientRef("NHS", number)


def _assert_clean(problems: list[FhirProblem], secrets: list[str]) -> None:
    for problem in problems:
        for secret in secrets:
            assert secret not in problem.message, (problem, secret)
            assert secret not in problem.label


def test_problems_name_where_and_never_a_value(tmp_path: Path) -> None:
    path, bundle, secrets = _bundle_copy(tmp_path)
    entries = bundle["entry"]
    patient = next(e["resource"] for e in entries if e["resource"]["resourceType"] == "Patient")
    observation_at = next(
        i for i, e in enumerate(entries)
        if e["resource"]["resourceType"] == "Observation" and "valueQuantity" in e["resource"]
    )
    # An invalid NHS number (a wrong check digit) that holds the patient's SSN digits.
    good = _valid_nhs_number()
    bad = good[:9] + str((int(good[9]) + 1) % 10)
    secrets.append(bad)
    patient["identifier"].append({"system": NHS_NUMBER_SYSTEM, "value": bad})
    # A resource that fails R4 validation: a quantity that is not a number.
    entries[observation_at]["resource"]["valueQuantity"]["value"] = patient["name"][0]["family"]
    path.write_text(json.dumps(bundle))

    ndjson = tmp_path / "Observation.000.ndjson"
    good_line = json.dumps(entries[observation_at + 1]["resource"])
    orphan = dict(entries[observation_at + 2]["resource"])
    orphan["subject"] = {"reference": "Patient/" + secrets[0] + "-missing"}
    wrong_type = dict(entries[observation_at + 3]["resource"], resourceType="Observaton")
    ndjson.write_text(
        "\n".join([
            good_line,
            json.dumps(orphan),
            good_line[: len(good_line) // 2],  # truncated
            json.dumps(wrong_type),
            "[1, 2]",
        ]) + "\n"
    )
    truncated = tmp_path / "truncated.json"
    truncated.write_text(path.read_text()[:5000])

    reader = FhirReader()
    records, problems = _split(list(reader.records([path, ndjson, truncated])))
    assert len(records) == 1
    assert "NHS" not in {i.issuer for i in records[0].identifiers}  # left out, patient kept
    by_reason = {(p.reason, p.label) for p in problems}
    assert by_reason == {
        ("bad_nhs_number", f"{path} entry 0"),
        ("invalid", f"{path} entry {observation_at}"),
        ("orphan", f"{ndjson}:2"),
        ("not_json", f"{ndjson}:3"),
        ("not_fhir", f"{ndjson}:4"),
        ("not_fhir", f"{ndjson}:5"),
        ("not_json", str(truncated)),
    }, problems
    invalid = next(p for p in problems if p.reason == "invalid")
    assert "Observation" in invalid.message and "valueQuantity.value" in invalid.message
    orphan_problem = next(p for p in problems if p.reason == "orphan")
    assert "Observation" in orphan_problem.message
    _assert_clean(problems, secrets)
    # One bad resource never stops the rest: the good line in the NDJSON is a fact.
    assert any(f.source_id == f"Observation/{json.loads(good_line)['id']}"
               for f in records[0].facts)
    assert reader.problems == Counter(p.reason for p in problems)


def test_strict_mode_runs_the_r4b_model(tmp_path: Path) -> None:
    path, bundle, secrets = _bundle_copy(tmp_path)
    entries = bundle["entry"]
    at = next(i for i, e in enumerate(entries) if e["resource"]["resourceType"] == "Condition")
    # An element R4 does not have: only the full model sees it.
    entries[at]["resource"]["diagnosisNote"] = secrets[-1]
    path.write_text(json.dumps(bundle))
    records, problems = _split(list(FhirReader().records([path])))
    assert problems == [] and len(records) == 1
    records, problems = _split(list(FhirReader(strict=True).records([path])))
    (problem,) = problems
    assert problem.reason == "invalid" and problem.label == f"{path} entry {at}"
    assert "Condition" in problem.message and "diagnosisNote" in problem.message
    _assert_clean(problems, secrets)
    expected = _expected_facts([e["resource"] for e in entries])
    expected["condition"] -= 1
    assert Counter(f.kind.value for f in records[0].facts) == expected


def test_a_patient_in_a_later_file_adopts_the_waiting_facts(tmp_path: Path) -> None:
    source = NDJSON / "Condition.000.ndjson"
    conditions = tmp_path / "a" / "Condition.000.ndjson"
    conditions.parent.mkdir()
    shutil.copyfile(source, conditions)
    patients = tmp_path / "b" / "people.json"  # not named Patient.*: read after
    patients.parent.mkdir()
    lines = (NDJSON / "Patient.000.ndjson").read_text().splitlines()
    patients.write_text(json.dumps({
        "resourceType": "Bundle", "type": "collection",
        "entry": [{"resource": json.loads(line)} for line in lines],
    }))
    records, problems = _split(list(FhirReader().records([conditions, patients])))
    assert problems == []
    assert sum(len(r.facts) for r in records) == len(source.read_text().splitlines())
