"""The archive's data model: Project → Subject → Study → Series → Instance, and Resource.

Records here are what the header parser produces and the index stores: frozen dataclasses,
valid once constructed (STYLE.md practice 4). Attribute names on the wire are DICOM keywords;
``INDEXED_ATTRIBUTES`` maps each indexed keyword to its level and column.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

ValueKind = Literal["str", "int", "float", "multi"]


class Level(enum.StrEnum):
    PROJECT = "project"
    SUBJECT = "subject"
    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"


@dataclass(frozen=True, slots=True)
class IndexedAttribute:
    """One DICOM attribute copied from the header into an index column."""

    keyword: str
    level: Level
    column: str
    kind: ValueKind = "str"
    #: True where PS3.18 Table 10.6.1-5 makes it a required QIDO-RS matching attribute.
    qido_required: bool = False


def _a(
    keyword: str, level: Level, column: str, kind: ValueKind = "str", qido: bool = False
) -> IndexedAttribute:
    return IndexedAttribute(keyword, level, column, kind, qido)


S, ST, SE, IN = Level.SUBJECT, Level.STUDY, Level.SERIES, Level.INSTANCE

#: What the index keeps in columns. QIDO-RS required matching attributes (PS3.18 10.6.1.2,
#: Table 10.6.1-5) at each level, and the acquisition attributes protocol checks need. The
#: full header of each instance is kept besides as DICOM JSON (PS3.18 Annex F).
INDEXED_ATTRIBUTES: tuple[IndexedAttribute, ...] = (
    # Patient (indexed on the subject)
    _a("PatientID", S, "patient_id", qido=True),
    _a("IssuerOfPatientID", S, "issuer_of_patient_id"),
    _a("PatientName", S, "patient_name", qido=True),
    _a("PatientBirthDate", S, "patient_birth_date"),
    _a("PatientSex", S, "patient_sex"),
    # Study
    _a("StudyInstanceUID", ST, "study_instance_uid", qido=True),
    _a("StudyDate", ST, "study_date", qido=True),
    _a("StudyTime", ST, "study_time", qido=True),
    _a("AccessionNumber", ST, "accession_number", qido=True),
    _a("ReferringPhysicianName", ST, "referring_physician_name", qido=True),
    _a("StudyID", ST, "study_id", qido=True),
    _a("StudyDescription", ST, "study_description"),
    _a("InstitutionName", ST, "institution_name"),
    # Series
    _a("SeriesInstanceUID", SE, "series_instance_uid", qido=True),
    _a("Modality", SE, "modality", qido=True),
    _a("SeriesNumber", SE, "series_number", "int", qido=True),
    _a("SeriesDescription", SE, "series_description"),
    _a("SeriesDate", SE, "series_date"),
    _a("SeriesTime", SE, "series_time"),
    _a("PerformedProcedureStepStartDate", SE, "performed_procedure_step_start_date", qido=True),
    _a("PerformedProcedureStepStartTime", SE, "performed_procedure_step_start_time", qido=True),
    _a("BodyPartExamined", SE, "body_part_examined"),
    _a("ProtocolName", SE, "protocol_name"),
    _a("Manufacturer", SE, "manufacturer"),
    _a("ManufacturerModelName", SE, "manufacturer_model_name"),
    _a("StationName", SE, "station_name"),
    _a("DeviceSerialNumber", SE, "device_serial_number"),
    _a("SoftwareVersions", SE, "software_versions", "multi"),
    _a("MagneticFieldStrength", SE, "magnetic_field_strength", "float"),
    _a("FrameOfReferenceUID", SE, "frame_of_reference_uid"),
    # Instance
    _a("SOPInstanceUID", IN, "sop_instance_uid", qido=True),
    _a("SOPClassUID", IN, "sop_class_uid", qido=True),
    _a("InstanceNumber", IN, "instance_number", "int", qido=True),
    _a("AcquisitionNumber", IN, "acquisition_number", "int"),
    _a("ContentDate", IN, "content_date"),
    _a("ContentTime", IN, "content_time"),
    _a("ImageType", IN, "image_type", "multi"),
    _a("Rows", IN, "rows", "int"),
    _a("Columns", IN, "columns", "int"),
    _a("NumberOfFrames", IN, "number_of_frames", "int"),
    _a("BitsAllocated", IN, "bits_allocated", "int"),
    _a("PhotometricInterpretation", IN, "photometric_interpretation"),
    _a("PixelSpacing", IN, "pixel_spacing", "multi"),
    _a("SliceThickness", IN, "slice_thickness", "float"),
    _a("SpacingBetweenSlices", IN, "spacing_between_slices", "float"),
    _a("ImagePositionPatient", IN, "image_position_patient", "multi"),
    _a("ImageOrientationPatient", IN, "image_orientation_patient", "multi"),
    _a("KVP", IN, "kvp", "float"),
    _a("XRayTubeCurrent", IN, "x_ray_tube_current", "float"),
    _a("ConvolutionKernel", IN, "convolution_kernel", "multi"),
    _a("RepetitionTime", IN, "repetition_time", "float"),
    _a("EchoTime", IN, "echo_time", "float"),
    _a("InversionTime", IN, "inversion_time", "float"),
    _a("FlipAngle", IN, "flip_angle", "float"),
    _a("SequenceName", IN, "sequence_name"),
    _a("BurnedInAnnotation", IN, "burned_in_annotation"),
)

#: Attributes without which an instance cannot be placed in the hierarchy.
REQUIRED_UIDS: tuple[str, ...] = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


def attributes_at(level: Level) -> tuple[IndexedAttribute, ...]:
    return tuple(a for a in INDEXED_ATTRIBUTES if a.level is level)


Scalar = str | int | float | None


@dataclass(frozen=True, slots=True)
class InstanceHeader:
    """What the index needs from one DICOM instance's header, by level.

    ``values`` maps each IndexedAttribute column to its value (None when absent).
    ``metadata`` is the header as DICOM JSON (PS3.18 Annex F) without bulk data.
    """

    values: dict[str, Scalar]
    metadata: dict[str, object]
    transfer_syntax_uid: str
    #: Oddities found while reading (tolerant on read, but recorded): short codes.
    oddities: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for keyword in REQUIRED_UIDS:
            column = _COLUMN_OF[keyword]
            value = self.values.get(column)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{keyword} is required")

    @property
    def sop_instance_uid(self) -> str:
        return str(self.values["sop_instance_uid"])

    @property
    def study_instance_uid(self) -> str:
        return str(self.values["study_instance_uid"])

    @property
    def series_instance_uid(self) -> str:
        return str(self.values["series_instance_uid"])

    @property
    def patient_id(self) -> str:
        return str(self.values.get("patient_id") or "")

    @property
    def issuer_of_patient_id(self) -> str:
        return str(self.values.get("issuer_of_patient_id") or "")

    def at(self, level: Level) -> dict[str, Scalar]:
        return {a.column: self.values.get(a.column) for a in attributes_at(level)}


_COLUMN_OF = {a.keyword: a.column for a in INDEXED_ATTRIBUTES}


def column_of(keyword: str) -> str:
    return _COLUMN_OF[keyword]


class QuarantineReason(enum.StrEnum):
    """Why a received object was not stored in the archive (machine-readable)."""

    EMPTY = "empty"
    NOT_DICOM = "not_dicom"
    UNREADABLE = "unreadable"
    TRUNCATED = "truncated"
    MISSING_UID = "missing_uid"
    EXECUTABLE_PREAMBLE = "executable_preamble"
    TOO_LARGE = "too_large"
    DICOMDIR = "dicomdir"
    CONFLICT = "conflict"
    PATIENT_MISMATCH = "patient_mismatch"
    BAD_ARCHIVE = "bad_archive"
    UNREADABLE_SOURCE = "unreadable_source"


class Outcome(enum.StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    QUARANTINED = "quarantined"


@dataclass(frozen=True, slots=True)
class Rejection:
    """A reason an object cannot be archived, with a message a person can act on.

    The message never contains patient data.
    """

    reason: QuarantineReason
    message: str


#: Problems an IngestSummary keeps by name (the counts go on): memory stays flat.
MAX_PROBLEMS = 1000


@dataclass(slots=True)
class IngestSummary:
    """Counts of one ingest run, with the reasons for everything not stored."""

    stored: int = 0
    duplicates: int = 0
    conflicts: int = 0
    quarantined: int = 0
    bytes_stored: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    #: (source label, reason, message) of the first MAX_PROBLEMS objects not stored, for the
    #: person running it.
    problems: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.stored + self.duplicates + self.conflicts + self.quarantined

    @property
    def ok(self) -> bool:
        return self.conflicts == 0 and self.quarantined == 0

    def add(
        self,
        outcome: Outcome,
        *,
        size: int = 0,
        reason: str | None = None,
        source: str = "",
        message: str = "",
    ) -> None:
        if outcome is Outcome.STORED:
            self.stored += 1
            self.bytes_stored += size
        elif outcome is Outcome.DUPLICATE:
            self.duplicates += 1
        else:
            if outcome is Outcome.CONFLICT:
                self.conflicts += 1
            else:
                self.quarantined += 1
            key = reason or outcome.value
            self.reasons[key] = self.reasons.get(key, 0) + 1
            if len(self.problems) < MAX_PROBLEMS:
                self.problems.append((source, key, message))

    def merge(self, other: IngestSummary) -> None:
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.conflicts += other.conflicts
        self.quarantined += other.quarantined
        self.bytes_stored += other.bytes_stored
        for k, v in other.reasons.items():
            self.reasons[k] = self.reasons.get(k, 0) + v
        self.problems.extend(other.problems[: MAX_PROBLEMS - len(self.problems)])

    def as_dict(self) -> dict[str, object]:
        return {
            "stored": self.stored,
            "duplicates": self.duplicates,
            "conflicts": self.conflicts,
            "quarantined": self.quarantined,
            "bytes_stored": self.bytes_stored,
            "reasons": dict(sorted(self.reasons.items())),
        }
