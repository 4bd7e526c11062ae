"""Clinical data into a site's archive (``imagebank clinical import``, issue 6).

FHIR R4 bundles and bulk NDJSON are read by ``ingest.fhir`` (patients first, facts streamed),
CSV and Parquet tables through a mapping file by ``ingest.tabular`` (decision 0024), and
written to the index in batches: each fact once (its ID derives from the project and the
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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.orm import Session

from imagebank.domain.clinical import ClinicalRecord, Fact, PatientRef
from imagebank.domain.clinical_mapping import TableMapping
from imagebank.domain.errors import InvalidInputError
from imagebank.index import repo
from imagebank.ingest.clinical_items import ClinicalItem, ImportProblem, PatientFact
from imagebank.ingest.fhir import FhirProblem, FhirReader
from imagebank.ingest.tabular import TabularReader
from imagebank.services.archive import Archive

#: Facts (or new patients) written per transaction: 20,000 is 5 % faster than 5,000 (fewer
#: commits, fewer rewrites of the same index pages; decision 0025) and holds ~10 MB.
BATCH = 20_000
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
    problems: list[ImportProblem] = field(default_factory=list)
    #: ImagingStudy facts linked to a DICOM study of the project, by StudyInstanceUID (the
    #: study there now, or to come) or accession number.
    study_links: int = 0

    @property
    def ok(self) -> bool:
        return not self.reasons

    def as_dict(self) -> dict[str, Any]:
        return {"patients": self.patients, "linked": self.linked,
                "new_subjects": self.new_subjects, "facts": self.facts, "added": self.added,
                "facts_by_kind": dict(sorted(self.by_kind.items())),
                "resources": sum(self.resources.values()),
                "skipped_resources": dict(sorted(self.skipped.items())),
                "study_links": self.study_links,
                "problems": dict(sorted(self.reasons.items()))}


Progress = Callable[[ClinicalSummary], None]


def import_clinical(archive: Archive, paths: Iterable[str | Path], project: str, *,
                    strict: bool = False, mapping: Path | TableMapping | None = None,
                    progress: Progress | None = None) -> ClinicalSummary:
    """Import FHIR R4 files and folders into ``project`` (see the module's docstring), or
    with a ``mapping`` (a file, or one loaded) CSV and Parquet tables (decision 0024)."""
    return import_with(archive, clinical_reader(strict=strict, mapping=mapping), paths,
                       project, progress=progress)


class ClinicalReader(Protocol):
    """A reader of clinical inputs: ``ingest.fhir.FhirReader``, ``ingest.tabular.TabularReader``.
    ``resources`` counts what was read (resources by type, or rows), ``skipped`` what was
    not."""

    resources: Counter[str]
    skipped: Counter[str]

    def read(self, paths: Iterable[str | Path]) -> Iterator[ClinicalItem]: ...


def clinical_reader(*, strict: bool = False, mapping: Path | TableMapping | None = None
                    ) -> ClinicalReader:
    """The FHIR reader, or the table reader with a mapping (``MappingError`` if its file is
    not valid)."""
    if mapping is None:
        return FhirReader(strict=strict)
    if strict:
        raise InvalidInputError("--strict validates FHIR resources; it does not apply to "
                                "tables read with a mapping.")
    if not isinstance(mapping, TableMapping):
        from imagebank.services.clinical_mapping import load_mapping

        mapping = load_mapping(mapping)
    return TabularReader(mapping)


def import_with(archive: Archive, reader: ClinicalReader, paths: Iterable[str | Path],
                project: str, *, progress: Progress | None = None) -> ClinicalSummary:
    """Import what ``reader`` reads from ``paths`` into ``project``: the loop every clinical
    input shares (records linked to subjects, facts written in batches of ``BATCH``)."""
    archive.ensure_project(project)
    archive.admit(project)
    path_list = [Path(p) for p in paths]
    for path in path_list:
        if not path.exists():
            raise InvalidInputError(f"Nothing to import at {path}: no such file or folder.")
    summary = ClinicalSummary()
    writer = _Writer(archive, project, summary)

    def flush() -> None:
        writer.flush()
        summary.resources = reader.resources
        summary.skipped = reader.skipped
        if progress is not None:
            progress(summary)

    for item in reader.read(path_list):
        if isinstance(item, PatientFact):
            if writer.fact(item.patient, item.fact) >= BATCH:
                flush()
        elif isinstance(item, ClinicalRecord):
            if writer.record(item) >= BATCH:
                flush()
        else:
            _problem(summary, item)
    flush()
    if summary.added:
        archive.optimize()
    return summary


def _problem(summary: ClinicalSummary, problem: ImportProblem) -> None:
    summary.reasons[problem.reason] += 1
    if len(summary.problems) < MAX_PROBLEMS:
        summary.problems.append(problem)


class _Writer:
    """Writes what a reader yields, a batch a transaction: the records read since the last
    batch linked to subjects (one lookup of all their identifiers, one insert of the new
    subjects), then the facts. A reader yields a patient's record before its facts, so a
    fact is written in its record's batch or a later one.

    ``linkable``: whether a patient's record had an identifier, so its facts are kept (the
    first such record links it, decision 0021), or not (its facts are skipped until the
    patient is read again with one). ``subjects``: the subject each linked patient joined.
    """

    def __init__(self, archive: Archive, project: str, summary: ClinicalSummary) -> None:
        self.archive = archive
        self.project = project
        self.summary = summary
        self.linkable: dict[str, bool] = {}  # the reader's patient key -> has an identifier
        self.subjects: dict[str, str] = {}  # the reader's patient key -> subject ID
        self.waiting: dict[str, ClinicalRecord] = {}
        self.facts: list[tuple[str, Fact]] = []

    def record(self, record: ClinicalRecord) -> int:
        """Take a patient's record; how many records wait to be linked."""
        key = record.source_id
        known = self.linkable.get(key)
        if known:
            return len(self.waiting)  # linked by the first record read with an identifier
        if known is None:
            self.summary.patients += 1
        if record.preferred() is None:
            self.linkable[key] = False
            # Labelled without its resource ID: a source may use an identifier as the ID.
            _problem(self.summary, FhirProblem(
                "a Patient resource", "no_identifier",
                "A Patient with no identifier imagebank can link (an NHS number, or a value "
                "with its system): its facts are not imported."))
        else:
            self.linkable[key] = True
            self.waiting[key] = record
        return len(self.waiting)

    def fact(self, patient: str, fact: Fact) -> int:
        """Take a fact about ``patient``; how many facts wait to be written."""
        if self.linkable.get(patient):
            self.facts.append((patient, fact))
            self.summary.facts += 1
            self.summary.by_kind[fact.kind.value] += 1
        # else: a patient that could not be linked (counted once, as a problem)
        return len(self.facts)

    def flush(self) -> None:
        """Write what was read, in one transaction."""
        if not self.waiting and not self.facts:
            return
        with self.archive.sessions.begin() as session:
            if self.waiting:
                self._link(session, list(self.waiting.values()))
            if self.facts:
                subjects, archive, project = self.subjects, self.archive, self.project
                rows = [_fact_row(archive, project, subjects[patient], fact)
                        for patient, fact in self.facts]
                self.summary.added += repo.add_clinical_facts(session, rows)
                self._link_studies(session, [(row["id"], row["subject_id"], fact)
                                             for row, (_p, fact) in zip(rows, self.facts,
                                                                        strict=True)
                                             if fact.study_uids or fact.accession_numbers])
        self.waiting.clear()
        self.facts.clear()

    def _link_studies(self, session: Session, facts: list[tuple[str, str, Fact]]) -> None:
        """Link ImagingStudy facts to the project's DICOM studies (decision 0021): by
        StudyInstanceUID, whose study ID is derived, so the link holds before the images
        arrive; else by accession number, to a study already there. A study of another
        patient is never linked: that is a problem (the source or the images are wrong)."""
        if not facts:
            return
        ids = self.archive.ids
        uid_ids = {uid: ids.study_id(self.project, uid) for _f, _s, fact in facts
                   for uid in fact.study_uids}
        numbers = sorted({n for _f, _s, fact in facts for n in fact.accession_numbers})
        present, by_number = repo.study_subjects(session, self.project,
                                                 sorted(set(uid_ids.values())), numbers)
        links = []
        for fact_id, subject, fact in facts:
            candidates = [(uid_ids[uid], present.get(uid_ids[uid]), "uid")
                          for uid in fact.study_uids]
            candidates += [(study, owner, "accession") for number in fact.accession_numbers
                           for study, owner in by_number.get(number, ())]
            # A study there now first; else the one its UID names, still to come.
            mine = sorted((c for c in candidates if c[1] in (None, subject)),
                          key=lambda c: c[1] is None)
            if any(owner not in (None, subject) for _s, owner, _m in candidates):
                _problem(self.summary, ImportProblem(
                    "an ImagingStudy resource", "study_of_another_patient",
                    "An ImagingStudy names a DICOM study of another patient in this project "
                    "(by StudyInstanceUID or accession number): not linked."))
                continue
            if mine:
                study, _owner, how = mine[0]
                links.append({"fact_id": fact_id, "project_id": self.project,
                              "study_id": study, "matched_by": how})
        repo.add_study_links(session, links)
        self.summary.study_links += len(links)

    def _link(self, session: Session, records: list[ClinicalRecord]) -> None:
        values = {ref.value for record in records for ref in record.identifiers}
        known: dict[str, list[tuple[str, str]]] = {}  # PatientID -> [(issuer, subject ID)]
        for row in repo.subjects_by_patient_ids(session, self.project, list(values)):
            known.setdefault(row["patient_id"], []).append(
                (row["issuer_of_patient_id"] or "", str(row["id"])))
        new: dict[str, dict[str, Any]] = {}
        for record in records:
            subject = _known_subject(record, known)
            if subject is None:
                preferred = record.preferred()
                assert preferred is not None  # records without one are not linked
                subject = self.archive.ids.subject_id(self.project, preferred.value,
                                                      preferred.issuer)
                new[subject] = _subject_row(self.project, subject, preferred, record)
                # A later record of the batch with this identifier joins it.
                known.setdefault(preferred.value, []).append((preferred.issuer, subject))
            else:
                self.summary.linked += 1
            self.subjects[record.source_id] = subject
        if new:
            created = repo.add_subjects(session, list(new.values()))
            self.summary.new_subjects += len(created)
            # Made by a concurrent import, or an earlier one.
            self.summary.linked += len(new) - len(created)


def _known_subject(record: ClinicalRecord, known: dict[str, list[tuple[str, str]]]
                   ) -> str | None:
    """The subject a record joins: one whose PatientID is an identifier of the record, with
    the same issuer or none, the NHS number first (decision 0021)."""
    for ref in sorted(record.identifiers, key=lambda r: (not r.is_nhs_number, r)):
        for issuer, subject in known.get(ref.value, ()):
            if issuer in ("", ref.issuer):
                return subject
    return None


def _subject_row(project: str, subject_id: str, ref: PatientRef,
                 record: ClinicalRecord) -> dict[str, Any]:
    return {"id": subject_id, "project_id": project, "patient_id": ref.value,
            "issuer_of_patient_id": ref.issuer,
            "patient_birth_date": record.birth_date.replace("-", "") or None,
            "patient_sex": record.sex or None, "patient_name": None}


def _fact_row(archive: Archive, project: str, subject: str, fact: Fact) -> dict[str, Any]:
    return {"id": archive.ids.fact_id(project, fact.source_id), "project_id": project,
            "subject_id": subject, "kind": fact.kind.value, "system": fact.system[:255],
            "code": fact.code[:255], "display": fact.display,
            "value_number": fact.value_number, "value_text": fact.value_text,
            "value_system": fact.value_system[:255], "unit": fact.unit[:64],
            "start": fact.start, "end": fact.end, "status": fact.status[:32],
            "detail": _detail(fact)}


def _detail(fact: Fact) -> str:
    """The fact's ``detail`` JSON: other codes and study links (most facts have none)."""
    if not (fact.other_codes or fact.study_uids or fact.accession_numbers or fact.modalities):
        return "{}"
    detail: dict[str, Any] = {}
    if fact.other_codes:
        detail["other_codes"] = [list(c) for c in fact.other_codes]
    if fact.study_uids:
        detail["study_uids"] = list(fact.study_uids)
    if fact.accession_numbers:
        detail["accession_numbers"] = list(fact.accession_numbers)
    if fact.modalities:
        detail["modalities"] = list(fact.modalities)
    return json.dumps(detail, separators=(",", ":"))


def subject_facts(archive: Archive, subject_id: str) -> list[dict[str, Any]]:
    """A subject's clinical facts, earliest first (the web UI's subject page): ``kind``,
    ``code`` (``SYSTEM:CODE``), ``display``, ``start`` (aware, UTC; None when unknown),
    ``value`` (a number with its unit, a coded result as ``SYSTEM:CODE``, or text), ``status``
    and ``study_uid`` (an ImagingStudy's linked study). Read as a release reads them
    (``repo.release_facts``); the caller has checked the subject is in its project."""
    with archive.sessions.begin() as session:
        rows = repo.release_facts(session, [subject_id])
    facts = []
    for (_subject, kind, system, code, display, number, text, value_system, unit, start,
         _end, status, study_uid) in rows:
        if number is not None:
            value = f"{number:g} {unit}".strip() if unit else f"{number:g}"
        elif text and value_system:
            value = f"{value_system}:{text}"
        else:
            value = text or ""
        facts.append({"kind": kind, "code": f"{system}:{code}" if system else code,
                      "display": display or "", "start": repo.aware(start), "value": value,
                      "status": status or "", "study_uid": study_uid})
    return facts
