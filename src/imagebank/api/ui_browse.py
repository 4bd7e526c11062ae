"""Web UI pages (decisions 0027, 0028): browsing a project (subjects, a subject with its
studies and clinical facts, a study with its series and their thumbnails), study search and
the cohort builder.

The pages read through the same archive functions as the REST API and under the same access
dependency (READ). Search and the cohort builder are a form and a script: their criteria go
to the REST API in a request body (``POST /api/v1/projects/{p}/studies/search`` and
``.../cohorts/search``), never into a URL, and the answers are put into the page with
``textContent``. Thumbnails come from DICOMweb (WADO-RS thumbnails need DOWNLOAD: a viewer
sees a placeholder instead).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse

from imagebank.api.security import project_access, runtime_of
from imagebank.api.ui import project_page
from imagebank.domain.access import Permission
from imagebank.domain.cohort import SYSTEMS, EventKind
from imagebank.domain.errors import NotFoundError
from imagebank.services.archive import Archive
from imagebank.services.clinical import subject_facts

router = APIRouter(include_in_schema=False)
READ = [project_access(Permission.READ)]
ID = r"^[0-9a-f]{32}$"
#: Subjects a page of the subjects list holds; studies and clinical facts listed on a
#: subject's page.
SUBJECTS_PAGE = 50
SUBJECT_STUDIES = 100
SUBJECT_FACTS = 100
#: Offered (not imposed) in the search and cohort forms' modality fields.
MODALITIES = ("CT", "MR", "PT", "NM", "CR", "DX", "MG", "US", "XA", "RF", "OT", "SR", "SEG")


def _in_project(archive: Archive, level: str, object_id: str, project: str) -> dict[str, Any]:
    """The object, if it is in ``project``; else not found, in the REST API's words (an ID
    from another project is as missing as a random one, decision 0007)."""
    try:
        row = archive.get(level, object_id)
    except NotFoundError:
        row = None
    if row is None or row.get("project_id") != project:
        raise NotFoundError(f"No {level} {object_id} in project {project!r}.")
    return row


@router.get("/ui/projects/{project}/subjects", response_class=HTMLResponse,
            dependencies=READ)
def subjects_page(request: Request, project: str,
                  offset: int = Query(0, ge=0, le=10_000_000)) -> HTMLResponse:
    """The project's subjects (patients), by PatientID, a page at a time."""
    rows = runtime_of(request).archive.subjects(project, limit=SUBJECTS_PAGE + 1,
                                                offset=offset)
    return project_page(
        request, "browse_subjects.html", project, section="subjects",
        subjects=rows[:SUBJECTS_PAGE], offset=offset,
        next_offset=offset + SUBJECTS_PAGE if len(rows) > SUBJECTS_PAGE else None,
        previous_offset=max(0, offset - SUBJECTS_PAGE) if offset else None)


@router.get("/ui/projects/{project}/subjects/{subject}", response_class=HTMLResponse,
            dependencies=READ)
def subject_page(request: Request, project: str, subject: str = Path(pattern=ID)
                 ) -> HTMLResponse:
    """A subject: their studies, newest first, and the clinical facts the project holds."""
    archive = runtime_of(request).archive
    row = _in_project(archive, "subject", subject, project)
    studies = archive.studies(project, subject_id=subject, limit=SUBJECT_STUDIES + 1)
    facts = subject_facts(archive, subject)
    return project_page(
        request, "browse_subject.html", project, section="subjects", subject=row,
        studies=studies[:SUBJECT_STUDIES], more_studies=len(studies) > SUBJECT_STUDIES,
        facts=facts[:SUBJECT_FACTS], facts_total=len(facts))


@router.get("/ui/projects/{project}/studies/{study}", response_class=HTMLResponse,
            dependencies=READ)
def study_page(request: Request, project: str, study: str = Path(pattern=ID)
               ) -> HTMLResponse:
    """A study: its attributes and its series, each with a thumbnail (for those who may
    download), a link to the viewer and a download of the series."""
    archive = runtime_of(request).archive
    row = _in_project(archive, "study", study, project)
    return project_page(
        request, "browse_study.html", project, section="studies", study=row,
        subject=archive.get("subject", row["subject_id"]), series=archive.series(study))


@router.get("/ui/projects/{project}/search", response_class=HTMLResponse, dependencies=READ)
def search_page(request: Request, project: str) -> HTMLResponse:
    """Study search: a form whose criteria the page's script posts to the REST API."""
    return project_page(request, "browse_search.html", project, section="search",
                        modalities=MODALITIES)


@router.get("/ui/projects/{project}/cohort", response_class=HTMLResponse, dependencies=READ)
def cohort_page(request: Request, project: str) -> HTMLResponse:
    """The cohort builder: criteria rows and the query text, with live counts from the
    REST API's cohort search (as the API shows them: exact, or suppressed and rounded)."""
    kinds = [kind.value for kind in EventKind]
    return project_page(request, "browse_cohort.html", project, section="cohort",
                        kinds=kinds, systems=SYSTEMS, modalities=MODALITIES)
