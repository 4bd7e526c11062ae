"""PHI-laden synthetic DICOM folders for the ``imagebank deid`` tests (``from deidkit import``).

Each patient's files carry identifying values everywhere today's anonymisers miss them:
descriptors, private tags, an unknown public tag, nested sequences, a referenced image, and
the folder and file names themselves (``<NAME>_<ID>/<ID> CT chest/<NAME>-<n>.dcm``).
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.datadict import dictionary_has_tag
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes

#: (PatientName, PatientID, PatientBirthDate) of the synthetic patients, by number.
PATIENTS = [
    ("SMITHSON^ALEXANDRA", "9434765919", "19611203"),
    ("OKONKWO^BARNABY", "4857773456", "19480522"),
    ("FERNSBY^CLEMENTINE", "6120984437", "19900117"),
]
OUTPUT_NAME = re.compile(r"^IB[A-Z2-7]{16}/2\.25\.\d+/2\.25\.\d+/2\.25\.\d+\.dcm$")


@dataclass(frozen=True)
class PhiFile:
    path: Path
    dataset: Dataset


def unknown_public_tag() -> int:
    return next(t for t in range(0x00301000, 0x7FFFFFFF, 0x00020000)
                if (t >> 16) % 2 == 0 and not dictionary_has_tag(t))


def phi_datasets(patient: int, slices: int = 2, rows: int = 16) -> list[Dataset]:
    """One CT series of ``slices`` instances full of the patient's identifying values; each
    instance after the first references the first."""
    name, patient_id, birth = PATIENTS[patient]
    spec = SeriesSpec(slices=slices, rows=rows, columns=rows)
    instances = list(make_study(SyntheticPatient.make(patient + 3), series=[spec]))
    family, given = name.split("^")
    for ds in instances:
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = name, patient_id, birth
        ds.IssuerOfPatientID = "NHS"
        ds.PatientAddress = "12 Acacia Avenue, Leeds"
        ds.PatientTelephoneNumbers = "01134960123"
        ds.InstitutionName = "Leeds Teaching Hospitals"
        ds.ReferringPhysicianName = "FOSTERCARE^JONATHAN"
        ds.OperatorsName = "RADIOGRAPH^EVELYN"
        ds.AccessionNumber = f"RR{patient_id[:8]}"
        ds.StudyDescription = f"CT chest for {given} {family} {patient_id}"
        ds.ImageComments = f"{family.title()} follow-up"
        ds.BurnedInAnnotation = "NO"
        ds.add_new(0x00090010, "LO", "ACME 1.0")
        ds.add_new(0x00091001, "LO", name)  # a name in a private tag
        ds.add_new(0x00091002, "DS", "1.5")
        ds.add_new(unknown_public_tag(), "LO", patient_id)
        request = Dataset()
        request.AccessionNumber = f"RR{patient_id[:8]}"
        request.RequestedProcedureDescription = f"Chest {patient_id}"
        ds.RequestAttributesSequence = Sequence([request])
        region = Dataset()
        region.CodeValue, region.CodingSchemeDesignator = "T-D3000", "SRT"
        region.CodeMeaning = f"Chest of {patient_id}"
        inner = Dataset()
        inner.PatientName, inner.PatientID = name, patient_id
        region.ReferencedImageSequence = Sequence([inner])
        ds.AnatomicRegionSequence = Sequence([region])
    for ds in instances[1:]:
        reference = Dataset()
        reference.ReferencedSOPClassUID = instances[0].SOPClassUID
        reference.ReferencedSOPInstanceUID = instances[0].SOPInstanceUID
        ds.ReferencedImageSequence = Sequence([reference])
    return instances


def write_phi_folder(root: Path, patients: int = 2, slices: int = 2) -> list[PhiFile]:
    """Patients' files under ``root``, named after the patients (as sites do)."""
    files = []
    for number in range(patients):
        name, patient_id, _ = PATIENTS[number]
        folder = root / f"{name.replace('^', '_')}_{patient_id}" / f"{patient_id} CT chest"
        folder.mkdir(parents=True, exist_ok=True)
        for index, ds in enumerate(phi_datasets(number, slices)):
            path = folder / f"{name.split('^')[0]}-{index + 1}.dcm"
            path.write_bytes(to_bytes(ds))
            files.append(PhiFile(path, ds))
    return files


def output_files(out: Path) -> list[Path]:
    """The ``.dcm`` files under ``out``, sorted."""
    return sorted(p for p in out.rglob("*") if p.is_file() and p.suffix == ".dcm")


def read(path: Path) -> Dataset:
    return pydicom.dcmread(io.BytesIO(path.read_bytes()))


DCIODVFY = shutil.which("dciodvfy")


def dciodvfy_errors(path: Path) -> set[str]:
    """The error lines dciodvfy (Debian's dicom3tools) prints for a file."""
    assert DCIODVFY, "dciodvfy is missing: apt-get install dicom3tools (.ci/run does)"
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, check=False)
    return {line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")}
