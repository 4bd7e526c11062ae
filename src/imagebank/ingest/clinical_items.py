"""What every clinical reader yields (``ingest.fhir``, ``ingest.tabular``) and
``services.clinical`` consumes: a patient's ``ClinicalRecord`` (before that patient's facts),
``PatientFact``s, and ``ImportProblem``s for what could not be read (issue 6)."""

from __future__ import annotations

from dataclasses import dataclass

from imagebank.domain.clinical import ClinicalRecord, Fact

__all__ = ["ClinicalItem", "ImportProblem", "PatientFact"]


@dataclass(frozen=True, slots=True)
class ImportProblem:
    """Something in the input that could not be read. ``label`` is where (a path, with a
    line, an entry or a row); ``reason`` is a short word to count by; ``message`` says what,
    never with a value from the data."""

    label: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class PatientFact:
    """A fact and its patient: ``patient`` is the patient's ``ClinicalRecord.source_id``."""

    patient: str
    fact: Fact


ClinicalItem = ClinicalRecord | PatientFact | ImportProblem
