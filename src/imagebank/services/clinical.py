"""Clinical data into a site's archive (``imagebank clinical import``, issue 6).

FHIR R4 bundles and bulk NDJSON are read by ``ingest.fhir`` (patients first, facts streamed)
and written to the index in batches: each fact once (its ID derives from the project and the
source's ID of the statement, so an import run again adds nothing), under the subject it is
about.

Linking a record to a subject (decision 0021): a subject of the project whose PatientID is one
of the record's identifier values, with the same issuer or none (DICOM often leaves
IssuerOfPatientID empty); an NHS number first. Without one, a subject is made from the
record's preferred identifier (its NHS number, else the first), with no study yet: images
that arrive later under that PatientID and issuer join it. A record with no identifier cannot
be linked: its facts are not imported, and it is a problem.

Clinical data is identifiable: it enters a site's (identifiable) project only; research
projects refuse it, as they refuse images, until it can be released to them with
pseudonyms and shifted dates.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagebank.domain.clinical import ClinicalRecord, Fact, PatientRef
from imagebank.domain.errors import InvalidInputError
from imagebank.index import repo
from imagebank.ingest.fhir import FhirProblem, FhirReader, PatientFact
from imagebank.services.archive import Archive

#: Facts written per transaction.
BATCH = 5000
#: Problems kept for the summary (the counts are always complete).
MAX_PROBLEMS = 1000


@dataclass
class ClinicalSummary:
    patients: int = 0
    #: Of ``patients``: linked to a subject the project already had (with images, or from an
    #: earlier import).
    linked: int = 0
    new_subjects: int = 0
    facts: int = 0
    #: Of ``facts``: new in the index (the others were there from an earlier import).
    added: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    #: Resources read, by type, and not read (types imagebank does not import).
    resources: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    problems: list[FhirProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.reasons

    def as_dict(self) -> dict[str, Any]:
        return {"patients": self.patients, "linked": self.linked,
                "new_subjects": self.new_subjects, "facts": self.facts, "added": self.added,
                "facts_by_kind": dict(sorted(self.by_kind.items())),
                "resources": sum(self.resources.values()),
                "skipped_resources": dict(sorted(self.skipped.items())),
                "problems": dict(sorted(self.reasons.items()))}


Progress = Callable[[ClinicalSummary], None]


def import_clinical(archive: Archive, paths: Iterable[str | Path], project: str, *,
                    strict: bool = False, progress: Progress | None = None
                    ) -> ClinicalSummary:
    """Import FHIR R4 files and folders into ``project`` (see the module's docstring)."""
    archive.ensure_project(project)
    archive.admit(project)
    path_list = [Path(p) for p in paths]
    for path in path_list:
        if not path.exists():
            raise InvalidInputError(f"Nothing to import at {path}: no such file or folder.")
    summary = ClinicalSummary()
    reader = FhirReader(strict=strict)
    subjects: dict[str, str | None] = {}  # the reader's patient key -> subject ID
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        if batch:
            with archive.sessions.begin() as session:
                summary.added += repo.add_clinical_facts(session, batch)
            batch.clear()
        summary.resources = reader.resources
        summary.skipped = reader.skipped
        if progress is not None:
            progress(summary)

    for item in reader.read(path_list):
        if isinstance(item, PatientFact):
            subject = subjects.get(item.patient)
            if subject is None:
                continue  # a patient that could not be linked (counted once, as a problem)
            batch.append(_fact_row(archive, project, subject, item.fact))
            summary.facts += 1
            summary.by_kind[item.fact.kind.value] += 1
            if len(batch) >= BATCH:
                flush()
        elif isinstance(item, ClinicalRecord):
            if item.source_id not in subjects:
                summary.patients += 1
            subjects[item.source_id] = (subjects.get(item.source_id)
                                        or _subject(archive, project, item, summary))
        else:
            _problem(summary, item)
    flush()
    if summary.added:
        archive.optimize()
    return summary


def _problem(summary: ClinicalSummary, problem: FhirProblem) -> None:
    summary.reasons[problem.reason] += 1
    if len(summary.problems) < MAX_PROBLEMS:
        summary.problems.append(problem)


def _subject(archive: Archive, project: str, record: ClinicalRecord,
             summary: ClinicalSummary) -> str | None:
    preferred = record.preferred()
    if preferred is None:
        # Labelled without its resource ID: a source may use an identifier as the ID.
        _problem(summary, FhirProblem("a Patient resource", "no_identifier",
                                      "A Patient with no identifier imagebank can link (an "
                                      "NHS number, or a value with its system): its facts "
                                      "are not imported."))
        return None
    refs = sorted(record.identifiers, key=lambda r: (not r.is_nhs_number, r))
    with archive.sessions.begin() as session:
        found = repo.subjects_by_patient_ids(session, project, [r.value for r in refs])
        for ref in refs:
            for row in found:
                if row["patient_id"] == ref.value and (row["issuer_of_patient_id"] or "") in (
                        "", ref.issuer):
                    summary.linked += 1
                    return str(row["id"])
        subject_id = archive.ids.subject_id(project, preferred.value, preferred.issuer)
        created = repo.add_subjects(session, [_subject_row(project, subject_id, preferred,
                                                           record)])
    summary.new_subjects += len(created)
    if not created:
        summary.linked += 1  # made by a concurrent import, or an earlier one
    return subject_id


def _subject_row(project: str, subject_id: str, ref: PatientRef,
                 record: ClinicalRecord) -> dict[str, Any]:
    return {"id": subject_id, "project_id": project, "patient_id": ref.value,
            "issuer_of_patient_id": ref.issuer,
            "patient_birth_date": record.birth_date.replace("-", "") or None,
            "patient_sex": record.sex or None, "patient_name": None}


def _fact_row(archive: Archive, project: str, subject: str, fact: Fact) -> dict[str, Any]:
    detail: dict[str, Any] = {}
    if fact.other_codes:
        detail["other_codes"] = [list(c) for c in fact.other_codes]
    if fact.study_uids:
        detail["study_uids"] = list(fact.study_uids)
    if fact.accession_numbers:
        detail["accession_numbers"] = list(fact.accession_numbers)
    if fact.modalities:
        detail["modalities"] = list(fact.modalities)
    return {"id": archive.ids.fact_id(project, fact.source_id), "project_id": project,
            "subject_id": subject, "kind": fact.kind.value, "system": fact.system[:255],
            "code": fact.code[:255], "display": fact.display,
            "value_number": fact.value_number, "value_text": fact.value_text,
            "value_system": fact.value_system[:255], "unit": fact.unit[:64],
            "start": fact.start, "end": fact.end, "status": fact.status[:32],
            "detail": json.dumps(detail, separators=(",", ":"))}
