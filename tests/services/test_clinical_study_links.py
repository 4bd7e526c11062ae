"""FHIR ImagingStudy facts linked to the project's DICOM studies (decision 0021), on SQLite and
PostgreSQL: by StudyInstanceUID (also before the images arrive) or accession number; never
to a study of another patient."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pydicom
from sqlalchemy import text

from imagebank.services.archive import Archive
from imagebank.services.clinical import import_clinical
from testkit import SHARED_DATA, nhs_numbers, write_nhs_study

BUNDLE = sorted((SHARED_DATA / "synthea-fhir-r4").glob("*.json"))[0]


def _study(archive: Archive, folder: Path, patient: int, nhs: str) -> pydicom.Dataset:
    """Ingest one synthetic study whose PatientID is ``nhs``; return its header."""
    paths = write_nhs_study(folder / f"images-{patient}", patient, nhs, slices=1)
    assert archive.ingest([folder / f"images-{patient}"], "site", workers=1).stored == 1
    return pydicom.dcmread(paths[0], stop_before_pixels=True)


def _imaging_study(resource: dict[str, Any], suffix: str, *, uid: str | None = None,
                   accession: str | None = None) -> dict[str, Any]:
    copied = copy.deepcopy(resource)
    copied["id"] = f"{resource['id']}-{suffix}"
    copied["identifier"] = []
    if uid is not None:
        copied["identifier"].append({"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"})
    if accession is not None:
        copied["identifier"].append({"type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
            "value": accession})
    return copied


def _links(archive: Archive) -> dict[str, tuple[str, str]]:
    with archive.engine.connect() as conn:
        rows = conn.execute(text("SELECT f.id, l.study_id, l.matched_by FROM "
                                 "clinical_study_links l JOIN clinical_facts f "
                                 "ON f.id = l.fact_id"))
        return {str(f): (str(s), str(m)) for f, s, m in rows}


def test_imaging_studies_link_to_their_dicom_studies(archive: Archive, tmp_path: Path) -> None:
    archive.create_project("site")
    mine, other = nhs_numbers(2)
    own = _study(archive, tmp_path, 0, mine)
    theirs = _study(archive, tmp_path, 1, other)
    data = json.loads(BUNDLE.read_text())
    patient = next(e["resource"] for e in data["entry"]
                   if e["resource"]["resourceType"] == "Patient")
    patient["identifier"].append({"system": "https://fhir.nhs.uk/Id/nhs-number", "value": mine})
    template = next(e["resource"] for e in data["entry"]
                    if e["resource"]["resourceType"] == "ImagingStudy")
    later = "1.2.826.0.1.3680043.8.498.99999"  # a study whose images have not arrived yet
    data["entry"] = [e for e in data["entry"]
                     if e["resource"]["resourceType"] != "ImagingStudy"] + [
        {"resource": _imaging_study(template, "uid", uid=str(own.StudyInstanceUID))},
        {"resource": _imaging_study(template, "acc", accession=str(own.AccessionNumber))},
        {"resource": _imaging_study(template, "later", uid=later)},
        {"resource": _imaging_study(template, "wrong", uid=str(theirs.StudyInstanceUID))},
        {"resource": _imaging_study(template, "wrong-acc",
                                    accession=str(theirs.AccessionNumber))}]
    bundle = tmp_path / "fhir" / "bundle.json"
    bundle.parent.mkdir()
    bundle.write_text(json.dumps(data))
    summary = import_clinical(archive, [bundle], "site")
    assert summary.study_links == 3
    assert summary.reasons == {"study_of_another_patient": 2}
    message = " ".join(p.message for p in summary.problems)
    assert str(theirs.StudyInstanceUID) not in message and other not in message
    links = sorted(_links(archive).values())
    own_id = archive.ids.study_id("site", str(own.StudyInstanceUID))
    assert links == sorted([(own_id, "uid"), (own_id, "accession"),
                            (archive.ids.study_id("site", later), "uid")])
    # The study that was to come arrives: the link made before it now finds it.
    assert archive.studies("site", study_instance_uid=later) == []
    again = import_clinical(archive, [bundle], "site")
    assert again.added == 0 and len(_links(archive)) == 3


def test_a_released_imaging_study_names_the_released_images_study(archive: Archive,
                                                                  tmp_path: Path) -> None:
    import io as _io

    import pyarrow.parquet as pq

    from imagebank.services.release import ReleaseSpec, run_release
    from testkit import REPO, import_optout_list

    archive.create_project("site")
    archive.create_project("lab", zone="research",
                           policy=(REPO / "docs" / "policies" / "leeds.yaml").read_text())
    import_optout_list(archive)
    [nhs] = nhs_numbers(1)
    own = _study(archive, tmp_path, 0, nhs)
    data = json.loads(BUNDLE.read_text())
    patient = next(e["resource"] for e in data["entry"]
                   if e["resource"]["resourceType"] == "Patient")
    patient["identifier"].append({"system": "https://fhir.nhs.uk/Id/nhs-number", "value": nhs})
    for entry in data["entry"]:
        if entry["resource"]["resourceType"] == "ImagingStudy":
            entry["resource"] = _imaging_study(entry["resource"], "x",
                                               uid=str(own.StudyInstanceUID))
    bundle = tmp_path / "bundle.json"
    bundle.write_text(json.dumps(data))
    assert import_clinical(archive, [bundle], "site").study_links == 1
    result = run_release(archive, ReleaseSpec("share", "site", "lab", clinical=True), "s1",
                         workers=1)
    assert result["ok"]
    [released] = archive.studies("lab")
    tables = {str(r["name"]): archive.store.get(str(r["object_key"]))
              for r in archive.resources("lab", "project", "lab")}
    [parquet] = [v for k, v in tables.items() if k.endswith("-facts.parquet")]
    rows = pq.read_table(_io.BytesIO(parquet)).to_pylist()
    linked = [r for r in rows if r["study_uid"]]
    assert [r["kind"] for r in linked] == ["imaging_study"]
    assert linked[0]["study_uid"] == released["study_instance_uid"]
    assert linked[0]["study_uid"] != str(own.StudyInstanceUID)  # remapped, as the images
    assert all(r["study_uid"] == "" for r in rows if r["kind"] != "imaging_study")
