"""Jobs: imports (an uploaded zip, ingested in the background), clinical imports (uploaded
FHIR files), exports (a zip of studies or series to download), shares and releases, with
state and progress."""

from __future__ import annotations

import os
from pathlib import Path as FilePath
from typing import Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from imagebank.api import multipart
from imagebank.api.routes_data import receive_body
from imagebank.api.schemas import ExportIn, JobOut, ReleaseIn, ShareIn
from imagebank.api.security import (
    API_PREFIX,
    project_access,
    resolve_principal,
    runtime_of,
    set_audit,
    signed_in,
)
from imagebank.domain.access import Permission, Principal, Scope
from imagebank.domain.errors import (
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    UnsupportedMediaTypeError,
)

router = APIRouter(prefix=API_PREFIX, tags=["jobs"])
JOB_ID = Path(pattern=r"^[0-9a-f]{32}$")
ZIP_BODY = {"schema": {"type": "string", "format": "binary"}}
#: Media types of a FHIR upload's files: JSON (a Bundle, or one resource) and NDJSON.
FHIR_JSON = ("application/fhir+json", "application/json")
FHIR_NDJSON = ("application/fhir+ndjson", "application/x-ndjson", "application/ndjson")
#: A multipart upload is read in memory: at most this much (one file is streamed to disk).
MULTIPART_LIMIT = 1024**3


def _visible_job(request: Request, job_id: str) -> tuple[Principal, dict[str, Any]]:
    """The job if the requester started it, owns its project, or administers the site."""
    principal = resolve_principal(request)
    assert principal is not None
    try:
        job = runtime_of(request).jobs.get(job_id)
    except NotFoundError:
        job = None
    if job is not None:
        project = job.get("project_id")
        set_audit(request, project_id=project)
        if (job["created_by"] == principal.user_id or principal.is_admin
                or (project and principal.can(project, Permission.MANAGE))):
            return principal, job
    raise NotFoundError(f"No job {job_id}.")


@router.post("/projects/{project}/imports", response_model=JobOut, status_code=202,
             dependencies=[project_access(Permission.WRITE, "write")],
             openapi_extra={"requestBody": {
                 "required": True,
                 "content": {"application/zip": ZIP_BODY}}},
             responses={400: {}, 403: {}, 404: {}})
async def start_import(request: Request, project: str) -> dict[str, Any]:
    """Upload a zip of DICOM files and ingest it in the background: poll the job."""
    runtime = runtime_of(request)
    principal = resolve_principal(request)
    assert principal is not None
    # A research project refuses before the upload is read (and kept in the spool).
    await run_in_threadpool(runtime.archive.admit, project)
    body = await receive_body(request, runtime.archive.settings.max_object_size)

    def submit() -> dict[str, Any]:
        job_id = runtime.jobs.new_id()
        target = runtime.jobs.spool_path(job_id)
        if isinstance(body, FilePath):
            os.replace(body, target)
        else:
            with target.open("wb") as out:
                out.write(body)
                out.flush()
                os.fsync(out.fileno())
        return runtime.jobs.submit("import", project, {}, principal.user_id, job_id)

    # The upload is in the spool before the job exists, so the runner always finds it.
    job = await run_in_threadpool(submit)
    set_audit(request, level="job", object_id=job["id"])
    return job


@router.post("/projects/{project}/clinical-imports", response_model=JobOut, status_code=202,
             dependencies=[project_access(Permission.WRITE, "clinical_import")],
             openapi_extra={"requestBody": {"required": True, "content": {
                 **{t: ZIP_BODY for t in (*FHIR_JSON, *FHIR_NDJSON)},
                 "multipart/related": {"schema": {"type": "string", "format": "binary"}}}}},
             responses={400: {}, 403: {}, 404: {}, 415: {}})
async def start_clinical_import(
    request: Request, project: str,
    strict: bool = Query(False, description="Validate every resource against the FHIR R4B "
                         "models (slower)."),
) -> dict[str, Any]:
    """Upload FHIR R4 files and import them into the project in the background: poll the
    job (its progress is resources read; its result the import's summary; any problem fails
    it, the rest being imported). One file as the body (``application/fhir+json``: a Bundle
    or a resource; ``application/fhir+ndjson``: a bulk-export file), or several as
    ``multipart/related`` parts of those types (at most 1 GiB in all)."""
    from imagebank.services.clinical_job import submit_clinical_import

    runtime = runtime_of(request)
    principal = resolve_principal(request)
    assert principal is not None
    # A research project refuses clinical data before the upload is read.
    await run_in_threadpool(runtime.archive.admit, project)
    files = await _fhir_files(request, runtime.archive.settings.max_object_size)
    job = await run_in_threadpool(lambda: submit_clinical_import(
        runtime.jobs, project, files, strict=strict, created_by=principal.user_id))
    set_audit(request, level="job", object_id=job["id"],
              detail={"files": len(files), "strict": strict})
    return job


def _fhir_kind(media_type: str | None, where: str) -> Any:
    if media_type in FHIR_JSON:
        return "json"
    if media_type in FHIR_NDJSON:
        return "ndjson"
    raise UnsupportedMediaTypeError(
        f"{where} must be FHIR R4: application/fhir+json (a Bundle or a resource) or "
        "application/fhir+ndjson (a resource a line); nothing was imported.")


async def _fhir_files(request: Request, limit: int) -> list[tuple[Any, bytes | FilePath]]:
    """The uploaded files as (format, content): one body, or the parts of a multipart one."""
    content_type = multipart.parse_media_type(request.headers.get("content-type", ""))
    if content_type.type != "multipart/related":
        kind = _fhir_kind(content_type.type, "The body")
        body = await receive_body(request, limit)
        if not body:
            raise InvalidInputError("The body is empty: send a FHIR file.")
        return [(kind, body)]
    boundary = multipart.boundary_of(content_type)
    limit = min(limit, MULTIPART_LIMIT)
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise InvalidInputError(f"A multipart upload holds at most {limit} bytes; send big "
                                "files one a request, or use imagebank clinical import.",
                                code="too_large")
    parts = await multipart.read_parts(request.stream(), boundary, limit=limit,
                                       max_parts=10_000)
    if not parts:
        raise InvalidInputError("The multipart body holds no parts.", code="bad_multipart")
    declared = content_type.params.get("type", "").lower() or None
    files: list[tuple[Any, bytes | FilePath]] = []
    for number, part in enumerate(parts, 1):
        part_type = part.media_type
        files.append((_fhir_kind(part_type.type if part_type else declared,
                                 f"Part {number}"), part.body))
    return files


@router.post("/projects/{project}/exports", response_model=JobOut, status_code=202,
             dependencies=[project_access(Permission.DOWNLOAD, "download")],
             responses={400: {}, 403: {}, 404: {}})
def start_export(request: Request, project: str, body: ExportIn) -> dict[str, Any]:
    """Write a zip of studies or series of the project; download it from the job."""
    runtime = runtime_of(request)
    principal = resolve_principal(request)
    assert principal is not None
    owners = runtime.archive.projects_of(body.level, body.ids)
    for object_id in body.ids:
        if owners.get(object_id) != project:
            raise InvalidInputError(f"No {body.level} {object_id} in project {project!r}.")
    job = runtime.jobs.submit("export", project, {"level": body.level, "ids": body.ids},
                              principal.user_id)
    set_audit(request, level="job", object_id=job["id"])
    return job


@router.post("/projects/{project}/shares", response_model=JobOut, status_code=202,
             dependencies=[project_access(Permission.MANAGE, "share")],
             responses={400: {}, 403: {}, 404: {}})
def start_share(request: Request, project: str, body: ShareIn) -> dict[str, Any]:
    """De-identify the project's images (or some studies) into a research project, under the
    research project's policy and key: a job; its result and manifest say what was released.
    Needs the manage permission on both projects."""
    from imagebank.services.release import ReleaseSpec, plan

    runtime = runtime_of(request)
    principal = resolve_principal(request)
    assert principal is not None
    if not principal.knows(body.to) or not runtime.archive.has_project(body.to):
        raise NotFoundError(f"No project {body.to!r}.")
    if not principal.can(body.to, Permission.MANAGE):
        raise PermissionDeniedError(f"Sharing into project {body.to!r} needs the manage "
                                    "permission on it.")
    spec = ReleaseSpec("share", project, body.to, study_ids=tuple(body.study_ids),
                       clinical=body.clinical, subject_ids=tuple(body.subject_ids))
    plan(runtime.archive, spec)  # refusals (zones, policy) before the job exists
    job = runtime.jobs.submit("share", project, spec.params(), principal.user_id)
    set_audit(request, level="job", object_id=job["id"], detail={"to": body.to})
    return job


@router.post("/projects/{project}/releases", response_model=JobOut, status_code=202,
             dependencies=[project_access(Permission.DOWNLOAD, "release")],
             responses={400: {}, 403: {}, 404: {}})
def start_release(request: Request, project: str, body: ReleaseIn) -> dict[str, Any]:
    """Export the project with a manifest: an identifiable project through the
    de-identification pipeline under ``policy`` (needs the manage permission), a research
    project as stored. To a zip (download it from the job) or a configured DICOM node."""
    from imagebank.services.archive import IDENTIFIABLE
    from imagebank.services.policies import parse_policy, render_policy
    from imagebank.services.release import ReleaseSpec, check_destination, plan

    runtime = runtime_of(request)
    principal = resolve_principal(request)
    assert principal is not None
    archive = runtime.archive
    identifiable = archive.zone_of(project) == IDENTIFIABLE
    if identifiable and not principal.can(project, Permission.MANAGE):
        raise PermissionDeniedError("Releasing an identifiable project's data (de-identified) "
                                    "needs the manage permission on it.")
    job_id = runtime.jobs.new_id()
    if body.destination == "download":
        target = str(runtime.jobs.exports / f"{job_id}.zip")
    else:
        target = check_destination(archive, body.destination)
    policy = (render_policy(parse_policy(body.policy, "the policy"))
              if body.policy is not None else None)
    spec = ReleaseSpec("release", project, target, tuple(body.options), policy,
                       tuple(body.study_ids), key_name=None, clinical=body.clinical,
                       subject_ids=tuple(body.subject_ids))
    plan(archive, spec)
    job = runtime.jobs.submit("release", project, spec.params(), principal.user_id, job_id)
    set_audit(request, level="job", object_id=job["id"],
              detail={"destination": body.destination.split(":")[0]})
    return job


@router.get("/jobs", response_model=list[JobOut], dependencies=[signed_in])
def list_jobs(request: Request, limit: int = Query(100, ge=1, le=1000)
              ) -> list[dict[str, Any]]:
    """Your jobs, newest first (all jobs, for an administrator)."""
    principal = resolve_principal(request)
    assert principal is not None
    jobs = runtime_of(request).jobs
    if principal.is_admin:
        return jobs.list(limit=limit)
    return jobs.list(created_by=principal.user_id, limit=limit)


@router.get("/jobs/{job_id}", response_model=JobOut, dependencies=[signed_in],
            responses={404: {}})
def get_job(request: Request, job_id: str = JOB_ID) -> dict[str, Any]:
    """A job's state and progress."""
    return _visible_job(request, job_id)[1]


@router.delete("/jobs/{job_id}", response_model=JobOut, dependencies=[signed_in],
               responses={404: {}, 409: {}})
def cancel_job(request: Request, job_id: str = JOB_ID) -> dict[str, Any]:
    """Cancel a queued or running job (what an import already stored stays stored)."""
    principal, _ = _visible_job(request, job_id)
    if principal.scopes is not None and Scope.WRITE not in principal.scopes:
        raise PermissionDeniedError("Cancelling a job needs a token of scope 'write'.")
    set_audit(request, action="cancel")
    return runtime_of(request).jobs.cancel(job_id)


@router.get("/jobs/{job_id}/result", dependencies=[signed_in], response_class=FileResponse,
            responses={404: {}, 409: {}, 200: {"content": {"application/zip": {}}}})
def job_result(request: Request, job_id: str = JOB_ID) -> FileResponse:
    """Download an export job's zip."""
    principal, job = _visible_job(request, job_id)
    project = job.get("project_id")
    if project and not principal.can(project, Permission.DOWNLOAD):
        raise NotFoundError(f"No job {job_id}.")
    set_audit(request, action="download")
    path = runtime_of(request).jobs.result_path(job)
    return FileResponse(path, media_type="application/zip",
                        filename=f"export-{job_id}.zip")
