"""The demo archive ``make run`` builds: synthetic studies plus the shared public test data."""

from __future__ import annotations

import tempfile
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
    result[SYNTHETIC_PROJECT] = summary.as_dict()

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


def _find_shared() -> Path | None:
    for candidate in (Path("../shared/data"), Path("shared/data")):
        if candidate.is_dir():
            return candidate.resolve()
    return None
