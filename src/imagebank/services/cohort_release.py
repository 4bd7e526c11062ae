"""A cohort release (issue 6, decision 0026): the subjects a cohort query matches, shared into a
research project or exported, with their clinical tables when asked, as one job.

The query (``domain.cohort``) is resolved inside the site to every matched subject's ID and,
when it has a positive imaging criterion, to the matched studies' IDs: then only those
studies' images are released (a query for "a C34 diagnosis within 90 days before a chest CT"
releases the chest CTs, not every study of those patients), else all of the subjects'
studies. The clinical tables take every matched subject. The query, normalised, is recorded
in the manifest (``cohort``); the consent screen applies at the release as at any other.
"""

from __future__ import annotations

from dataclasses import replace

from imagebank.domain.cohort import EventKind, Query, parse
from imagebank.domain.errors import InvalidInputError
from imagebank.index.cohort import compile_query, list_cohort, list_cohort_subjects
from imagebank.services.archive import Archive
from imagebank.services.release import ReleaseSpec

#: Every matched study (``list_cohort`` takes a limit).
_ALL = 2**31 - 1


def has_imaging_criteria(query: Query) -> bool:
    """Whether the query has a positive (not negated) imaging event: its matched studies are
    then the ones released."""
    return any(event.kind is EventKind.IMAGING and positive
               for event, positive in query.events())


def cohort_spec(archive: Archive, spec: ReleaseSpec, text: str) -> ReleaseSpec:
    """``spec`` (a share or export of the project the query runs over) narrowed to the
    subjects (and studies) the cohort query ``text`` matches, with the query recorded.
    A query that matches no one is refused: an empty selection would mean everyone."""
    query = parse(text)
    archive.ensure_project(spec.source)
    with archive.sessions.begin() as session:
        compiled = compile_query(query, spec.source, session.get_bind().dialect.name)
        subjects = list_cohort_subjects(session, compiled)
        studies = ([str(s["id"]) for s in list_cohort(session, compiled, limit=_ALL)[1]]
                   if has_imaging_criteria(query) and subjects else [])
    if not subjects:
        raise InvalidInputError(f"The cohort query matches no one in project "
                                f"{spec.source!r}: there is nothing to release.")
    if has_imaging_criteria(query) and not studies:
        raise InvalidInputError("The cohort query's imaging criteria match no study of the "
                                "people it matches: there are no images to release.")
    return replace(spec, subject_ids=tuple(subjects), study_ids=tuple(studies),
                   cohort=query.describe())
