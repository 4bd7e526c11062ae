"""Web UI pages (decisions 0027, 0028): browsing a project (subjects, a subject with its
studies and clinical facts, a study with its series and their thumbnails), study search and
the cohort builder.

The pages read through the same archive functions as the REST API and under the same access
dependency (READ), and show no more than the API would: a subject's clinical facts only to
those the cohort search gives exact results (``services.cohort.gives_exact``). Search and
the cohort builder are a form and a script: their criteria go to the REST API in a request
body (``POST /api/v1/projects/{p}/studies/search`` and ``.../cohorts/search``), never into
a URL, and the answers are put into the page with ``textContent``. Thumbnails come from
DICOMweb (WADO-RS thumbnails need DOWNLOAD: a viewer sees a placeholder instead, and no
viewer link). Every UID put into a URL is percent-encoded as one path segment
(``path_segment``) or query value.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse

from imagebank.api import ui_ohif
from imagebank.api.security import project_access, resolve_principal, runtime_of
from imagebank.api.ui import project_page
from imagebank.domain.access import Permission
from imagebank.domain.cohort import SYSTEMS, EventKind
from imagebank.services.clinical import subject_facts
from imagebank.services.cohort import gives_exact

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


def path_segment(value: str) -> str | None:
    """``value`` (a UID: in practice digits and dots, but an odd file may hold anything) as
    one percent-encoded URL path segment (``/`` too: PS3.18's paths have no room for it), or
    None when no URL can carry it: empty, or ``.`` or ``..``, which browsers resolve whatever
    their encoding (WHATWG URL, dot segments)."""
    if value in ("", ".", ".."):
        return None
    return quote(value, safe="")


def thumbnail_url(project: str, study_uid: str, series_uid: str) -> str | None:
    """A series' WADO-RS thumbnail (PS3.18 10.4.1.3) in the project's DICOMweb, or None
    when a UID cannot be put in a URL (the page shows a placeholder)."""
    study, series = path_segment(study_uid), path_segment(series_uid)
    if study is None or series is None:
        return None
    return (f"/projects/{quote(project, safe='')}/dicomweb/studies/{study}/series/{series}"
            "/thumbnail")



@router.get("/ui/projects/{project}/subjects", response_class=HTMLResponse,
            dependencies=READ)
def subjects_page(request: Request, project: str,
                  offset: int = Query(0, ge=0, le=10_000_000)) -> HTMLResponse:
    """The project's subjects (patients), by PatientID, a page at a time."""
    archive = runtime_of(request).archive
    rows = archive.subjects(project, limit=SUBJECTS_PAGE + 1, offset=offset)
    return project_page(
        request, "browse_subjects.html", project, section="subjects",
        counts=archive.project_summary(project)["counts"],
        subjects=rows[:SUBJECTS_PAGE], offset=offset,
        next_offset=offset + SUBJECTS_PAGE if len(rows) > SUBJECTS_PAGE else None,
        previous_offset=max(0, offset - SUBJECTS_PAGE) if offset else None)


@router.get("/ui/projects/{project}/subjects/{subject}", response_class=HTMLResponse,
            dependencies=READ)
def subject_page(request: Request, project: str, subject: str = Path(pattern=ID)
                 ) -> HTMLResponse:
    """A subject: their studies, newest first, and the clinical facts the project holds,
    for those the cohort search gives exact results (anyone else has no API that shows a
    subject's facts, so neither does this page: ``facts`` is None)."""
    archive = runtime_of(request).archive
    row = archive.in_project("subject", subject, project)
    studies = archive.studies(project, subject_id=subject, limit=SUBJECT_STUDIES + 1)
    principal = resolve_principal(request)
    facts = (subject_facts(archive, subject)
             if principal is not None and gives_exact(archive, project, principal) else None)
    return project_page(
        request, "browse_subject.html", project, section="subjects", subject=row,
        studies=studies[:SUBJECT_STUDIES], more_studies=len(studies) > SUBJECT_STUDIES,
        facts=None if facts is None else facts[:SUBJECT_FACTS],
        facts_total=0 if facts is None else len(facts))


@router.get("/ui/projects/{project}/studies/{study}", response_class=HTMLResponse,
            dependencies=READ)
def study_page(request: Request, project: str, study: str = Path(pattern=ID)
               ) -> HTMLResponse:
    """A study: its attributes and its series, each with a thumbnail, a link to the viewer
    and a download of the series (for those who may download), and a link to the study in
    OHIF when it is installed (decision 0032)."""
    archive = runtime_of(request).archive
    row = archive.in_project("study", study, project)
    series = archive.series(study)
    thumbnails = {s["id"]: thumbnail_url(project, row["study_instance_uid"],
                                         s["series_instance_uid"]) for s in series}
    ohif = (ui_ohif.viewer_url(row["study_instance_uid"])
            if ui_ohif.installed(ui_ohif.ohif_dir(request)) else None)
    return project_page(
        request, "browse_study.html", project, section="studies", study=row,
        subject=archive.get("subject", row["subject_id"]), series=series,
        thumbnails=thumbnails, ohif_url=ohif)


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
