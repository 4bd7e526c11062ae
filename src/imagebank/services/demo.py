"""The demo archive ``make run`` builds: synthetic studies plus the shared public test data."""

from __future__ import annotations

import tempfile
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
from imagebank.domain.errors import ConflictError
from imagebank.domain.model import IngestSummary
from imagebank.ingest.pipeline import Progress
from imagebank.services.archive import Archive
from imagebank.services.nodes import Nodes

SYNTHETIC_PROJECT = "demo"
SHARED_PROJECT = "public-ct"


def _project(archive: Archive, project_id: str, name: str, description: str) -> None:
    try:
        archive.create_project(project_id, name, description)
    except ConflictError:
        pass


DEMO_AE_TITLE = "DEMO"


def build_demo(archive: Archive, *, studies: int = 6, shared: Path | None = None,
               progress: Progress | None = None) -> dict[str, Any]:
    """Create (or top up) the demo projects; return what each ingest did."""
    result: dict[str, Any] = {}
    _project(archive, SYNTHETIC_PROJECT, "Synthetic demo studies",
             "Generated CT and MR studies of fictional patients.")
    # C-STORE to AE title DEMO from DCMTK's default calling AE title lands here.
    nodes = Nodes(archive.sessions)
    if nodes.ae_title(SYNTHETIC_PROJECT) is None:
        nodes.set_ae_title(SYNTHETIC_PROJECT, DEMO_AE_TITLE)
    nodes.allow(SYNTHETIC_PROJECT, "STORESCU")
    with tempfile.TemporaryDirectory(prefix="imagebank-demo-") as tmp:
        folder = Path(tmp)
        for n in range(studies):
            patient = SyntheticPatient.make(n // 2)
            series = [SeriesSpec(slices=12, rows=256, columns=256)]
            if n % 3 == 2:
                series = [SeriesSpec(modality="MR", slices=8, rows=256, columns=256,
                                     description="T2 TSE AX", manufacturer="SYNTHETIC MR",
                                     model="Phantom 3T", station="MR01", slice_thickness=5.0)]
            for i, ds in enumerate(make_study(patient, study_number=n, series=series)):
                (folder / f"{n:03d}-{i:04d}.dcm").write_bytes(to_bytes(ds))
        summary = archive.ingest([folder], SYNTHETIC_PROJECT, progress=progress)
        facts = _demo_clinical(archive, folder)
    result[SYNTHETIC_PROJECT] = {**summary.as_dict(), "clinical_facts": facts}
    _demo_optout(archive)

    shared = shared or _find_shared()
    if shared is not None and shared.is_dir():
        _project(archive, SHARED_PROJECT, "Public anonymised CT and examples",
                 "dcmqi's 3-slice CT with segmentations, and highdicom's test files.")
        paths = sorted(
            p for folder in ("dcmqi-ct-3slice", "highdicom-test-files")
            for p in (shared / folder).rglob("*.dcm")
        )
        total = IngestSummary()
        if paths:
            total = archive.ingest(paths, SHARED_PROJECT, progress=progress)
        _attach_segmentations(archive, shared / "dcmqi-ct-3slice")
        result[SHARED_PROJECT] = total.as_dict()
    return result


def _attach_segmentations(archive: Archive, folder: Path) -> None:
    """Attach the NRRD label maps to the CT study they segment, once."""
    if not folder.is_dir():
        return
    ct = sorted((folder / "ct-3slice").glob("*.dcm"))
    if not ct:
        return
    import pydicom

    study_uid = str(pydicom.dcmread(ct[0], stop_before_pixels=True).StudyInstanceUID)
    studies = archive.studies(SHARED_PROJECT, study_instance_uid=study_uid)
    if not studies:
        return
    study_id = studies[0]["id"]
    existing = {r["name"] for r in archive.resources(SHARED_PROJECT, "study", study_id)}
    for path in sorted(folder.glob("*.nrrd")):
        if path.name not in existing:
            archive.add_resource(SHARED_PROJECT, "study", study_id, path.name,
                                 path.read_bytes(), "application/x-nrrd")


#: How the demo's clinical extract is read (decision 0024): one fact a row.
_DEMO_MAPPING = """version: 1
source: demo-clinical
columns:
  row_id: row
  patient: patient_id
  kind: kind
  system: system
  code: code
  display: display
  value: value
  unit: unit
  date: date
  birth_date: birth_date
  sex: sex
fixed:
  issuer: SYNTH-TRUST
"""


def _demo_clinical(archive: Archive, folder: Path) -> int:
    """Fictional clinical histories for the demo's patients, dated around their studies so
    that cohort queries find something: a lung cancer diagnosis (ICD-10 C34.1) 30 days before
    the first CT of every other patient, haemoglobin results, an asthma diagnosis (SNOMED
    195967001) and a salbutamol prescription (dm+d) for the others."""
    import csv

    from imagebank.services.clinical import import_clinical

    rows: list[list[str]] = []
    seen: set[str] = set()
    for study in sorted(archive.studies(SYNTHETIC_PROJECT, limit=1000),
                        key=lambda s: (s["patient_id"] or "", s["study_date"] or "")):
        patient, when = str(study["patient_id"] or ""), str(study["study_date"] or "")
        if not patient.startswith("SYN") or len(when) != 8 or patient in seen:
            continue
        seen.add(patient)
        n = int(patient[3:])
        day = date(int(when[:4]), int(when[4:6]), int(when[6:]))
        born = str(study.get("patient_birth_date") or "19600101")
        common = [f"{born[:4]}-{born[4:6]}-{born[6:8]}", str(study.get("patient_sex") or "U")]
        if n % 2 == 0:
            rows.append([f"{patient}-dx", patient, "condition", "ICD10", "C34.1",
                         "Malignant neoplasm of upper lobe, bronchus or lung", "", "",
                         (day - timedelta(days=30)).isoformat(), *common])
        else:
            rows.append([f"{patient}-dx", patient, "condition", "SNOMED", "195967001",
                         "Asthma", "", "", (day - timedelta(days=400)).isoformat(), *common])
            rows.append([f"{patient}-rx", patient, "medication", "DMD", "39113611000001102",
                         "Salbutamol 100micrograms/dose inhaler", "", "",
                         (day - timedelta(days=380)).isoformat(), *common])
        for k, before in enumerate((60, 10)):
            rows.append([f"{patient}-hb{k}", patient, "observation", "LOINC", "718-7",
                         "Hemoglobin [Mass/volume] in Blood", f"{9.5 + 1.1 * n - k:.1f}",
                         "g/dL", (day - timedelta(days=before)).isoformat(), *common])
    if not rows:
        return 0
    extract, mapping = folder / "clinical.csv", folder / "clinical-mapping.yaml"
    with open(extract, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "patient_id", "kind", "system", "code", "display", "value",
                         "unit", "date", "birth_date", "sex"])
        writer.writerows(rows)
    mapping.write_text(_DEMO_MAPPING)
    return import_clinical(archive, [extract], SYNTHETIC_PROJECT, mapping=mapping).facts


def _demo_optout(archive: Archive) -> None:
    """An empty National Data Opt-out list (nobody in the demo opted out), so that shares
    work; a real site imports NHS England's list (decision 0023)."""
    from imagebank.services.consent import import_optout_text, optout_versions

    if not optout_versions(archive):
        import_optout_text(archive, "# demo: no fictional patient opted out\n",
                           actor="demo", via="cli")


def _find_shared() -> Path | None:
    for candidate in (Path("../shared/data"), Path("shared/data")):
        if candidate.is_dir():
            return candidate.resolve()
    return None
