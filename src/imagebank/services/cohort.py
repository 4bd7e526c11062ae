"""Cohort search (issue 6, decision 0022): one query over a project's imaging and clinical
data, answered as counts of people, studies and series, and, inside the site, their IDs.

* The query is parsed (``domain.cohort``), compiled for the project and run by
  ``index.cohort`` in the caller's read transaction: counts in one statement, IDs in three
  more, and only when they may be shown.
* **What may be shown**: exact counts and IDs only from a site's own (identifiable) project,
  to those allowed them (``exact=True``). Otherwise every count goes through the policy's
  small-number suppression and rounding (``domain.policy.shown_count``), and no ID leaves: a
  research project's own policy always; a site project's policy as the caller passes it,
  else ``smallest_count`` 10 and no rounding.
* Subjects flagged withdrawn (decision 0023) are kept out of every result, with any further
  ``exclude`` (a SELECT of subject IDs): they are taken away before anything is counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select

from imagebank.domain.access import Principal, Role
from imagebank.domain.cohort import parse
from imagebank.domain.errors import PermissionDeniedError
from imagebank.domain.policy import Policy, Retention, shown_count
from imagebank.index.cohort import (
    compile_query,
    count_cohort,
    list_cohort_subjects,
    run_cohort,
)
from imagebank.index.consent import withdrawn_subjects
from imagebank.services.archive import IDENTIFIABLE, RESEARCH, Archive

#: Without a policy: the smallest count shown outside the site (DESIGN.md), no rounding.
DEFAULT_POLICY = Policy(smallest_count=10, national_data_opt_out=True,
                        retention=Retention(project_end=True))
#: IDs listed at most, per level.
MAX_LIMIT = 10_000


@dataclass(frozen=True)
class ShownCount:
    """A count as it may be shown: ``value`` None when suppressed; ``text`` for people."""

    value: int | None
    text: str

    @classmethod
    def of(cls, shown: int | str) -> ShownCount:
        return cls(shown, str(shown)) if isinstance(shown, int) else cls(None, shown)

    @property
    def suppressed(self) -> bool:
        return self.value is None


@dataclass(frozen=True)
class CohortResult:
    """What a search may show: counts (exact, or suppressed and rounded) and, when exact,
    up to ``limit`` subject IDs (pseudonymous internal IDs, never PatientID or name), studies
    (ID, subject, StudyInstanceUID, date, modalities) and series (ID, study,
    SeriesInstanceUID, modality)."""

    project: str
    #: The query as normalised text (``Query.describe``).
    query: str
    exact: bool
    people: ShownCount
    studies: ShownCount
    series: ShownCount
    smallest_count: int | None = None
    rounding: int | None = None
    subject_ids: list[str] = field(default_factory=list)
    study_rows: list[dict[str, Any]] = field(default_factory=list)
    series_rows: list[dict[str, Any]] = field(default_factory=list)
    #: Whether any list stops at the limit before the end.
    truncated: bool = False

    def as_dict(self) -> dict[str, Any]:
        counts = {name: {"count": c.value, "shown": c.text, "suppressed": c.suppressed}
                  for name, c in (("people", self.people), ("studies", self.studies),
                                  ("series", self.series))}
        out: dict[str, Any] = {"project": self.project, "query": self.query,
                               "exact": self.exact, "counts": counts}
        # The same keys either way; what is not shown is null.
        out.update(smallest_count=self.smallest_count, rounding=self.rounding)
        out.update(subjects=self.subject_ids if self.exact else None,
                   studies=self.study_rows if self.exact else None,
                   series=self.series_rows if self.exact else None,
                   truncated=self.truncated if self.exact else None)
        return out

    def audit_detail(self) -> dict[str, Any]:
        """What the audit trail records of a search: the query and the counts as shown."""
        return {"query": self.query, "exact": self.exact, "people": self.people.text,
                "studies": self.studies.text, "series": self.series.text}


def gives_exact(archive: Archive, project: str, principal: Principal) -> bool:
    """Whether ``principal`` is allowed exact results on ``project``: exact cohort counts and
    IDs, and what the web UI shows only to them (a subject's clinical facts). Only a site's
    own (identifiable) project, and only to its members and owners and to site
    administrators; viewers, collaborators and every user of a research project get counts
    under the policy (decision 0022)."""
    return archive.zone_of(project) == IDENTIFIABLE and (
        principal.is_admin or principal.roles.get(project) in (Role.MEMBER, Role.OWNER))


def search(archive: Archive, project: str, text: str, *, exact: bool = False,
           limit: int = 100, policy: Policy | None = None,
           exclude: Select[Any] | None = None) -> CohortResult:
    """Run the cohort query ``text`` over ``project`` (see the module's docstring).
    ``exact`` (a site's project only) gives exact counts and up to ``limit`` IDs per level
    (0: none); ``policy`` is a site project's policy for suppressed counts."""
    query = parse(text)  # a CohortQueryError before the project is even looked at
    archive.ensure_project(project)
    research = archive.zone_of(project) == RESEARCH
    if exact and research:
        raise PermissionDeniedError(
            f"Project {project!r} is a research project: its cohort counts are shown under "
            "its policy's small-number suppression, without exact counts or IDs.")
    if research:
        policy = project_policy(archive, project)
    limit = max(0, min(limit, MAX_LIMIT))
    with archive.sessions.begin() as session:
        compiled = compile_query(query, project, session.get_bind().dialect.name,
                                 exclude=withdrawn_subjects(project, exclude))
        listed: tuple[list[str], list[dict[str, Any]], list[dict[str, Any]]] = ([], [], [])
        if exact and limit:  # counts and lists in one statement
            found = run_cohort(session, compiled, limit=limit)
            people, studies, series = found.people, found.studies, found.series
            listed = (found.subject_ids, found.study_rows, found.series_rows)
        else:
            people, studies, series = count_cohort(session, compiled)
    if exact:
        return CohortResult(
            project, query.describe(), True, ShownCount.of(people), ShownCount.of(studies),
            ShownCount.of(series), subject_ids=listed[0], study_rows=listed[1],
            series_rows=listed[2],
            truncated=bool(limit) and (people > limit or studies > limit or series > limit))
    rules = policy or DEFAULT_POLICY
    return CohortResult(project, query.describe(), False,
                        ShownCount.of(shown_count(people, rules)),
                        ShownCount.of(shown_count(studies, rules)),
                        ShownCount.of(shown_count(series, rules)),
                        smallest_count=rules.smallest_count, rounding=rules.count_rounding)


def cohort_subject_ids(archive: Archive, project: str, text: str, *,
                       exclude: Select[Any] | None = None) -> list[str]:
    """Every subject the query matches in ``project``, in ID order: what a cohort release
    takes (inside the site; nothing here is shown to anyone)."""
    query = parse(text)
    archive.ensure_project(project)
    with archive.sessions.begin() as session:
        compiled = compile_query(query, project, session.get_bind().dialect.name,
                                 exclude=withdrawn_subjects(project, exclude))
        return list_cohort_subjects(session, compiled)


def project_policy(archive: Archive, project: str) -> Policy | None:
    """A research project's own policy (None for a site's project, or one without)."""
    from imagebank.services.policies import parse_policy

    text = archive.ensure_project(project).get("policy")
    return parse_policy(text, f"project {project}") if text else None
