"""Helpers shared by tests in every folder: import them with ``from testkit import ...``
(never ``from conftest import``: each test folder may have its own conftest module)."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("IMAGEBANK_SHARED_DATA", REPO.parent / "shared" / "data"))


def new_pg_database(server_url: str) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def write_study(folder: Path, patient: int = 0, *, study_number: int = 0, slices: int = 4,
                rows: int = 64, columns: int = 64, modality: str = "CT",
                issuer: str = "SYNTH-TRUST") -> list[Path]:
    """Write one synthetic study's files into ``folder``; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    spec = SeriesSpec(modality=modality, slices=slices, rows=rows, columns=columns)
    studies = make_study(SyntheticPatient.make(patient, issuer), study_number=study_number,
                         series=[spec])
    for i, ds in enumerate(studies):
        path = folder / f"p{patient}-s{study_number}-{i:04d}.dcm"
        path.write_bytes(to_bytes(ds))
        paths.append(path)
    return paths


def write_nhs_study(folder: Path, patient: int, nhs_number: str, **options: object
                    ) -> list[Path]:
    """``write_study`` with PatientID the NHS number and IssuerOfPatientID left empty, as
    DICOM often has it (so a clinical record's NHS number joins it)."""
    import io

    import pydicom

    paths = write_study(folder, patient, issuer="", **options)  # type: ignore[arg-type]
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.PatientID = nhs_number
        del ds.IssuerOfPatientID
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        path.write_bytes(buffer.getvalue())
    return paths


def wait_for(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def optout_list(folder: Path, numbers: tuple[str, ...] = ()) -> Path:
    """A National Data Opt-out list file (decision 0023): the given NHS numbers, none by
    default (a release from a site's archive under a policy that applies the opt-out needs a
    list imported, even an empty one)."""
    path = folder / f"optout-{uuid.uuid4().hex[:8]}.txt"
    path.write_text("# National Data Opt-out (synthetic)\n" + "".join(f"{n}\n" for n in numbers))
    return path


def import_optout_list(archive: object, numbers: tuple[str, ...] = ()) -> None:
    from datetime import date

    from imagebank.services.consent import import_optout

    import_optout(archive, optout_list(archive.settings.data, numbers),  # type: ignore[arg-type, attr-defined]
                  list_date=date(2026, 11, 1))


# -- a small hand-built world for cohort search (issue 6, decision 0022) ---------------------
class CohortWorld:
    """Subjects with known facts and studies, written straight to the index's tables: each
    test of the cohort language knows exactly which subjects a query must match."""

    def __init__(self, archive: object, project: str = "site") -> None:
        self.archive = archive
        self.project = project
        self.ids: dict[str, str] = {}  # name -> subject ID
        self.series_of: dict[str, list[str]] = {}  # name -> its series IDs, in order
        self.counter = 0
        #: Rows waiting for ``flush()``, by table, in the order their keys need.
        self.pending: dict[str, list[dict[str, object]]] = {
            t: [] for t in ("subjects", "studies", "series", "instances", "clinical_facts")}

    def flush(self) -> None:
        """Write every row made so far, in one transaction."""
        from datetime import UTC, datetime

        from sqlalchemy import insert

        from imagebank.index.tables import Base

        tables = Base.metadata.tables
        stamp = datetime.now(UTC)
        with self.archive.sessions.begin() as session:  # type: ignore[attr-defined]
            for name, rows in self.pending.items():
                stamp_it = "created_at" in tables[name].c
                for row in rows:  # one by one: the rows name different columns
                    session.execute(insert(tables[name]).values(
                        {"created_at": stamp, **row} if stamp_it else row))
                rows.clear()

    def _next(self) -> str:
        self.counter += 1
        return uuid.uuid4().hex

    def _insert(self, model: object, rows: list[dict[str, object]]) -> None:
        self.pending[model.__tablename__].extend(rows)  # type: ignore[attr-defined]

    def subject(self, name: str, sex: str | None, birth: str | None) -> str:
        from imagebank.index.tables import Subject

        subject_id = self._next()
        self._insert(Subject, [{"id": subject_id, "project_id": self.project,
                                "patient_id": name.upper(), "issuer_of_patient_id": "TEST",
                                "patient_sex": sex, "patient_birth_date": birth,
                                "num_studies": 0}])
        self.ids[name] = subject_id
        self.series_of[name] = []
        return subject_id

    def study(self, name: str, study_date: str | None, *series: dict[str, object],
              description: str = "") -> str:
        """A study of ``name`` with ``series``: each a dict of series columns, with
        ``instances`` a list of dicts of instance columns (one plain instance if absent)."""
        from datetime import UTC, datetime

        from imagebank.index.tables import Instance, Series, Study

        study_id = self._next()
        stamp = datetime.now(UTC)
        self._insert(Study, [{"id": study_id, "project_id": self.project,
                              "subject_id": self.ids[name], "updated_at": stamp,
                              "study_instance_uid": f"2.25.{self.counter}",
                              "study_date": study_date, "study_description": description,
                              "modalities_in_study": "\\".join(
                                  sorted({str(s.get("modality")) for s in series}))}])
        for given in series:
            spec = dict(given)
            instances = list(spec.pop("instances", None) or [{}])  # type: ignore[call-overload]
            series_id = self._next()
            self._insert(Series, [{"id": series_id, "project_id": self.project,
                                   "study_id": study_id,
                                   "series_instance_uid": f"2.25.{self.counter}", **spec}])
            self.series_of[name].append(series_id)
            self._insert(Instance, [{
                "id": self._next(), "project_id": self.project, "study_id": study_id,
                "series_id": series_id, "sop_instance_uid": f"2.25.{self.counter}",
                "transfer_syntax_uid": "1.2.840.10008.1.2.1", "size_bytes": 1,
                "sha256": "0" * 64, "object_key": f"test/{self.counter}",
                "metadata_json": "{}", **instance} for instance in instances])
        return study_id

    def fact(self, name: str, kind: str, system: str, code: str, start: object, *,
             value: float | None = None, unit: str = "", status: str = "",
             value_system: str = "", value_text: str = "") -> None:
        from datetime import UTC, datetime

        from imagebank.index.tables import ClinicalFact

        self._insert(ClinicalFact, [{
            "id": self._next(), "project_id": self.project, "subject_id": self.ids[name],
            "kind": kind, "system": system, "code": code, "display": "",
            "value_number": value, "value_text": value_text, "value_system": value_system,
            "unit": unit, "start": start, "end": None, "status": status, "detail": "{}",
            "imported_at": datetime.now(UTC)}])


def make_cohort_world(archive: object, project: str = "site") -> CohortWorld:
    """The standard cohort world (in ``project``, made if missing). Dates were chosen for the
    boundaries: from alice's C34.1 to her chest CT is 90 days, bob's 91, carol's 0 (same day);
    erin's condition is 30 days after her CT; frank's events have no dates. DMD 456 is-a 123,
    789 is-a 456."""
    from datetime import UTC, datetime

    from sqlalchemy import insert, select

    from imagebank.index.tables import CodeRelation

    if not any(p["id"] == project for p in archive.projects()):  # type: ignore[attr-defined]
        archive.create_project(project)  # type: ignore[attr-defined]
    w = CohortWorld(archive, project)

    def day(text: str, hour: int = 9, minute: int = 0) -> datetime:
        return datetime.fromisoformat(text).replace(hour=hour, minute=minute, tzinfo=UTC)

    ct = {"modality": "CT", "body_part_examined": "CHEST", "series_description": "Axial 1mm",
          "manufacturer": "GE MEDICAL SYSTEMS"}
    w.subject("alice", "F", "19600615")
    w.fact("alice", "condition", "ICD10", "C34.1", day("2020-01-01", 23, 30), status="active")
    w.study("alice", "20200331", {**ct, "instances": [
        {"kvp": 120.0, "slice_thickness": 1.0, "convolution_kernel": "B30f"},
        {"kvp": 100.0, "slice_thickness": 5.0, "convolution_kernel": "B70f"}]},
        description="CT CHEST")
    w.fact("alice", "observation", "LOINC", "718-7", day("2020-01-05"), value=10.0,
           unit="g/dL", status="final")

    w.subject("bob", "M", "19500101")
    w.fact("bob", "condition", "ICD10", "C34", day("2020-01-01"), status="Active")
    w.fact("bob", "condition", "ICD10", "C3", day("2020-01-01"))
    w.study("bob", "20200401", {**ct, "instances": [{"kvp": 120.0, "slice_thickness": 2.5}]})
    w.fact("bob", "observation", "LOINC", "718-7", day("2020-01-05"), value=13.0, unit="g/dL")

    w.subject("carol", "F", "19701231")
    w.fact("carol", "condition", "ICD10", "C341", day("2020-05-01", 0, 0))
    w.study("carol", "20200501", {**ct, "body_part_examined": "ABDOMEN"})
    w.study("carol", "20210101", {"modality": "MR", "body_part_examined": "HEAD",
                                  "magnetic_field_strength": 3.0,
                                  "series_description": "T1 MPRAGE",
                                  "protocol_name": "brain_routine"})
    w.fact("carol", "medication", "DMD", "456", day("2019-03-01"))

    w.subject("dave", "M", "19800101")
    w.fact("dave", "condition", "ICD10", "C50", day("2020-01-01"))
    w.study("dave", "20200110", {**ct, "manufacturer": "SIEMENS"},
            {"modality": "MR", "magnetic_field_strength": 1.5, "body_part_examined": "HEAD"})
    w.fact("dave", "medication", "DMD", "123", day("2019-03-01"))

    w.subject("erin", "F", "19900228")
    w.fact("erin", "condition", "ICD10", "C34.9", day("2020-06-01"))
    w.fact("erin", "condition", "ICD10", "C34", None)
    w.study("erin", "20200502", ct)
    w.fact("erin", "medication", "DMD", "789", day("2020-06-02"))

    w.subject("frank", None, None)
    w.fact("frank", "condition", "ICD10", "C34", None)
    w.study("frank", None, ct)

    w.subject("gina", "female", "19851010")
    w.fact("gina", "observation", "LOINC", "718-7", day("2021-02-02"), value=8.0, unit="g/dL")
    w.fact("gina", "observation", "SNOMED", "363406005", day("2021-02-02"),
           value_system="SNOMED", value_text="260385009")

    w.flush()
    with archive.sessions.begin() as session:  # type: ignore[attr-defined]
        if session.execute(select(CodeRelation.child).limit(1)).first():
            return w  # the relations are the archive's, not a project's: there already
        session.execute(insert(CodeRelation), [
            {"system": "DMD", "parent": "123", "child": "456"},
            {"system": "DMD", "parent": "456", "child": "789"},
            {"system": "SNOMED", "parent": "123", "child": "999"}])
    return w


# -- a patient with images and FHIR facts (clinical tables in releases, decision 0026) -------
def nhs_numbers(count: int) -> list[str]:
    """``count`` valid (synthetic, 999...) NHS numbers."""
    from imagebank.domain.clinical import is_valid_nhs_number

    found: list[str] = []
    for n in range(999_000_001, 999_100_000):
        for digit in range(10):
            if is_valid_nhs_number(f"{n}{digit}"):
                found.append(f"{n}{digit}")
                break
        if len(found) == count:
            return found
    raise AssertionError("not enough NHS numbers")


def add_clinical_patient(archive: object, folder: Path, project: str, nhs_number: str,
                         patient: int = 0, *, bundle: int = 0) -> Path:
    """Ingest a synthetic study whose PatientID is ``nhs_number`` (IssuerOfPatientID left
    empty, as DICOM often has it) into ``project``, and import the synthea bundle number
    ``bundle`` with that NHS number among its patient's identifiers: one subject with images
    and facts. Returns the bundle written (its identifiers are what a release must not show)."""
    import json

    from imagebank.services.clinical import import_clinical

    images = write_nhs_study(folder / f"images-{patient}", patient, nhs_number)
    assert archive.ingest([folder / f"images-{patient}"], project,  # type: ignore[attr-defined]
                          workers=1).stored == len(images)
    source = sorted((SHARED_DATA / "synthea-fhir-r4").glob("*.json"))[bundle]
    data = json.loads(source.read_text())
    record = next(e["resource"] for e in data["entry"]
                  if e["resource"]["resourceType"] == "Patient")
    record["identifier"].append({"system": "https://fhir.nhs.uk/Id/nhs-number",
                                 "value": nhs_number})
    written = folder / f"fhir-{patient}" / "bundle.json"
    written.parent.mkdir(parents=True, exist_ok=True)
    written.write_text(json.dumps(data))
    summary = import_clinical(archive, [written.parent], project)  # type: ignore[arg-type]
    assert summary.linked == 1 and summary.facts > 0
    return written


def free_port() -> int:
    """A TCP port free on loopback now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
