"""Synthetic DICOM studies with realistic headers, for the demo, tests and benchmarks.

Nothing here is real patient data: names and identifiers are generated. Images are a simple
phantom (a disc of water in air, with a denser insert that moves along the slices).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

IMPLEMENTATION_UID = UID("1.2.826.0.1.3680043.10.1370.1")
UID_ROOT = "1.2.826.0.1.3680043.10.1370.9."

_FIRST = ["ALEX", "SAM", "JO", "CHRIS", "PAT", "ROBIN", "TAYLOR", "MORGAN", "JAMIE", "CASEY"]
_LAST = ["TESTER", "SYNTHETIC", "EXAMPLE", "SAMPLE", "DUMMY", "PHANTOM", "MOCK", "FICTION"]


@dataclass(frozen=True, slots=True)
class SyntheticPatient:
    patient_id: str
    name: str
    birth_date: str
    sex: str
    issuer: str = "SYNTH-TRUST"

    @classmethod
    def make(cls, n: int, issuer: str = "SYNTH-TRUST") -> SyntheticPatient:
        born = date(1940, 1, 1) + timedelta(days=(n * 3571) % 25000)
        return cls(
            patient_id=f"SYN{n:07d}",
            name=f"{_LAST[n % len(_LAST)]}^{_FIRST[(n // len(_LAST)) % len(_FIRST)]}",
            birth_date=born.strftime("%Y%m%d"),
            sex="MF"[n % 2],
            issuer=issuer,
        )


@dataclass(slots=True)
class SeriesSpec:
    modality: str = "CT"
    slices: int = 10
    rows: int = 512
    columns: int = 512
    description: str = "AXIAL 1.25mm"
    manufacturer: str = "SYNTHETIC MEDICAL"
    model: str = "PhantomScan 64"
    station: str = "CT01"
    serial: str = "SN-0001"
    institution: str = "Synthetic General Hospital"
    slice_thickness: float = 1.25
    extra: dict[str, object] = field(default_factory=dict)


def _phantom(rows: int, columns: int, k: int, n: int) -> np.ndarray:
    y, x = np.ogrid[:rows, :columns]
    cy, cx = rows / 2, columns / 2
    r2 = (y - cy) ** 2 + (x - cx) ** 2
    image = np.full((rows, columns), -1000, dtype=np.int16)
    image[r2 < (0.42 * min(rows, columns)) ** 2] = 0
    oy = cy + (k / max(n, 1) - 0.5) * rows * 0.3
    image[(y - oy) ** 2 + (x - cx * 0.8) ** 2 < (0.08 * rows) ** 2] = 400
    return image + np.int16(1024)  # stored values; RescaleIntercept -1024 gives HU back


def make_study(
    patient: SyntheticPatient,
    *,
    study_number: int = 0,
    series: list[SeriesSpec] | None = None,
    study_date: str | None = None,
    uid_seed: str | None = None,
) -> Iterator[Dataset]:
    """The instances of one synthetic study (deterministic for a given seed)."""
    seed = uid_seed or f"{patient.patient_id}-{study_number}"
    study_uid = generate_uid(UID_ROOT, [seed, "study"])
    day = date(2015, 1, 1) + timedelta(days=(hash_int(seed) % 3650))
    study_date = study_date or day.strftime("%Y%m%d")
    specs = series or [SeriesSpec()]
    pixels_cache: dict[tuple[int, int, int, int], bytes] = {}
    for s_index, spec in enumerate(specs, start=1):
        series_uid = generate_uid(UID_ROOT, [seed, "series", str(s_index)])
        frame_uid = generate_uid(UID_ROOT, [seed, "frame", str(s_index)])
        for k in range(spec.slices):
            ds = Dataset()
            sop_class = CTImageStorage if spec.modality == "CT" else MRImageStorage
            ds.SpecificCharacterSet = "ISO_IR 100"
            ds.ImageType = (["ORIGINAL", "PRIMARY", "AXIAL"] if spec.modality == "CT"
                            else ["ORIGINAL", "PRIMARY", "OTHER"])
            ds.SOPClassUID = sop_class
            ds.SOPInstanceUID = generate_uid(UID_ROOT, [seed, "sop", str(s_index), str(k)])
            ds.StudyDate = study_date
            ds.SeriesDate = study_date
            ds.AcquisitionDate = study_date
            ds.ContentDate = study_date
            ds.StudyTime = "093000"
            ds.SeriesTime = f"09{30 + s_index:02d}00"
            ds.ContentTime = f"09{30 + s_index:02d}{k % 60:02d}"
            ds.AccessionNumber = f"ACC{hash_int(seed) % 10**8:08d}"
            ds.Modality = spec.modality
            ds.Manufacturer = spec.manufacturer
            ds.InstitutionName = spec.institution
            ds.ReferringPhysicianName = "REFERRER^SYNTHETIC"
            ds.StationName = spec.station
            ds.StudyDescription = "CT CHEST ABDOMEN PELVIS" if spec.modality == "CT" else "MR BRAIN"
            ds.SeriesDescription = spec.description
            ds.ManufacturerModelName = spec.model
            ds.PatientName = patient.name
            ds.PatientID = patient.patient_id
            ds.IssuerOfPatientID = patient.issuer
            ds.PatientBirthDate = patient.birth_date
            ds.PatientSex = patient.sex
            ds.PatientAge = f"{max(1, int(study_date[:4]) - int(patient.birth_date[:4])):03d}Y"
            ds.BodyPartExamined = "CHEST" if spec.modality == "CT" else "HEAD"
            ds.SliceThickness = spec.slice_thickness
            ds.DeviceSerialNumber = spec.serial
            ds.SoftwareVersions = ["SYN 1.0"]
            ds.ProtocolName = spec.description
            ds.PatientPosition = "HFS"
            if spec.modality == "CT":
                ds.KVP = 120
                ds.XRayTubeCurrent = 250
                ds.ConvolutionKernel = "STANDARD"
            else:
                ds.MagneticFieldStrength = 3
                ds.RepetitionTime = 2000
                ds.EchoTime = 30
                ds.FlipAngle = 90
                ds.SequenceName = "*tse2d1_5"
                ds.ScanningSequence = "SE"
                ds.SequenceVariant = "NONE"
                ds.ScanOptions = ""
                ds.MRAcquisitionType = "2D"
                ds.EchoTrainLength = 1
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.StudyID = str(study_number + 1)
            ds.SeriesNumber = s_index
            ds.AcquisitionNumber = 1
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = [-0.5 * spec.columns * 0.7, -0.5 * spec.rows * 0.7,
                                       -k * spec.slice_thickness]
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.FrameOfReferenceUID = frame_uid
            ds.PositionReferenceIndicator = ""
            ds.SliceLocation = -k * spec.slice_thickness
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows = spec.rows
            ds.Columns = spec.columns
            ds.PixelSpacing = [0.7, 0.7]
            ds.BitsAllocated = 16
            ds.BitsStored = 12 if spec.modality == "CT" else 16
            ds.HighBit = ds.BitsStored - 1
            ds.PixelRepresentation = 0
            if spec.modality == "CT":
                ds.RescaleIntercept = -1024
                ds.RescaleSlope = 1
            ds.WindowCenter = 40
            ds.WindowWidth = 400
            ds.BurnedInAnnotation = "NO"
            for key, value in spec.extra.items():
                setattr(ds, key, value)
            cache_key = (spec.rows, spec.columns, k % 16, 16)
            if cache_key not in pixels_cache:
                pixels_cache[cache_key] = _phantom(spec.rows, spec.columns, k % 16, 16).tobytes()
            ds.PixelData = pixels_cache[cache_key]
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = sop_class
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = IMPLEMENTATION_UID
            meta.ImplementationVersionName = "IMAGEBANK_SYN"
            ds.file_meta = meta
            yield ds


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def hash_int(text: str) -> int:
    """A stable (unsalted) small hash, unlike Python's ``hash``."""
    value = 2166136261
    for byte in text.encode():
        value = ((value ^ byte) * 16777619) & 0xFFFFFFFF
    return value
