"""Web UI pages (decisions 0027 and 0030): uploads, quarantine and jobs.

The pages read through the same functions as the REST API and their scripts act through it:
uploads are ``POST /api/v1/projects/{project}/instances`` (one file a request, a few at a
time), the quarantine's actions its retry and discard routes, the jobs page polls
``GET /api/v1/jobs``. Nothing of a file (its name, its patient) goes into a URL.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse

from imagebank.api.routes_jobs import get_job, list_jobs
from imagebank.api.security import project_access, runtime_of, signed_in
from imagebank.api.ui import page, project_page
from imagebank.domain.access import Permission
from imagebank.services import quarantine as items

router = APIRouter(include_in_schema=False)
#: Quarantine items on one page (the rest a page further: ?offset=).
PAGE_ITEMS = 200
#: Jobs listed (newest first), as the API's default.
PAGE_JOBS = 100
JOB_ID = Path(pattern=r"^[0-9a-f]{32}$")
TIMES = ("created_at", "started_at", "finished_at", "updated_at")
#: What each kind of job is called on the pages.
JOB_KINDS = {"import": "Import", "export": "Export", "share": "Share", "release": "Release",
             "clinical_import": "Clinical import"}


@router.get("/ui/projects/{project}/upload", response_class=HTMLResponse,
            dependencies=[project_access(Permission.WRITE, "read")])
def upload_page(request: Request, project: str) -> HTMLResponse:
    """Upload files and folders into the project (drag and drop, or file pickers)."""
    archive = runtime_of(request).archive
    return project_page(request, "upload.html", project, section="upload",
                        max_size=archive.settings.max_object_size)


@router.get("/ui/projects/{project}/quarantine", response_class=HTMLResponse,
            dependencies=[project_access(Permission.MANAGE, "read")])
def quarantine_page(request: Request, project: str,
                    offset: int = Query(0, ge=0, le=10_000_000)) -> HTMLResponse:
    """What the project received and did not archive: counts by reason, the items with their
    reason, and Retry and Discard for each."""
    archive = runtime_of(request).archive
    counts = items.reason_counts(archive, project)
    rows = items.list_items(archive, project, limit=PAGE_ITEMS, offset=offset)
    total = sum(counts.values())
    return project_page(request, "quarantine.html", project, section="quarantine",
                        items=rows, reasons=counts, total=total, offset=offset,
                        page_size=PAGE_ITEMS)


@router.get("/ui/jobs", response_class=HTMLResponse, dependencies=[signed_in])
def jobs_page(request: Request) -> HTMLResponse:
    """The user's jobs (every job, for an administrator), as ``GET /api/v1/jobs`` lists them,
    with their progress followed live."""
    jobs = [_in_utc(job) for job in list_jobs(request, limit=PAGE_JOBS)]
    return page(request, "jobs.html", jobs=jobs, kinds=JOB_KINDS)


@router.get("/ui/jobs/{job_id}", response_class=HTMLResponse, dependencies=[signed_in])
def job_page(request: Request, job_id: str = JOB_ID) -> HTMLResponse:
    """One job (404 for a job the user may not see, as the API answers)."""
    job = get_job(request, job_id)
    return page(request, "job.html", job=_in_utc(job), kinds=JOB_KINDS,
                result=_result_rows(job.get("result")))


def _in_utc(job: dict[str, Any]) -> dict[str, Any]:
    """The job with its times in UTC (the pages say UTC)."""
    return {**job, **{key: job[key].astimezone(UTC) for key in TIMES if job.get(key)}}


def _result_rows(result: dict[str, Any] | None) -> list[tuple[str, str]]:
    """A job's result as (name, value) rows of text: counts and names, nested values
    flattened one level (``reasons.not_dicom``)."""
    rows: list[tuple[str, str]] = []
    for key, value in (result or {}).items():
        if isinstance(value, dict):
            rows.extend((f"{key}.{k}", _text(v)) for k, v in value.items())
        else:
            rows.append((str(key), _text(value)))
    return rows


def _text(value: Any) -> str:
    if isinstance(value, list):
        return f"{len(value)} items" if len(value) > 5 else ", ".join(map(str, value))
    return "" if value is None else str(value)
