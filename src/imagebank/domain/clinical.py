"""Clinical data beside the images (issue 6): the identifiers that link a patient's records to
their images, and the facts imported about them. Pure: no I/O, no FHIR library.

A patient is named by an identifier with its issuer (``PatientRef``): an NHS number (checked
with its modulus 11 check digit, as the NHS Data Dictionary's "NHS NUMBER" says), or a local
identifier with the system that issued it. The same ref gives the same keyed pseudonym as the
patient's images (``domain.pseudonyms``: PatientID with IssuerOfPatientID), so records and
images join without identifiers ever leaving the site.

A ``Fact`` is one clinical statement (a diagnosis, an observation, a procedure, a medication,
an encounter, a report, an imaging study), with its code system and code kept as given
(SNOMED CT, ICD-10, LOINC, dm+d ...), a value and unit when it has them, and its time.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime

#: The FHIR identifier system of the NHS number (England and Wales).
NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
#: How an NHS number is given as a DICOM IssuerOfPatientID (sites differ; this one is ours).
NHS_NUMBER_ISSUER = "NHS"
#: Known code systems, by FHIR URI: the short name facts and queries use.
CODE_SYSTEMS = {
    "http://snomed.info/sct": "SNOMED",
    "http://hl7.org/fhir/sid/icd-10": "ICD10",
    "http://hl7.org/fhir/sid/icd-10-uk": "ICD10",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD10CM",
    "http://loinc.org": "LOINC",
    "https://dmd.nhs.uk": "DMD",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RXNORM",
    "http://dicom.nema.org/resources/ontology/DCM": "DCM",
    "http://unitsofmeasure.org": "UCUM",
}
_DIGITS = re.compile(r"^[0-9]{10}$")


class FactKind(enum.StrEnum):
    CONDITION = "condition"
    OBSERVATION = "observation"
    PROCEDURE = "procedure"
    MEDICATION = "medication"
    ENCOUNTER = "encounter"
    REPORT = "report"
    IMAGING_STUDY = "imaging_study"


def normalise_nhs_number(text: str) -> str:
    """The ten digits of an NHS number written with spaces or dashes (``943 476 5919``)."""
    return re.sub(r"[\s-]", "", text)


def is_valid_nhs_number(text: str) -> bool:
    """Whether ``text`` is an NHS number: ten digits whose last is the modulus 11 check digit
    of the first nine (weights 10 to 2; a check of 10 is never issued, 11 means 0)."""
    digits = normalise_nhs_number(text)
    if not _DIGITS.match(digits):
        return False
    total = sum(int(d) * w for d, w in zip(digits[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(digits[9])


def code_system_name(uri: str | None) -> str:
    """The short name of a code system URI (``SNOMED``, ``ICD10``, ``LOINC`` ...), else the
    URI itself (kept as given: it still identifies the system)."""
    if not uri:
        return ""
    return CODE_SYSTEMS.get(uri.rstrip("/"), uri)


@dataclass(frozen=True, order=True, slots=True)
class PatientRef:
    """A patient as a source names them: an identifier and its issuer. An NHS number is
    stored as its ten digits with the issuer ``NHS`` whatever system URI carried it."""

    issuer: str
    value: str

    @classmethod
    def nhs_number(cls, text: str) -> PatientRef:
        digits = normalise_nhs_number(text)
        if not is_valid_nhs_number(digits):
            raise ValueError("not a valid NHS number (ten digits, modulus 11 check digit)")
        return cls(NHS_NUMBER_ISSUER, digits)

    @property
    def is_nhs_number(self) -> bool:
        return self.issuer == NHS_NUMBER_ISSUER


@dataclass(frozen=True, slots=True)
class Fact:
    """One clinical statement about a patient, as imported (values are the source's)."""

    kind: FactKind
    #: Where it came from, to make an import idempotent: (resource type, id) or a row key.
    source_id: str
    system: str = ""
    code: str = ""
    display: str = ""
    value_number: float | None = None
    value_text: str = ""
    #: The code system of ``value_text`` when the value is a code (a coded observation result).
    value_system: str = ""
    unit: str = ""
    start: datetime | None = None
    end: datetime | None = None
    status: str = ""
    #: Further codes of the same statement (a condition coded in SNOMED and ICD-10).
    other_codes: tuple[tuple[str, str], ...] = ()
    #: Links to images: StudyInstanceUIDs or accession numbers (an ImagingStudy).
    study_uids: tuple[str, ...] = ()
    accession_numbers: tuple[str, ...] = ()
    #: Imaging detail of an ImagingStudy: modalities and body sites (codes).
    modalities: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ClinicalRecord:
    """What a source says about one patient: how it identifies them (every identifier it
    gives), their demographics, and their facts."""

    source_id: str
    identifiers: tuple[PatientRef, ...]
    birth_date: str = ""
    sex: str = ""
    deceased: datetime | None = None
    facts: list[Fact] = field(default_factory=list)

    def preferred(self) -> PatientRef | None:
        """The identifier links are made by: a valid NHS number first, else the first
        identifier given."""
        for ref in self.identifiers:
            if ref.is_nhs_number:
                return ref
        return self.identifiers[0] if self.identifiers else None
