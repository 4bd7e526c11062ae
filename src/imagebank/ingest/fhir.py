"""HL7 FHIR R4 clinical data in (issue 6): bundles and bulk-export NDJSON into
``domain.clinical`` records (decision 0020).

Inputs are files or folders (``*.json`` and ``*.ndjson`` in them, recursively, in name order):

- **a JSON file** holds a ``Bundle`` of any type (transaction, batch, collection, searchset,
  ...) or one resource;
- **an NDJSON file** holds one resource a line, as a bulk ``$export`` writes them
  (``<ResourceType>.<n>.ndjson``).

Read: Patient, Condition, Observation, Procedure, MedicationRequest, MedicationStatement,
Encounter, DiagnosticReport and ImagingStudy (Medication only to give a ``medicationReference``
its code). Other resource types are counted in ``FhirReader.skipped`` and are not problems.

API:

- ``iter_records(paths, strict=False)`` yields one ``ClinicalRecord`` per patient with all its
  facts, and a ``FhirProblem`` for each thing that could not be read. The records come at the
  end: the facts of every patient are held in memory (facts only, never the JSON), about
  0.5 KB a fact.
- ``FhirReader(strict=False).read(paths)`` streams, for extracts too large for that: it yields
  each patient's ``ClinicalRecord`` (without facts) as soon as its Patient resource is read,
  then ``PatientFact(patient, fact)`` for each fact, ``patient`` being the record's
  ``source_id``. A later Patient with the same ``source_id`` (the same patient in two
  bundles) yields the record again with the identifiers of both: the caller updates it. Only
  the patient index (each patient's keys) is held, and the facts whose patient was not read
  yet. ``FhirReader.records(paths)`` is ``iter_records``. ``reader.resources`` counts every
  resource read by type; ``reader.facts`` counts facts by kind.

Patients come first: NDJSON files named ``Patient.*`` (then ``Medication.*``) are read before
the rest, and a bundle's Patient (and Medication) entries before its other entries. A resource
names its patient by ``subject`` (or ``patient``): ``Patient/<id>`` (also as an absolute URL,
or with ``/_history/<v>``) or a bundle's ``fullUrl`` (``urn:uuid:<id>``). A fact whose patient
is read later (in a later bundle) waits, and a fact whose patient is in none of the inputs is
an ``orphan`` problem at the end. Resource ids must be unique across the inputs of one read.

What a fact keeps (``domain.clinical.Fact``):

- the first coding of the resource's code as ``system``/``code``/``display`` (the coding's
  display: a term, not the source's free ``text``), the other codings in ``other_codes``;
- Condition: onset and abatement as start and end; status is the clinical status, or the
  verification status when that is ``entered-in-error`` or ``refuted``;
- Observation: ``valueQuantity`` as ``value_number`` and ``unit`` (the UCUM code when given,
  else the unit text), ``valueInteger`` as ``value_number``, ``valueCodeableConcept`` as
  ``value_text`` (the code) and ``value_system``, ``valueString`` and ``valueBoolean`` as
  ``value_text``; effective[x] as start/end. **Components**: the observation itself is one
  fact (with its own value if it has one) and each component that has a value is one more
  fact, with the component's code, the observation's time and status, and ``source_id``
  ``Observation/<id>#component<i>`` (a blood pressure: the panel, systolic, diastolic);
- Procedure: performed[x]; MedicationRequest: the medication's code (dm+d, RxNorm ...) and
  ``authoredOn``; MedicationStatement: the medication and effective[x]; Encounter: its first
  type as the code, its class in ``other_codes``, its period;
- DiagnosticReport: its code, effective[x] and ``conclusionCode`` (in ``other_codes``). The
  free-text ``conclusion`` and ``presentedForm`` are **not** kept: report text holds names,
  dates and identifiers, and nothing here can de-identify it;
- ImagingStudy: the StudyInstanceUID from an identifier of system ``urn:dicom:uid`` or a
  value ``urn:oid:<uid>`` (``study_uids``), accession numbers from identifiers of type ACSN,
  the modalities of the study and its series, series body sites in ``other_codes``, started.

A patient (``ClinicalRecord``): each identifier becomes a ``PatientRef``: the NHS number
system's as ``PatientRef.nhs_number`` (an invalid one is a ``bad_nhs_number`` problem and is
left out; the patient is kept with its other identifiers), others as (system, value);
identifiers without a system, or with use ``old``, are left out. ``birthDate`` as given,
gender as the DICOM PatientSex code (M, F, O; unknown is empty), ``deceasedDateTime``.

Times: FHIR date, dateTime and instant become timezone-aware datetimes in UTC. A time without
an offset is taken as UTC; a partial date (``2019``, ``2019-05``) is the start of its period
(the precision is not kept).

Validation (decision 0020): the default reads the fields it keeps straight from ``json``'s
dicts and checks each one's type and format (a code a string, a value a number, a time a FHIR
dateTime, a UID digits and dots): 4.9k synthea resources are read at about 100,000 resources/s
against 6,000/s when each supported resource goes through its full ``fhir.resources.R4B``
model, too slow for the import's 20,000 resources/s. ``strict=True`` does that full R4B
validation too (``imagebank clinical import --strict``). Either way a resource that fails is an
``invalid`` problem and the rest go on.

Problems (``FhirProblem``): ``label`` says where (the path with ``:<line>`` or
`` entry <i>``), ``reason`` is one of ``unreadable``, ``not_json``, ``not_fhir``,
``invalid``, ``orphan``, ``bad_nhs_number``, and ``message`` names the resource type and the
field, never a value from the data.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from imagebank.domain.clinical import (
    NHS_NUMBER_SYSTEM,
    ClinicalRecord,
    Fact,
    FactKind,
    PatientRef,
    code_system_name,
)
from imagebank.ingest.clinical_items import ClinicalItem, ImportProblem, PatientFact

__all__ = [
    "FhirProblem",
    "FhirReader",
    "PatientFact",
    "fhir_datetime",
    "iter_records",
]

#: Resource types that give facts, and their kind.
FACT_KINDS = {
    "Condition": FactKind.CONDITION,
    "Observation": FactKind.OBSERVATION,
    "Procedure": FactKind.PROCEDURE,
    "MedicationRequest": FactKind.MEDICATION,
    "MedicationStatement": FactKind.MEDICATION,
    "Encounter": FactKind.ENCOUNTER,
    "DiagnosticReport": FactKind.REPORT,
    "ImagingStudy": FactKind.IMAGING_STUDY,
}
#: Every FHIR R4 (4.0.1) and R4B (4.3.0) resource type: another ``resourceType`` is not FHIR R4.
RESOURCE_TYPES = frozenset(
    """Account ActivityDefinition AdministrableProductDefinition AdverseEvent AllergyIntolerance
    Appointment AppointmentResponse AuditEvent Basic Binary BiologicallyDerivedProduct
    BodyStructure Bundle CapabilityStatement CarePlan CareTeam CatalogEntry ChargeItem
    ChargeItemDefinition Citation Claim ClaimResponse ClinicalImpression ClinicalUseDefinition
    CodeSystem Communication CommunicationRequest CompartmentDefinition Composition ConceptMap
    Condition Consent Contract Coverage CoverageEligibilityRequest CoverageEligibilityResponse
    DetectedIssue Device DeviceDefinition DeviceMetric DeviceRequest DeviceUseStatement
    DiagnosticReport DocumentManifest DocumentReference EffectEvidenceSynthesis Encounter
    Endpoint EnrollmentRequest EnrollmentResponse EpisodeOfCare EventDefinition Evidence
    EvidenceReport EvidenceVariable ExampleScenario ExplanationOfBenefit FamilyMemberHistory
    Flag Goal GraphDefinition Group GuidanceResponse HealthcareService ImagingStudy
    Immunization ImmunizationEvaluation ImmunizationRecommendation ImplementationGuide
    Ingredient InsurancePlan Invoice Library Linkage List Location ManufacturedItemDefinition
    Measure MeasureReport Media Medication MedicationAdministration MedicationDispense
    MedicationKnowledge MedicationRequest MedicationStatement MedicinalProduct
    MedicinalProductAuthorization MedicinalProductContraindication MedicinalProductDefinition
    MedicinalProductIndication MedicinalProductIngredient MedicinalProductInteraction
    MedicinalProductManufactured MedicinalProductPackaged MedicinalProductPharmaceutical
    MedicinalProductUndesirableEffect MessageDefinition MessageHeader MolecularSequence
    NamingSystem NutritionOrder NutritionProduct Observation ObservationDefinition
    OperationDefinition OperationOutcome Organization OrganizationAffiliation
    PackagedProductDefinition Parameters Patient PaymentNotice PaymentReconciliation Person
    PlanDefinition Practitioner PractitionerRole Procedure Provenance Questionnaire
    QuestionnaireResponse RegulatedAuthorization RelatedPerson RequestGroup ResearchDefinition
    ResearchElementDefinition ResearchStudy ResearchSubject RiskAssessment RiskEvidenceSynthesis
    Schedule SearchParameter ServiceRequest Slot Specimen SpecimenDefinition StructureDefinition
    StructureMap Subscription SubscriptionStatus SubscriptionTopic Substance
    SubstanceDefinition SubstanceNucleicAcid SubstancePolymer SubstanceProtein
    SubstanceReferenceInformation SubstanceSourceMaterial SubstanceSpecification
    SupplyDelivery SupplyRequest Task TerminologyCapabilities TestReport TestScript ValueSet
    VerificationResult VisionPrescription""".split()
)
_SEX = {"male": "M", "female": "F", "other": "O", "unknown": ""}
_UCUM = "http://unitsofmeasure.org"
_SYSTEM_NAMES: dict[str, str] = {}  # code_system_name, remembered
_ACCESSION_TYPE = "ACSN"
_DATETIME = re.compile(
    r"[0-9]{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01])"
    r"(T([01][0-9]|2[0-3]):[0-5][0-9](:([0-5][0-9]|60)(\.[0-9]+)?)?"
    r"(Z|[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))?)?)?)?"
)
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


#: A problem of a FHIR input (the name every clinical reader's problem had first).
FhirProblem = ImportProblem
_Item = ClinicalItem


class _Invalid(ValueError):
    """A field of a resource that is not what FHIR says; ``where`` is its path."""

    def __init__(self, where: str, what: str) -> None:
        super().__init__(where, what)
        self.where = where
        self.what = what


# ---------------------------------------------------------------------------- field readers
def _str(value: Any, where: str) -> str:
    if value is None:
        return ""
    if type(value) is not str:
        raise _Invalid(where, "not a string")
    return value


def _dict(value: Any, where: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise _Invalid(where, "not an object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if type(value) is not list:
        raise _Invalid(where, "not an array")
    return value


def fhir_datetime(text: Any, where: str = "") -> datetime:
    """A FHIR date, dateTime or instant as an aware datetime in UTC: the start of a partial
    date's period; UTC when no offset is given. Raises ``ValueError`` for anything else."""
    if type(text) is not str or not _DATETIME.fullmatch(text):
        raise _Invalid(where, "not a FHIR dateTime")
    try:
        n = len(text)
        if n == 4:
            moment = datetime(int(text), 1, 1, tzinfo=UTC)
        elif n == 7:
            moment = datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=UTC)
        else:
            moment = datetime.fromisoformat(text)
    except ValueError:  # 31 February, a leap second
        raise _Invalid(where, "not a FHIR dateTime") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _time(value: Any, where: str) -> datetime | None:
    return None if value is None else fhir_datetime(value, where)


def _period(value: Any, where: str) -> tuple[datetime | None, datetime | None]:
    if value is None:
        return None, None
    period = _dict(value, where)
    return (
        _time(period.get("start"), where + ".start"),
        _time(period.get("end"), where + ".end"),
    )


def _coding(value: Any, where: str) -> tuple[str, str, str]:
    coding = _dict(value, where)
    system = _str(coding.get("system"), where + ".system")
    name = _SYSTEM_NAMES.get(system)
    if name is None:
        name = code_system_name(system)
        if len(_SYSTEM_NAMES) < 4096:
            _SYSTEM_NAMES[system] = name
    return (
        name,
        _str(coding.get("code"), where + ".code"),
        _str(coding.get("display"), where + ".display"),
    )


def _codings(value: Any, where: str) -> list[tuple[str, str, str]]:
    """The codings of a CodeableConcept (its ``text`` is free text and is not read)."""
    if value is None:
        return []
    concept = _dict(value, where)
    codings = _list(concept.get("coding"), where + ".coding")
    return [_coding(c, f"{where}.coding[{i}]") for i, c in enumerate(codings)]


def _first_status(value: Any, where: str) -> str:
    codings = _codings(value, where)
    return codings[0][1] if codings else ""


class _Coded:
    """The code of a fact: the first coding, and the others."""

    __slots__ = ("code", "display", "others", "system")

    def __init__(self, codings: list[tuple[str, str, str]]) -> None:
        if codings:
            self.system, self.code, self.display = codings[0]
            self.others = tuple((s, c) for s, c, _ in codings[1:])
        else:
            self.system = self.code = self.display = ""
            self.others = ()


def _effective(resource: dict[str, Any], prefix: str) -> tuple[datetime | None, datetime | None]:
    """``<prefix>DateTime``, ``<prefix>Instant`` or ``<prefix>Period``."""
    value = resource.get(prefix + "DateTime")
    if value is not None:
        return fhir_datetime(value, prefix + "DateTime"), None
    value = resource.get(prefix + "Instant")
    if value is not None:
        return fhir_datetime(value, prefix + "Instant"), None
    return _period(resource.get(prefix + "Period"), prefix + "Period")


# ---------------------------------------------------------------------------- references
def _reference_key(reference: str) -> str:
    """The key a reference names its target by: ``Patient/<id>`` for a relative or absolute
    REST reference (without ``/_history``), else the reference itself (``urn:uuid:...``)."""
    if reference.startswith("urn:"):
        return reference
    parts = reference.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) >= 2:
        return parts[-2] + "/" + parts[-1]
    return reference


def _patient_reference(resource: dict[str, Any]) -> str:
    """The key of the resource's patient (``subject``, else ``patient``), or ""."""
    for name in ("subject", "patient"):
        value = resource.get(name)
        if value is not None:
            reference = _str(_dict(value, name).get("reference"), name + ".reference")
            return _reference_key(reference) if reference else ""
    return ""


# ---------------------------------------------------------------------------- facts
class _Context:
    """What a fact builder may look up: the Medication codes read so far."""

    __slots__ = ("medications",)

    def __init__(self) -> None:
        self.medications: dict[str, list[tuple[str, str, str]]] = {}


def _facts_condition(r: dict[str, Any], sid: str, ctx: _Context) -> list[Fact]:
    coded = _Coded(_codings(r.get("code"), "code"))
    start = end = None
    if "onsetDateTime" in r:
        start = fhir_datetime(r["onsetDateTime"], "onsetDateTime")
    elif "onsetPeriod" in r:
        start, _ = _period(r["onsetPeriod"], "onsetPeriod")
    if "abatementDateTime" in r:
        end = fhir_datetime(r["abatementDateTime"], "abatementDateTime")
    elif "abatementPeriod" in r:
        _, end = _period(r["abatementPeriod"], "abatementPeriod")
    status = _first_status(r.get("clinicalStatus"), "clinicalStatus")
    verification = _first_status(r.get("verificationStatus"), "verificationStatus")
    if verification in ("entered-in-error", "refuted"):
        status = verification
    return [
        Fact(
            FactKind.CONDITION, sid, coded.system, coded.code, coded.display,
            start=start, end=end, status=status, other_codes=coded.others,
        )
    ]


def _value(holder: dict[str, Any], where: str) -> tuple[bool, float | None, str, str, str]:
    """(has a value, number, text, text's code system, unit) of an Observation or component."""
    quantity = holder.get("valueQuantity")
    if quantity is not None:
        quantity = _dict(quantity, where + "valueQuantity")
        number = quantity.get("value")
        if number is not None and (type(number) not in (int, float)):
            raise _Invalid(where + "valueQuantity.value", "not a number")
        unit = _str(quantity.get("unit"), where + "valueQuantity.unit")
        code = _str(quantity.get("code"), where + "valueQuantity.code")
        if code and quantity.get("system") == _UCUM:
            unit = code
        return True, None if number is None else float(number), "", "", unit
    concept = holder.get("valueCodeableConcept")
    if concept is not None:
        codings = _codings(concept, where + "valueCodeableConcept")
        if codings:
            return True, None, codings[0][1], codings[0][0], ""
        return False, None, "", "", ""
    if "valueString" in holder:
        return True, None, _str(holder["valueString"], where + "valueString"), "", ""
    if "valueInteger" in holder:
        number = holder["valueInteger"]
        if type(number) is not int:
            raise _Invalid(where + "valueInteger", "not an integer")
        return True, float(number), "", "", ""
    if "valueBoolean" in holder:
        flag = holder["valueBoolean"]
        if type(flag) is not bool:
            raise _Invalid(where + "valueBoolean", "not a boolean")
        return True, None, "true" if flag else "false", "", ""
    return False, None, "", "", ""


def _facts_observation(r: dict[str, Any], sid: str, ctx: _Context) -> list[Fact]:
    coded = _Coded(_codings(r.get("code"), "code"))
    start, end = _effective(r, "effective")
    status = _str(r.get("status"), "status")
    _, number, text, text_system, unit = _value(r, "")
    facts = [
        Fact(
            FactKind.OBSERVATION, sid, coded.system, coded.code, coded.display,
            value_number=number, value_text=text, value_system=text_system, unit=unit,
            start=start, end=end, status=status, other_codes=coded.others,
        )
    ]
    for i, raw_component in enumerate(_list(r.get("component"), "component")):
        where = f"component[{i}]."
        component = _dict(raw_component, where[:-1])
        has_value, number, text, text_system, unit = _value(component, where)
        if not has_value:
            continue
        part = _Coded(_codings(component.get("code"), where + "code"))
        facts.append(
            Fact(
                FactKind.OBSERVATION, f"{sid}#component{i}", part.system, part.code,
                part.display, value_number=number, value_text=text, value_system=text_system,
                unit=unit, start=start, end=end, status=status, other_codes=part.others,
            )
        )
    return facts


def _facts_procedure(r: dict[str, Any], sid: str, ctx: _Context) -> list[Fact]:
    coded = _Coded(_codings(r.get("code"), "code"))
    start, end = _effective(r, "performed")
    return [
        Fact(
            FactKind.PROCEDURE, sid, coded.system, coded.code, coded.display,
            start=start, end=end, status=_str(r.get("status"), "status"),
            other_codes=coded.others,
        )
    ]


def _medication_codings(r: dict[str, Any], ctx: _Context) -> list[tuple[str, str, str]]:
    concept = r.get("medicationCodeableConcept")
    if concept is not None:
        return _codings(concept, "medicationCodeableConcept")
    value = r.get("medicationReference")
    if value is None:
        return []
    reference = _str(_dict(value, "medicationReference").get("reference"), "medicationReference")
    if reference.startswith("#"):
        for i, raw_contained in enumerate(_list(r.get("contained"), "contained")):
            contained = _dict(raw_contained, f"contained[{i}]")
            if contained.get("resourceType") == "Medication" and contained.get("id") == (
                reference[1:]
            ):
                return _codings(contained.get("code"), f"contained[{i}].code")
        return []
    return ctx.medications.get(_reference_key(reference), [])


def _facts_medication(r: dict[str, Any], sid: str, ctx: _Context) -> list[Fact]:
    coded = _Coded(_medication_codings(r, ctx))
    if r["resourceType"] == "MedicationRequest":
        start, end = _time(r.get("authoredOn"), "authoredOn"), None
    else:
        start, end = _effective(r, "effective")
    return [
        Fact(
            FactKind.MEDICATION, sid, coded.system, coded.code, coded.display,
            start=start, end=end, status=_str(r.get("status"), "status"),
            other_codes=coded.others,
        )
    ]


def _facts_encounter(r: dict[str, Any], sid: str, ctx: _Context) -> list[Fact]:
    codings: list[tuple[str, str, str]] = []
    for i, concept in enumerate(_list(r.get("type"), "type")):
        codings.extend(_codings(concept, f"type[{i}]"))
    if "class" in r:
        codings.append(_coding(r["class"], "class"))
    coded = _Coded(codings)
    start, end = _period(r.get("period"), "period")
    return [
        Fact(
            FactKind.ENCOUNTER, sid, coded.system, coded.code, coded.display,
            start=start, end=end, status=_str(r.get("status"), "status"),
            other_codes=coded.others,
        )
    ]


def _facts_report(r: dict[str, Any], sid: str, ctx: _Context) -> list[Fact]:
    codings = _codings(r.get("code"), "code")
    for i, concept in enumerate(_list(r.get("conclusionCode"), "conclusionCode")):
        codings.extend(_codings(concept, f"conclusionCode[{i}]"))
    coded = _Coded(codings)
    start, end = _effective(r, "effective")
    return [
        Fact(
            FactKind.REPORT, sid, coded.system, coded.code, coded.display,
            start=start, end=end, status=_str(r.get("status"), "status"),
            other_codes=coded.others,
        )
    ]


def _study_uid(identifier: dict[str, Any], where: str) -> str:
    system = _str(identifier.get("system"), where + ".system")
    value = _str(identifier.get("value"), where + ".value")
    if system == "urn:dicom:uid" or value.startswith("urn:oid:"):
        uid = value.removeprefix("urn:oid:")
        if len(uid) > 64 or not _UID.fullmatch(uid):
            raise _Invalid(where + ".value", "not a DICOM UID")
        return uid
    return ""


def _facts_imaging(r: dict[str, Any], sid: str, ctx: _Context) -> list[Fact]:
    study_uids: list[str] = []
    accessions: list[str] = []
    for i, raw_identifier in enumerate(_list(r.get("identifier"), "identifier")):
        where = f"identifier[{i}]"
        identifier = _dict(raw_identifier, where)
        uid = _study_uid(identifier, where)
        if uid:
            study_uids.append(uid)
        elif any(code == _ACCESSION_TYPE for _, code, _ in _codings(identifier.get("type"),
                                                                     where + ".type")):
            value = _str(identifier.get("value"), where + ".value")
            if value:
                accessions.append(value)
    modalities: list[str] = []
    sites: list[tuple[str, str]] = []
    for i, coding in enumerate(_list(r.get("modality"), "modality")):
        modalities.append(_coding(coding, f"modality[{i}]")[1])
    for i, raw_series in enumerate(_list(r.get("series"), "series")):
        where = f"series[{i}]"
        series = _dict(raw_series, where)
        if series.get("modality") is not None:
            modalities.append(_coding(series["modality"], where + ".modality")[1])
        if series.get("bodySite") is not None:
            system, code, _ = _coding(series["bodySite"], where + ".bodySite")
            sites.append((system, code))
    codings: list[tuple[str, str, str]] = []
    for i, concept in enumerate(_list(r.get("procedureCode"), "procedureCode")):
        codings.extend(_codings(concept, f"procedureCode[{i}]"))
    coded = _Coded(codings)
    others = coded.others + tuple(s for s in dict.fromkeys(sites) if s[1])
    return [
        Fact(
            FactKind.IMAGING_STUDY, sid, coded.system, coded.code, coded.display,
            start=_time(r.get("started"), "started"), status=_str(r.get("status"), "status"),
            other_codes=others, study_uids=tuple(dict.fromkeys(study_uids)),
            accession_numbers=tuple(dict.fromkeys(accessions)),
            modalities=tuple(m for m in dict.fromkeys(modalities) if m),
        )
    ]


_BUILDERS = {
    "Condition": _facts_condition,
    "Observation": _facts_observation,
    "Procedure": _facts_procedure,
    "MedicationRequest": _facts_medication,
    "MedicationStatement": _facts_medication,
    "Encounter": _facts_encounter,
    "DiagnosticReport": _facts_report,
    "ImagingStudy": _facts_imaging,
}


# ---------------------------------------------------------------------------- the reader
@dataclass(slots=True)
class _Patient:
    source_id: str
    identifiers: list[PatientRef]
    birth_date: str
    sex: str
    deceased: datetime | None
    facts: list[Fact] = field(default_factory=list)

    def record(self, facts: list[Fact] | None = None) -> ClinicalRecord:
        return ClinicalRecord(
            self.source_id, tuple(self.identifiers), self.birth_date, self.sex, self.deceased,
            [] if facts is None else facts,
        )


def _files(paths: Iterable[str | Path]) -> list[Path]:
    """Files of the inputs, Patient then Medication NDJSON first, otherwise in order."""
    files: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            files.extend(
                sorted(p for p in path.rglob("*") if p.suffix in (".json", ".ndjson") and
                       p.is_file())
            )
        else:
            files.append(path)

    def rank(path: Path) -> int:
        if path.suffix == ".ndjson":
            if path.name.startswith("Patient."):
                return 0
            if path.name.startswith("Medication."):
                return 1
        return 2

    return sorted(files, key=rank)  # stable: the given order within a rank


class FhirReader:
    """Reads FHIR R4 inputs (see the module's docstring). One reader for one import: it
    counts what it read in ``resources`` (by type), ``skipped`` (types not read),
    ``facts`` (by kind) and ``problems`` (by reason)."""

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict
        self.resources: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.facts: Counter[str] = Counter()
        self.problems: Counter[str] = Counter()
        self._patients: dict[str, _Patient] = {}  # canonical key -> patient
        self._aliases: dict[str, str] = {}  # any key (urn:uuid:, Patient/<id>) -> canonical
        self._waiting: dict[str, list[tuple[str, str, Fact]]] = {}  # key -> (label, type, fact)
        self._ctx = _Context()

    # -- public
    def records(self, paths: Iterable[str | Path]) -> Iterator[ClinicalRecord | FhirProblem]:
        """One ``ClinicalRecord`` per patient with all its facts (at the end), and problems
        (as they are found)."""
        for item in self.read(paths):
            if isinstance(item, PatientFact):
                self._patients[item.patient].facts.append(item.fact)
            elif isinstance(item, FhirProblem):
                yield item
        for patient in self._patients.values():
            yield patient.record(patient.facts)

    def read(
        self, paths: Iterable[str | Path]
    ) -> Iterator[ClinicalRecord | PatientFact | FhirProblem]:
        """Streams records (without facts), facts with their patient, and problems."""
        for path in _files(paths):
            if path.suffix == ".ndjson":
                yield from self._read_ndjson(path)
            else:
                yield from self._read_json(path)
        for key, waiting in self._waiting.items():
            for label, resource_type, _ in waiting:
                yield self._problem(
                    label, "orphan",
                    f"{resource_type} whose patient is not in the inputs ({_key_kind(key)})",
                )
        self._waiting.clear()

    # -- files
    def _problem(self, label: str, reason: str, message: str) -> FhirProblem:
        self.problems[reason] += 1
        return FhirProblem(label, reason, message)

    def _read_ndjson(self, path: Path) -> Iterator[ClinicalRecord | PatientFact | FhirProblem]:
        try:
            stream = path.open("rb")
        except OSError as exc:
            yield self._problem(str(path), "unreadable", f"cannot be read ({type(exc).__name__})")
            return
        loads = json.loads
        with stream:
            for number, line in enumerate(stream, 1):
                if not line.strip():
                    continue
                label = f"{path}:{number}"
                try:
                    resource = loads(line.decode())  # str is faster for json than bytes
                except ValueError as exc:
                    yield self._problem(label, "not_json", _json_error(exc, "the line"))
                    continue
                yield from self._resource(resource, label, "")

    def _read_json(self, path: Path) -> Iterator[ClinicalRecord | PatientFact | FhirProblem]:
        label = str(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            yield self._problem(label, "unreadable", f"cannot be read ({type(exc).__name__})")
            return
        try:
            document = json.loads(data.decode())
        except ValueError as exc:
            yield self._problem(label, "not_json", _json_error(exc, "the file"))
            return
        del data
        if type(document) is not dict or document.get("resourceType") != "Bundle":
            yield from self._resource(document, label, "")
            return
        self.resources["Bundle"] += 1
        try:
            entries = _list(document.get("entry"), "entry")
        except _Invalid:
            yield self._problem(label, "not_fhir", "a Bundle whose entry is not an array")
            return
        later: list[tuple[int, dict[str, Any]]] = []
        for index, entry in enumerate(entries):
            if type(entry) is not dict:
                yield self._problem(f"{label} entry {index}", "not_fhir", "an entry that is "
                                    "not an object")
                continue
            resource = entry.get("resource")
            if resource is None:  # a DELETE, a response without its resource
                continue
            kind = resource.get("resourceType") if type(resource) is dict else None
            if kind in ("Patient", "Medication"):
                yield from self._resource(resource, f"{label} entry {index}",
                                          _full_url(entry))
            else:
                later.append((index, entry))
        for index, entry in later:
            yield from self._resource(entry["resource"], f"{label} entry {index}",
                                      _full_url(entry))

    # -- resources
    def _resource(self, resource: Any, label: str, full_url: str) -> list[_Item]:
        """What one resource gives (a list, not a generator: it is called per resource)."""
        if type(resource) is not dict:
            return [self._problem(label, "not_fhir", "not a FHIR resource (not a JSON object)")]
        kind = resource.get("resourceType")
        if kind not in RESOURCE_TYPES:
            return [
                self._problem(
                    label, "not_fhir", "not a FHIR R4 resource (no resourceType, or not an R4 one)"
                )
            ]
        self.resources[kind] += 1
        builder = _BUILDERS.get(kind)
        if builder is None and kind not in ("Patient", "Medication"):
            self.skipped[kind] += 1
            return []
        if self.strict:
            problem = _validate(resource, kind, label)
            if problem is not None:
                self.problems[problem.reason] += 1
                return [problem]
        rid = resource.get("id")
        if rid is not None and type(rid) is not str:
            return [self._problem(label, "invalid", f"{kind} fails FHIR R4 validation: id is "
                                  "not a string")]
        sid = f"{kind}/{rid}" if rid else full_url
        if not sid:
            return [self._problem(label, "invalid", f"{kind} without an id")]
        out: list[_Item] = []
        try:
            if kind == "Patient":
                self._patient(resource, sid, full_url, label, out)
                return out
            if kind == "Medication":
                codings = _codings(resource.get("code"), "code")
                for key in (sid, full_url):
                    if key:
                        self._ctx.medications[key] = codings
                return out
            assert builder is not None
            facts = builder(resource, sid, self._ctx)
            key = _patient_reference(resource)
        except _Invalid as exc:
            out.append(self._problem(label, "invalid", f"{kind} fails FHIR R4 validation: "
                                     f"{exc.where} is {exc.what}"))
            return out
        patient = self._aliases.get(key) if key else None
        if patient is None:
            self._waiting.setdefault(key, []).extend((label, kind, fact) for fact in facts)
            return out
        counts = self.facts
        for fact in facts:
            counts[fact.kind] += 1
            out.append(PatientFact(patient, fact))
        return out

    def _patient(
        self, r: dict[str, Any], sid: str, full_url: str, label: str, out: list[_Item]
    ) -> None:
        identifiers: list[PatientRef] = []
        for i, raw_identifier in enumerate(_list(r.get("identifier"), "identifier")):
            where = f"identifier[{i}]"
            identifier = _dict(raw_identifier, where)
            system = _str(identifier.get("system"), where + ".system")
            value = _str(identifier.get("value"), where + ".value")
            if not system or not value or identifier.get("use") == "old":
                continue
            if system.rstrip("/") == NHS_NUMBER_SYSTEM:
                try:
                    identifiers.append(PatientRef.nhs_number(value))
                except ValueError:
                    out.append(
                        self._problem(
                            label, "bad_nhs_number",
                            f"Patient {where}: an NHS number that is not ten digits with a "
                            "valid check digit (left out)",
                        )
                    )
                continue
            identifiers.append(PatientRef(system, value))
        birth_date = _str(r.get("birthDate"), "birthDate")
        if birth_date:
            fhir_datetime(birth_date, "birthDate")
        gender = _str(r.get("gender"), "gender")
        if gender not in _SEX and gender:
            raise _Invalid("gender", "not a FHIR administrative gender")
        deceased = _time(r.get("deceasedDateTime"), "deceasedDateTime")
        keys = [k for k in (sid, _reference_key(full_url) if full_url else "") if k]
        canonical = next((self._aliases[k] for k in keys if k in self._aliases), sid)
        patient = self._patients.get(canonical)
        if patient is None:
            patient = _Patient(canonical, identifiers, birth_date, _SEX.get(gender, ""), deceased)
            self._patients[canonical] = patient
        else:  # the same patient again: its identifiers joined, the first demographics kept
            patient.identifiers.extend(i for i in identifiers if i not in patient.identifiers)
            patient.birth_date = patient.birth_date or birth_date
            patient.sex = patient.sex or _SEX.get(gender, "")
            patient.deceased = patient.deceased or deceased
        for key in keys:
            self._aliases[key] = canonical
        out.append(patient.record())
        for key in keys:
            for _, _, fact in self._waiting.pop(key, ()):
                self.facts[fact.kind] += 1
                out.append(PatientFact(canonical, fact))


def _full_url(entry: dict[str, Any]) -> str:
    value = entry.get("fullUrl")
    return value if type(value) is str else ""


def _key_kind(key: str) -> str:
    if not key:
        return "it names none"
    if key.startswith("urn:"):
        return "a urn reference"
    return f"a {key.split('/', 1)[0]} reference"


def _json_error(exc: ValueError, what: str) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{what} is not JSON (truncated or damaged at line {exc.lineno} column {exc.colno})"
    return f"{what} is not JSON (not UTF-8 text)"


def _validate(resource: dict[str, Any], kind: str, label: str) -> FhirProblem | None:
    """Full validation against the ``fhir.resources`` R4B model; where it fails (paths and
    error types only: pydantic's messages may quote the input)."""
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    try:
        get_fhir_model_class(kind).model_validate(resource)
    except ValidationError as exc:
        places = [
            ".".join(str(p) for p in error["loc"]) + f" ({error['type']})"
            for error in exc.errors(include_url=False, include_input=False)[:3]
        ]
        more = exc.error_count() - len(places)
        return FhirProblem(label, "invalid", f"{kind} fails FHIR R4 validation: "
                           + "; ".join(places) + (f" and {more} more" if more > 0 else ""))
    except (ValueError, TypeError) as exc:  # fhir.resources' own checks
        return FhirProblem(label, "invalid",
                           f"{kind} fails FHIR R4 validation ({type(exc).__name__})")
    return None


def iter_records(
    paths: Iterable[str | Path], *, strict: bool = False
) -> Iterator[ClinicalRecord | FhirProblem]:
    """One ``ClinicalRecord`` per patient with all its facts, and the problems found."""
    return FhirReader(strict=strict).records(paths)
