"""Clinical tables in releases (``services.clinical_release``, decision 0026): a subject with
images and imported FHIR facts shared into a research project and exported to a folder and a
zip, on SQLite and PostgreSQL. The tables' ``patient`` is the images' PatientID pseudonym,
their times moved by the very offset the images' StudyDate moved, CSV and Parquet hold the
same rows, and nothing identifying leaves."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from sqlalchemy import select, text

from imagebank.dicom.synthetic import SyntheticPatient
from imagebank.domain.errors import InvalidInputError, NotFoundError
from imagebank.index.tables import ClinicalFact
from imagebank.services.archive import Archive
from imagebank.services.clinical_release import FACT_COLUMNS, read_csv_table, schemas
from imagebank.services.release import ReleaseSpec, run_release
from testkit import REPO, add_clinical_patient, import_optout_list, nhs_numbers

LEEDS = (REPO / "docs" / "policies" / "leeds.yaml").read_text()
OPTIONS = ["retain_long_modified_dates", "retain_patient_characteristics"]


def _world(archive: Archive, tmp_path: Path, patients: int = 1,
           options: list[str] = OPTIONS) -> list[tuple[str, Path]]:
    archive.create_project("site")
    archive.create_project("lab", zone="research", policy=LEEDS, options=options)
    import_optout_list(archive)
    made = []
    for i, nhs in enumerate(nhs_numbers(patients)):
        made.append((nhs, add_clinical_patient(archive, tmp_path, "site", nhs, i, bundle=i)))
    return made


def _share(archive: Archive, job: str, **kwargs: Any) -> dict[str, Any]:
    return run_release(archive, ReleaseSpec("share", "site", "lab", clinical=True, **kwargs),
                       job, workers=1)


def _identifiers(nhs: str, bundle: Path, patient: int = 0) -> list[str]:
    """What identifies the patient: the NHS number, the images' name and birth date, and from
    the FHIR bundle every resource ID, identifier, name, birth date, address and telecom."""
    synthetic = SyntheticPatient.make(patient, "")
    values = [nhs, f"{nhs[:3]} {nhs[3:6]} {nhs[6:]}", synthetic.patient_id,
              synthetic.birth_date, *synthetic.name.split("^")]
    for entry in json.loads(bundle.read_text())["entry"]:
        resource = entry["resource"]
        values += [resource["id"], entry.get("fullUrl", "")]
        if resource["resourceType"] == "Patient":
            values += [i["value"] for i in resource.get("identifier", [])]
            for name in resource.get("name", []):
                values += [*name.get("given", []), name.get("family", "")]
            values += [resource.get("birthDate", "")]
            values += [t["value"] for t in resource.get("telecom", [])]
            values += [line for a in resource.get("address", []) for line in a.get("line", [])]
    return [v for v in values if v and len(v) >= 4]


def _csv_rows(data: bytes, table: int = 0) -> list[dict[str, Any]]:
    """A table's CSV read back with its schema (``table`` 0: facts, 1: subjects)."""
    return read_csv_table(io.BytesIO(data), schemas()[table]).to_pylist()


def _header(data: bytes) -> list[str]:
    return next(csv.reader(io.StringIO(data.decode("utf-8"))))


def _parquet_rows(data: bytes) -> list[dict[str, Any]]:
    return pq.read_table(io.BytesIO(data)).to_pylist()


def _resources(archive: Archive, project: str) -> dict[str, bytes]:
    return {str(r["name"]): archive.store.get(str(r["object_key"]))
            for r in archive.resources(project, "project", project)}


def _table(resources: dict[str, bytes], suffix: str) -> bytes:
    [data] = [v for k, v in resources.items() if k.endswith(suffix)]
    return data


def _source_facts(archive: Archive) -> list[dict[str, Any]]:
    f = ClinicalFact
    with archive.engine.connect() as conn:
        rows = conn.execute(select(f.kind, f.system, f.code, f.value_number, f.unit, f.status,
                                   f.start, f.end))
        return [dict(r._mapping) for r in rows]


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def test_a_share_releases_tables_that_join_the_images_with_shifted_dates(
        archive: Archive, tmp_path: Path) -> None:
    [(nhs, bundle)] = _world(archive, tmp_path)
    result = _share(archive, "j1")
    assert result["ok"] and result["written"] == 4
    [study] = archive.studies("lab")
    pseudonym = study["patient_id"]
    assert pseudonym.startswith("IB")
    # The shift the images' StudyDate took.
    [source_study] = archive.studies("site")
    moved = (datetime.strptime(study["study_date"], "%Y%m%d")
             - datetime.strptime(source_study["study_date"], "%Y%m%d")).days
    assert moved < 0
    resources = _resources(archive, "lab")
    assert sorted(k.split("-", 2)[2] for k in resources) == [
        "facts.csv", "facts.parquet", "subjects.csv", "subjects.parquet"]
    assert all(k.startswith("clinical-j1-") for k in resources)
    facts_csv = _csv_rows(_table(resources, "-facts.csv"))
    facts_parquet = _parquet_rows(_table(resources, "-facts.parquet"))
    # CSV and Parquet: the same rows, in the same order, with the same columns.
    assert _header(_table(resources, "-facts.csv")) == list(FACT_COLUMNS)
    assert facts_csv == facts_parquet
    # Every row is the images' patient, every time moved by the images' offset.
    source = _source_facts(archive)
    assert len(facts_parquet) == len(source) == result["clinical"]["facts"] > 50
    assert {r["patient"] for r in facts_parquet} == {pseudonym}

    def key(r: dict[str, Any], shift: int = 0) -> tuple[Any, ...]:
        def at(value: Any) -> datetime | None:
            value = _aware(value)
            return None if value is None else value + timedelta(days=shift)
        return (r["kind"], r["system"], r["code"], r["value_number"], r["unit"], r["status"],
                at(r["start"]), at(r["end"]))

    assert sorted(map(key, facts_parquet), key=repr) == sorted(
        (key(r, moved) for r in source), key=repr)
    # (No check that no released time equals any original one: with facts a whole number of
    # days apart, a random key's shift sometimes moves one onto another's. Each row moved by
    # ``moved`` < 0 days, checked above, is what says that no time is left as it was.)
    # Subjects: sex kept (retain_patient_characteristics), the shifted birth date's year.
    [subject] = _parquet_rows(_table(resources, "-subjects.parquet"))
    synthetic = SyntheticPatient.make(0, "")
    born = datetime.strptime(synthetic.birth_date, "%Y%m%d").date()
    assert subject == {"patient": pseudonym, "sex": synthetic.sex,
                       "birth_year": (born + timedelta(days=moved)).year}
    assert _csv_rows(_table(resources, "-subjects.csv"), 1) == [subject]
    # Nothing identifying, in any file.
    identifiers = _identifiers(nhs, bundle)
    for name, data in resources.items():
        content = data.decode() if name.endswith(".csv") else repr(_parquet_rows(data))
        found = [v for v in identifiers if v in content]
        assert not found, f"{len(found)} identifying values in {name}"
    # The manifest lists the tables, their rows and SHA-256, and the resources they became.
    manifest = json.loads((archive.settings.data / "releases" / "j1.json").read_text())
    section = manifest["clinical"]
    assert section["dates"] == "shifted" and section["patients"] == 1
    assert section["patient_characteristics"] is True
    stored = {r["id"]: r for r in archive.resources("lab", "project", "lab")}
    for table in section["tables"]:
        resource = stored[table["resource"]]
        assert resource["sha256"] == table["sha256"] == hashlib.sha256(
            resources[resource["name"]]).hexdigest()
        assert table["rows"] == (len(source) if "facts" in table["name"] else 1)
    assert not any(v in json.dumps(manifest) for v in identifiers)


def test_a_share_run_again_adds_no_table(archive: Archive, tmp_path: Path) -> None:
    _world(archive, tmp_path)
    first = _share(archive, "j1")
    again = _share(archive, "j2")
    assert again["ok"] and again["unchanged"] == again["written"] == first["written"]
    assert set(again["clinical"]["tables"].values()) == {"unchanged"}
    assert len(archive.resources("lab", "project", "lab")) == 4
    one = json.loads((archive.settings.data / "releases" / "j1.json").read_text())
    two = json.loads((archive.settings.data / "releases" / "j2.json").read_text())
    assert [t["resource"] for t in one["clinical"]["tables"]] == [
        t["resource"] for t in two["clinical"]["tables"]]


def test_chosen_subjects_take_their_images_and_facts_only(archive: Archive,
                                                          tmp_path: Path) -> None:
    _world(archive, tmp_path, patients=2)
    subjects = {s["patient_id"]: s["id"] for s in archive.subjects("site")}
    [nhs_a, _nhs_b] = nhs_numbers(2)
    result = _share(archive, "j1", subject_ids=(subjects[nhs_a],))
    assert result["ok"] and result["patients"] == 1 and result["clinical"]["patients"] == 1
    [study] = archive.studies("lab")
    facts = _parquet_rows(_table(_resources(archive, "lab"), "-facts.parquet"))
    assert {r["patient"] for r in facts} == {study["patient_id"]}
    with archive.engine.connect() as conn:
        expected = conn.execute(text("SELECT COUNT(*) FROM clinical_facts WHERE subject_id = "
                                     ":s"), {"s": subjects[nhs_a]}).scalar_one()
    assert len(facts) == expected > 0
    with pytest.raises(NotFoundError, match="No subject"):
        _share(archive, "j2", subject_ids=("f" * 32,))


def test_without_dates_or_characteristics_the_tables_have_neither(
        sqlite_archive: Archive, tmp_path: Path) -> None:
    _world(sqlite_archive, tmp_path, options=[])
    result = _share(sqlite_archive, "j1")
    assert result["ok"]
    resources = _resources(sqlite_archive, "lab")
    facts = _parquet_rows(_table(resources, "-facts.parquet"))
    assert facts and all(r["start"] is None and r["end"] is None for r in facts)
    [subject] = _parquet_rows(_table(resources, "-subjects.parquet"))
    assert subject["sex"] == "" and subject["birth_year"] is None
    manifest = json.loads((sqlite_archive.settings.data / "releases" / "j1.json").read_text())
    assert manifest["clinical"]["dates"] == "removed"


def _export(archive: Archive, destination: Path, job: str) -> dict[str, Any]:
    spec = ReleaseSpec("release", "site", str(destination), tuple(OPTIONS), LEEDS,
                       clinical=True)
    return run_release(archive, spec, job, workers=1)


def test_folder_and_zip_exports_carry_the_tables(archive: Archive, tmp_path: Path) -> None:
    [(nhs, bundle)] = _world(archive, tmp_path)
    folder, archive_zip = tmp_path / "out", tmp_path / "out.zip"
    result = _export(archive, folder, "e1")
    assert result["ok"] and set(result["clinical"]["tables"].values()) == {"written"}
    in_folder = {p.name: p.read_bytes() for p in (folder / "clinical").iterdir()}
    assert sorted(in_folder) == ["facts.csv", "facts.parquet", "subjects.csv",
                                 "subjects.parquet"]
    # The exported images' PatientID is the tables' patient.
    [dicom] = {p.parent.parent.parent.name for p in folder.rglob("*.dcm")}
    assert {r["patient"] for r in _parquet_rows(in_folder["facts.parquet"])} == {dicom}
    manifest = json.loads((folder / "manifest-e1.json").read_text())
    assert {t["path"]: t["rows"] for t in manifest["clinical"]["tables"]} == {
        "clinical/facts.csv": len(_source_facts(archive)),
        "clinical/facts.parquet": len(_source_facts(archive)),
        "clinical/subjects.csv": 1, "clinical/subjects.parquet": 1}
    # Again into the same folder: the same bytes, found there.
    again = _export(archive, folder, "e2")
    assert again["ok"] and set(again["clinical"]["tables"].values()) == {"unchanged"}
    zipped = _export(archive, archive_zip, "e3")
    assert zipped["ok"]
    with zipfile.ZipFile(archive_zip) as z:
        names = z.namelist()
        assert {n for n in names if n.startswith("clinical/")} == {
            f"clinical/{n}" for n in in_folder}
        for name, data in in_folder.items():
            assert z.read(f"clinical/{name}") == data
        inner = json.loads(z.read("manifest-e3.json"))
    assert [t["sha256"] for t in inner["clinical"]["tables"]] == [
        t["sha256"] for t in manifest["clinical"]["tables"]]
    identifiers = _identifiers(nhs, bundle)
    for name in ("facts.csv", "subjects.csv"):
        assert not [v for v in identifiers if v in in_folder[name].decode()]


def test_a_research_projects_tables_are_exported_as_stored(archive: Archive,
                                                            tmp_path: Path) -> None:
    _world(archive, tmp_path)
    _share(archive, "j1")
    stored = _resources(archive, "lab")
    result = run_release(archive, ReleaseSpec("release", "lab", str(tmp_path / "out"),
                                              clinical=True), "e1", workers=1)
    assert result["ok"]
    exported = {p.name: p.read_bytes() for p in (tmp_path / "out" / "clinical").iterdir()}
    assert exported == stored


@pytest.mark.parametrize(("spec", "words"), [
    (ReleaseSpec("release", "site", "dicom://PACS@127.0.0.1:104", clinical=True),
     "images only"),
    (ReleaseSpec("release", "site", "https://pacs.example/dicom-web", clinical=True),
     "images only"),
    (ReleaseSpec("release", "lab", "/tmp/x", clinical=True, subject_ids=("a" * 32,)),
     "No subject"),
])
def test_what_cannot_take_clinical_tables_is_refused_before_anything_runs(
        sqlite_archive: Archive, tmp_path: Path, spec: ReleaseSpec, words: str) -> None:
    _world(sqlite_archive, tmp_path)
    with pytest.raises((InvalidInputError, NotFoundError), match=words):
        run_release(sqlite_archive, spec, "j", workers=1)
    assert not (sqlite_archive.settings.data / "releases").exists()


def test_a_withdrawn_patient_leaves_every_later_table(archive: Archive,
                                                      tmp_path: Path) -> None:
    from imagebank.services.consent import import_consents

    _world(archive, tmp_path, patients=2)
    _share(archive, "j1")
    stored = _resources(archive, "lab")
    [nhs_a, nhs_b] = nhs_numbers(2)
    site = {s["patient_id"]: s["id"] for s in archive.subjects("site")}
    with archive.engine.connect() as conn:
        count_a = conn.execute(text("SELECT COUNT(*) FROM clinical_facts WHERE subject_id = "
                                    ":s"), {"s": site[nhs_a]}).scalar_one()
    consents = tmp_path / "consents.csv"
    consents.write_text(f"nhs_number,status,date\n{nhs_a},withdrawn,2026-11-02\n")
    import_consents(archive, consents)
    # A research project's export leaves the withdrawn patient's rows out of its tables.
    result = run_release(archive, ReleaseSpec("release", "lab", str(tmp_path / "out"),
                                              clinical=True), "e1", workers=1)
    assert result["ok"] and result["patients"] == 1
    exported = {p.name: p.read_bytes() for p in (tmp_path / "out" / "clinical").iterdir()}
    assert exported.keys() == stored.keys()
    [pseudonym] = {p.name for p in (tmp_path / "out").iterdir() if p.name.startswith("IB")}
    for name, data in exported.items():
        schema = schemas()[0 if "-facts." in name else 1]
        rows = (_parquet_rows(data) if name.endswith(".parquet")
                else read_csv_table(io.BytesIO(data), schema).to_pylist())
        before = (_parquet_rows(stored[name]) if name.endswith(".parquet")
                  else read_csv_table(io.BytesIO(stored[name]), schema).to_pylist())
        assert {r["patient"] for r in rows} == {pseudonym}
        assert rows == [r for r in before if r["patient"] == pseudonym]
    manifest = json.loads((tmp_path / "out" / "manifest-e1.json").read_text())
    assert manifest["clinical"]["emptied"]["rows_of_excluded_subjects"] == count_a + 1
    # A new export from the site: their images and facts are left out too.
    fresh = _export(archive, tmp_path / "site-out", "e2")
    assert fresh["patients"] == 1 and fresh["clinical"]["patients"] == 1
    with archive.engine.connect() as conn:
        count_b = conn.execute(text("SELECT COUNT(*) FROM clinical_facts WHERE subject_id = "
                                    ":s"), {"s": site[nhs_b]}).scalar_one()
    assert fresh["clinical"]["facts"] == count_b


def test_a_cohort_release_takes_the_people_the_query_matches(archive: Archive,
                                                             tmp_path: Path) -> None:
    from imagebank.services.cohort_release import cohort_spec

    _world(archive, tmp_path, patients=2)
    [nhs_a, _nhs_b] = nhs_numbers(2)
    site = {s["patient_id"]: s["id"] for s in archive.subjects("site")}
    # Only the first bundle's patient had a myocardial infarction (SNOMED 22298006).
    query = "condition[SNOMED:22298006] within 100 years before imaging[modality = CT]"
    spec = cohort_spec(archive, ReleaseSpec("share", "site", "lab", clinical=True), query)
    assert spec.subject_ids == (site[nhs_a],)
    assert spec.study_ids == tuple(s["id"] for s in archive.studies("site")
                                   if s["subject_id"] == site[nhs_a])
    result = run_release(archive, spec, "c1", workers=1)
    assert result["ok"] and result["patients"] == 1 and result["clinical"]["patients"] == 1
    manifest = json.loads((archive.settings.data / "releases" / "c1.json").read_text())
    assert manifest["cohort"] == query
    # Without imaging criteria: the people's studies, all of them.
    clinical_only = cohort_spec(archive, ReleaseSpec("share", "site", "lab"),
                                "condition[SNOMED:22298006]")
    assert clinical_only.subject_ids == (site[nhs_a],) and clinical_only.study_ids == ()
    with pytest.raises(InvalidInputError, match="matches no one"):
        cohort_spec(archive, ReleaseSpec("share", "site", "lab"), "condition[SNOMED:1]")
