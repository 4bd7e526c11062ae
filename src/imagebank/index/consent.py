"""Consent records, opt-out lists, release lineage and withdrawal flags in the index
(issue 6, decision 0023). People are named by keyed hashes (``IdDeriver.person_key``) only."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, insert, select, union, update
from sqlalchemy.orm import Session

from imagebank.index.repo import _chunks, _insert, _insert_new, now
from imagebank.index.tables import (
    Consent,
    OptOutEntry,
    OptOutList,
    Project,
    ReleaseSubject,
    Study,
    Subject,
)


def add_consents(session: Session, rows: Sequence[dict[str, Any]]) -> int:
    """Insert consent records not there yet (by ID); how many were new."""
    return len(_insert_new(session, Consent, rows, {"imported_at": now()}))


def consents_for(session: Session, person_keys: Sequence[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for chunk in _chunks(list(person_keys)):
        stmt = select(Consent.person_key, Consent.target_project, Consent.scope,
                      Consent.status, Consent.decided_on).where(Consent.person_key.in_(chunk))
        rows.extend(dict(r._mapping) for r in session.execute(stmt))
    return rows


def consent_count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Consent)) or 0)


def add_optout_list(session: Session, row: dict[str, Any], person_keys: Sequence[str]) -> bool:
    """Store a list version with its entries; False if that version is already stored."""
    if not _insert_new(session, OptOutList, [row], {"imported_at": now()}):
        return False
    entries = [{"list_id": row["id"], "person_key": key} for key in person_keys]
    for chunk in _chunks(entries, 5000):
        session.execute(insert(OptOutEntry), list(chunk))
    return True


def optout_lists(session: Session) -> list[dict[str, Any]]:
    """Every version, the one that applies (newest list date, then import) first."""
    stmt = select(OptOutList).order_by(OptOutList.list_date.desc(),
                                       OptOutList.imported_at.desc())
    return [{"id": r.id, "list_date": r.list_date, "entries": r.entries, "sha256": r.sha256,
             "imported_at": r.imported_at} for r in session.scalars(stmt)]


def opted_out(session: Session, list_id: str, person_keys: Sequence[str]) -> set[str]:
    """Which of ``person_keys`` are on the list."""
    found: set[str] = set()
    for chunk in _chunks(list(person_keys)):
        found.update(session.scalars(select(OptOutEntry.person_key).where(
            OptOutEntry.list_id == list_id, OptOutEntry.person_key.in_(chunk))))
    return found


def site_subjects_by_patient_ids(session: Session, patient_ids: Sequence[str]
                                 ) -> list[dict[str, Any]]:
    """Subjects of every identifiable project whose PatientID is one of ``patient_ids``."""
    rows: list[dict[str, Any]] = []
    for chunk in _chunks(list(patient_ids)):
        stmt = (select(Subject.id, Subject.project_id, Subject.patient_id,
                       Subject.issuer_of_patient_id)
                .join(Project, Project.id == Subject.project_id)
                .where(Project.zone == "identifiable", Subject.patient_id.in_(chunk)))
        rows.extend(dict(r._mapping) for r in session.execute(stmt))
    return rows


def project_subjects(session: Session, project_id: str) -> list[dict[str, Any]]:
    stmt = select(Subject.id, Subject.patient_id, Subject.issuer_of_patient_id,
                  Subject.withdrawn_at).where(Subject.project_id == project_id)
    return [dict(r._mapping) for r in session.execute(stmt)]


def study_ids_of_subjects(session: Session, subject_ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(list(subject_ids)):
        found.update(session.scalars(select(Study.id).where(Study.subject_id.in_(chunk))))
    return found


def set_withdrawn(session: Session, subject_ids: Sequence[str], at: datetime | None) -> int:
    """Flag (``at``) or clear (None) subjects; how many changed."""
    changed = 0
    for chunk in _chunks(list(subject_ids)):
        condition = Subject.withdrawn_at.is_(None) if at is not None else (
            Subject.withdrawn_at.is_not(None))
        stmt = (update(Subject).where(Subject.id.in_(chunk), condition)
                .values(withdrawn_at=at).returning(Subject.id))
        changed += len(session.scalars(stmt).all())
    return changed


def record_lineage(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Which site subject each research subject of a share came from (kept if known)."""
    if rows:
        full = [{"created_at": now(), **row} for row in rows]

        stmt = _insert(session, ReleaseSubject).on_conflict_do_nothing()
        for chunk in _chunks(full):
            session.execute(stmt, list(chunk))


def released_subjects(session: Session, source_subject_ids: Sequence[str]
                      ) -> list[dict[str, Any]]:
    """The research subjects the given site subjects became: (source, target, subject ID)."""
    rows: list[dict[str, Any]] = []
    for chunk in _chunks(list(source_subject_ids)):
        stmt = (select(ReleaseSubject.source_subject_id, ReleaseSubject.target_project,
                       Subject.id.label("subject_id"))
                .join(Subject, (Subject.project_id == ReleaseSubject.target_project)
                      & (Subject.patient_id == ReleaseSubject.pseudonym))
                .where(ReleaseSubject.source_subject_id.in_(chunk)))
        rows.extend(dict(r._mapping) for r in session.execute(stmt))
    return rows


def lineage_of(session: Session, target_project: str) -> dict[str, str]:
    """A research project's subjects (by pseudonym) -> the site subject they came from."""
    stmt = select(ReleaseSubject.pseudonym, ReleaseSubject.source_subject_id).where(
        ReleaseSubject.target_project == target_project)
    return {str(p): str(s) for p, s in session.execute(stmt)}


def subjects_by_ids(session: Session, subject_ids: Sequence[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for chunk in _chunks(list(subject_ids)):
        stmt = select(Subject.id, Subject.patient_id, Subject.issuer_of_patient_id,
                      Subject.withdrawn_at).where(Subject.id.in_(chunk))
        rows.extend(dict(r._mapping) for r in session.execute(stmt))
    return rows


def withdrawn_subjects(project_id: str, also: Select[Any] | None = None) -> Select[Any]:
    """A SELECT of the project's subjects flagged withdrawn (and of ``also``'s subject IDs):
    what every cohort leaves out."""
    flagged = select(Subject.id).where(Subject.project_id == project_id,
                                       Subject.withdrawn_at.is_not(None))
    return flagged if also is None else select(union(flagged, also).subquery().c[0])
