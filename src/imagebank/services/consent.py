"""Consent records and the National Data Opt-out, applied at every release (issue 6,
decision 0023).

* ``import_consents``: a CSV of consent decisions (granted, refused, withdrawn), each for one
  research project or all research. A file is taken whole or not at all: a governance list
  with a bad row is refused with every problem (by line, never a value), so a mistyped
  withdrawal is never silently dropped. Withdrawals and refusals flag the subjects the patient's
  data became in research projects (through the lineage recorded by each share) and, for all
  research, the site's own subjects; a later grant clears them. Every flag is audited.
* ``import_optout``: the list of opted-out NHS numbers as a dated version. Entries are stored
  as keyed hashes (``IdDeriver.person_key``), never as numbers.
* ``screen``: who a release leaves out, and why; the manifest records the list version and
  the consent state used (``Screen.manifest``).
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from imagebank.domain.clinical import PatientRef, is_valid_nhs_number, normalise_nhs_number
from imagebank.domain.consent import (
    DEFAULT_SCOPE,
    ConsentDecision,
    ConsentStatus,
    Exclusion,
    exclusion,
    holding,
    person_of,
)
from imagebank.domain.errors import InvalidInputError, NotFoundError
from imagebank.domain.policy import Policy
from imagebank.domain.pseudonyms import Pseudonymiser
from imagebank.index import consent as sql
from imagebank.index import repo
from imagebank.services.archive import RESEARCH, Archive

_OUT = (ConsentStatus.WITHDRAWN, ConsentStatus.REFUSED)
#: Problems listed in an error (the count is always complete).
MAX_PROBLEMS = 20
_COLUMNS = {"nhs_number", "patient_id", "issuer", "project", "scope", "status", "date",
            "source"}


class ListError(InvalidInputError):
    """A consent or opt-out file that cannot be taken: every problem, by line."""

    def __init__(self, what: str, problems: Sequence[str]) -> None:
        shown = list(problems[:MAX_PROBLEMS])
        more = len(problems) - len(shown)
        lines = "\n".join(f"  {p}" for p in shown) + (f"\n  ... and {more} more" if more else "")
        super().__init__(f"The {what} was not imported ({len(problems)} problem"
                         f"{'s' if len(problems) != 1 else ''}; nothing was changed):\n{lines}")
        self.problems = list(problems)


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise NotFoundError(f"There is no {what} at the path given.") from None
    except IsADirectoryError:
        raise InvalidInputError(f"The {what} must be a file, not a folder.") from None
    except UnicodeDecodeError:
        raise InvalidInputError(f"The {what} is not UTF-8 text.") from None


def _iso_date(text: str) -> str | None:
    try:
        return date.fromisoformat(text.strip()).isoformat()
    except ValueError:
        return None


# -- consent records ----------------------------------------------------------------------------
@dataclass
class ConsentImport:
    records: int = 0
    added: int = 0
    people: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    #: Subjects flagged as withdrawn by this import (research subjects, site subjects), and
    #: flags a later grant cleared.
    flagged_research: int = 0
    flagged_site: int = 0
    cleared: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"records": self.records, "added": self.added, "people": self.people,
                "by_status": dict(sorted(self.by_status.items())),
                "flagged_research_subjects": self.flagged_research,
                "flagged_site_subjects": self.flagged_site, "cleared": self.cleared}


@dataclass(frozen=True, slots=True)
class _Row:
    ref: PatientRef
    decision: ConsentDecision
    source: str


def _consent_rows(text: str, research: set[str]) -> list[_Row]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    problems: list[str] = []
    if not header:
        raise ListError("consent file", ["line 1: no header; expected the columns status, "
                                         "date and nhs_number or patient_id"])
    unknown = sorted(set(header) - _COLUMNS)
    if unknown:
        problems.append(f"line 1: unknown column {unknown[0]!r}; expected "
                        + ", ".join(sorted(_COLUMNS)))
    missing = [c for c in ("status", "date") if c not in header]
    if "nhs_number" not in header and "patient_id" not in header:
        missing.append("nhs_number or patient_id")
    if missing:
        problems.append(f"line 1: missing column {', '.join(missing)}")
    if problems:
        raise ListError("consent file", problems)
    reader.fieldnames = header
    rows: list[_Row] = []
    statuses = ", ".join(s.value for s in ConsentStatus)
    for raw in reader:
        line = reader.line_num
        row = {k: (v or "").strip() for k, v in raw.items() if k is not None}
        nhs, local, issuer = row.get("nhs_number", ""), row.get("patient_id", ""), row.get(
            "issuer", "")
        ref: PatientRef | None = None
        if nhs:
            if is_valid_nhs_number(nhs):
                ref = PatientRef.nhs_number(nhs)
            else:
                problems.append(f"line {line}: nhs_number is not a valid NHS number")
        elif local:
            ref = person_of(local, issuer)
        else:
            problems.append(f"line {line}: no nhs_number or patient_id")
        status = row.get("status", "").lower()
        if status not in {s.value for s in ConsentStatus}:
            problems.append(f"line {line}: status must be one of {statuses}")
        decided = _iso_date(row.get("date", ""))
        if decided is None:
            problems.append(f"line {line}: date must be a date, YYYY-MM-DD")
        target = row.get("project", "")
        if target and target not in research:
            problems.append(f"line {line}: project must be a research project of this "
                            "archive, or empty for all research")
        scope = row.get("scope", "") or DEFAULT_SCOPE
        if len(scope) > 64 or len(row.get("source", "")) > 200:
            problems.append(f"line {line}: scope (64) or source (200 characters) too long")
        if ref is not None and decided is not None and status in {s.value for s in
                                                                  ConsentStatus}:
            rows.append(_Row(ref, ConsentDecision(ConsentStatus(status), decided, target,
                                                  scope), row.get("source", "")))
    if problems:
        raise ListError("consent file", problems)
    return rows


def import_consents(archive: Archive, path: str | Path, *, actor: str = "system",
                    via: str = "cli") -> ConsentImport:
    """Import a consent CSV (see the module's docstring and README's "Consent")."""
    return import_consent_text(archive, _read_text(Path(path), "consent file"), actor=actor,
                               via=via)


def import_consent_text(archive: Archive, text: str, *, actor: str = "system",
                        via: str = "cli") -> ConsentImport:
    """``import_consents`` of a CSV's text (an upload)."""
    with archive.sessions.begin() as session:
        research = {str(p["id"]) for p in repo.list_projects(session)
                    if p["zone"] == RESEARCH}
    rows = _consent_rows(text, research)
    result = ConsentImport(records=len(rows))
    keys: dict[str, PatientRef] = {}
    records = []
    for row in rows:
        key = archive.ids.person_key(row.ref.issuer, row.ref.value)
        keys[key] = row.ref
        d = row.decision
        result.by_status[d.status.value] += 1
        records.append({
            "id": archive.ids.consent_id(key, d.target, d.scope, d.status.value,
                                         d.decided_on, row.source),
            "person_key": key, "target_project": d.target, "scope": d.scope,
            "status": d.status.value, "decided_on": d.decided_on, "source": row.source})
    result.people = len(keys)
    with archive.sessions.begin() as session:
        result.added = sql.add_consents(session, records)
    _reflag(archive, keys, result, actor, via)
    return result


def _reflag(archive: Archive, keys: dict[str, PatientRef], result: ConsentImport,
            actor: str, via: str) -> None:
    """Bring the withdrawal flags of these people's subjects in line with their consent."""
    at = datetime.now(UTC)
    events: list[tuple[str, str | None, str | None, str | None]] = []
    with archive.sessions.begin() as session:
        decisions = _decisions(sql.consents_for(session, list(keys)))
        values = sorted({ref.value for ref in keys.values()})
        site = [s for s in sql.site_subjects_by_patient_ids(session, values)
                if archive.ids.person_key(*_ref_of(s)) in keys]
        person_of_subject = {str(s["id"]): archive.ids.person_key(*_ref_of(s)) for s in site}
        project_of = {str(s["id"]): str(s["project_id"]) for s in site}
        flag: list[tuple[str, str]] = []  # (project, subject)
        clear: list[tuple[str, str]] = []
        for subject_id, key in person_of_subject.items():
            general = holding(decisions.get(key, []), "")
            out = general is not None and general.status in _OUT
            (flag if out else clear).append((project_of[subject_id], subject_id))
        released = sql.released_subjects(session, list(person_of_subject))
        site_flags = len(flag)
        for r in released:
            key = person_of_subject[str(r["source_subject_id"])]
            held = holding(decisions.get(key, []), str(r["target_project"]))
            out = held is not None and held.status in _OUT
            (flag if out else clear).append((str(r["target_project"]), str(r["subject_id"])))
        for n, (project_id, subject_id) in enumerate(flag):
            if sql.set_withdrawn(session, [subject_id], at):
                if n < site_flags:
                    result.flagged_site += 1
                else:
                    result.flagged_research += 1
                events.append(("consent_withdrawal_flag", project_id, "subject", subject_id))
        for project_id, subject_id in clear:
            if sql.set_withdrawn(session, [subject_id], None):
                result.cleared += 1
                events.append(("consent_withdrawal_cleared", project_id, "subject", subject_id))
    _audit(archive, actor, via, [("consent_import", None, None, None)], result.records)
    _audit(archive, actor, via, events)


def _ref_of(subject: dict[str, Any]) -> tuple[str, str]:
    ref = person_of(str(subject["patient_id"] or ""), str(subject["issuer_of_patient_id"] or ""))
    return ref.issuer, ref.value


def _decisions(rows: Iterable[dict[str, Any]]) -> dict[str, list[ConsentDecision]]:
    found: dict[str, list[ConsentDecision]] = {}
    for r in rows:
        found.setdefault(str(r["person_key"]), []).append(ConsentDecision(
            ConsentStatus(r["status"]), str(r["decided_on"]), str(r["target_project"]),
            str(r["scope"])))
    return found


def _audit(archive: Archive, actor: str, via: str,
           events: Sequence[tuple[str, str | None, str | None, str | None]],
           count: int | None = None) -> None:
    """Audit what was done: (action, project, level, object ID) each, in one append."""
    from imagebank.services.audit import AuditLog, make_event

    if events:
        AuditLog(archive.sessions, archive.settings).write([make_event(
            actor=actor, via=via, method=via.upper(), route=f"{via} {action}", action=action,
            project_id=project, level=level, object_id=object_id, status=0, outcome="ok",
            detail=None if count is None else f"{count} entries")
            for action, project, level, object_id in events])


# -- the national data opt-out --------------------------------------------------------------------
def import_optout(archive: Archive, path: str | Path, *, list_date: date | None = None,
                  actor: str = "system", via: str = "cli") -> dict[str, Any]:
    """Import a list of opted-out NHS numbers (one per line, or a CSV with an nhs_number
    column; ``#`` comments and blank lines ignored) as the version of ``list_date`` (today
    by default). The same list and date again is the same version."""
    return import_optout_text(archive, _read_text(Path(path), "opt-out list"),
                              list_date=list_date, actor=actor, via=via)


def import_optout_text(archive: Archive, text: str, *, list_date: date | None = None,
                       actor: str = "system", via: str = "cli") -> dict[str, Any]:
    """``import_optout`` of a list's text (an upload)."""
    numbers, problems = _optout_numbers(text)
    if problems:
        raise ListError("opt-out list", problems)
    when = (list_date or datetime.now(UTC).date()).isoformat()
    digest = hashlib.sha256("\n".join(sorted(numbers)).encode()).hexdigest()
    version = hashlib.sha256(f"{when}\n{digest}".encode()).hexdigest()[:32]
    keys = sorted({archive.ids.person_key("NHS", n) for n in numbers})
    with archive.sessions.begin() as session:
        added = sql.add_optout_list(
            session, {"id": version, "list_date": when, "entries": len(keys), "sha256": digest},
            keys)
    _audit(archive, actor, via, [("optout_import", None, "optout_list", version)], len(keys))
    return {"version": version, "list_date": when, "entries": len(keys), "sha256": digest,
            "new": added}


def _optout_numbers(text: str) -> tuple[set[str], list[str]]:
    lines = text.splitlines()
    column: int | None = None
    start = 0
    first = next((i for i, line in enumerate(lines) if line.strip()
                  and not line.lstrip().startswith("#")), None)
    if first is not None and not any(c.isdigit() for c in lines[first]):
        header = [h.strip().lower() for h in next(csv.reader([lines[first]]))]
        if "nhs_number" not in header:
            return set(), [f"line {first + 1}: a header without an nhs_number column"]
        column, start = header.index("nhs_number"), first + 1
    numbers: set[str] = set()
    problems: list[str] = []
    for number, line in enumerate(lines[start:], start + 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        value = next(csv.reader([line]))[column] if column is not None else line
        value = normalise_nhs_number(value.strip())
        if not is_valid_nhs_number(value):
            problems.append(f"line {number}: not a valid NHS number")
        else:
            numbers.add(value)
    return numbers, problems


def optout_versions(archive: Archive) -> list[dict[str, Any]]:
    """Every imported version; the first is the one releases use."""
    with archive.sessions.begin() as session:
        return sql.optout_lists(session)


# -- at a release ------------------------------------------------------------------------------
@dataclass
class Screen:
    """Who a release leaves out, and the state it was decided on (for the manifest)."""

    opt_out_applies: bool
    optout_list: dict[str, Any] | None
    excluded: dict[str, Exclusion] = field(default_factory=dict)
    subjects: int = 0
    consent_records: int = 0

    def manifest(self) -> dict[str, Any]:
        lst = self.optout_list
        return {
            "national_data_opt_out": {
                "applies": self.opt_out_applies,
                "list": None if lst is None else {
                    "version": lst["id"], "list_date": lst["list_date"],
                    "entries": lst["entries"], "sha256": lst["sha256"]}},
            "consent_records_consulted": self.consent_records,
            "subjects_considered": self.subjects,
            "excluded": dict(sorted(Counter(e.value for e in self.excluded.values()).items())),
        }


def require_optout_list(archive: Archive, policy: Policy | None) -> None:
    """Refuse a release from a site's archive where the opt-out applies (the policy says so,
    or there is no policy) and no list has been imported."""
    if policy is not None and not policy.national_data_opt_out:
        return
    with archive.sessions.begin() as session:
        if not sql.optout_lists(session):
            raise InvalidInputError(
                "The National Data Opt-out applies to this release (the policy says so, or "
                "there is no policy) and no opt-out list has been imported: import the "
                "current list with `imagebank optout import FILE --date YYYY-MM-DD`.")


def screen(archive: Archive, source: str, target: str, policy: Policy | None) -> Screen:
    """Who of ``source``'s subjects a release to ``target`` (a research project, or "" for an
    export) leaves out. The opt-out applies unless a policy says it does not; where it
    applies, a list must have been imported."""
    applies = policy is None or policy.national_data_opt_out
    research_source = archive.zone_of(source) == RESEARCH
    if not research_source:
        require_optout_list(archive, policy)
    with archive.sessions.begin() as session:
        versions = sql.optout_lists(session)
        current = versions[0] if versions else None
        subjects = sql.project_subjects(session, source)
        result = Screen(applies, current, subjects=len(subjects))
        people = subjects
        if research_source:  # its subjects' people, through the lineage of its shares
            lineage = sql.lineage_of(session, source)
            origin = {str(s["id"]): lineage.get(str(s["patient_id"] or "")) for s in subjects}
            sources = {r["id"]: r for r in sql.subjects_by_ids(
                session, [o for o in origin.values() if o])}
            people = [{**sources[o], "id": sid} for sid, o in origin.items()
                      if o and o in sources]
        keys = {str(p["id"]): archive.ids.person_key(*_ref_of(p)) for p in people}
        rows = sql.consents_for(session, sorted(set(keys.values())))
        result.consent_records = len(rows)
        decisions = _decisions(rows)
        out = (sql.opted_out(session, str(current["id"]), sorted(set(keys.values())))
               if current is not None and applies else set())
    for subject_id, key in keys.items():
        why = exclusion(holding(decisions.get(key, []), target), key in out, applies)
        if why is not None:
            result.excluded[subject_id] = why
    if research_source:  # a flagged subject stays out (a later grant clears its flag)
        for s in subjects:
            if s["withdrawn_at"] is not None:
                result.excluded.setdefault(str(s["id"]), Exclusion.WITHDRAWN)
    return result


def excluded_study_ids(archive: Archive, result: Screen) -> set[str]:
    with archive.sessions.begin() as session:
        return sql.study_ids_of_subjects(session, sorted(result.excluded))


def record_share(archive: Archive, source: str, target: str, key: bytes, job_id: str,
                 excluded: Iterable[str] = ()) -> int:
    """Record which site subject each research subject of a share came from (its PatientID
    is the keyed pseudonym of the site subject's, as the engine writes it)."""
    pseudonyms = Pseudonymiser(key)
    skip = set(excluded)
    with archive.sessions.begin() as session:
        rows = [{"target_project": target, "source_subject_id": str(s["id"]),
                 "pseudonym": pseudonyms.patient_id(str(s["patient_id"] or ""),
                                                    str(s["issuer_of_patient_id"] or "")),
                 "job_id": job_id}
                for s in sql.project_subjects(session, source) if str(s["id"]) not in skip]
        sql.record_lineage(session, rows)
    return len(rows)
