"""The data hierarchy of a project: subjects, studies, series, instances and resources;
uploads, downloads and zip archives. Every object is looked up *within* the path's project:
an ID from another project answers 404, as if it did not exist."""

from __future__ import annotations

import os
import re
import tempfile
import unicodedata
import uuid
from collections.abc import Iterator
from pathlib import Path as FilePath
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool

from imagebank.api.problems import problem_response
from imagebank.api.schemas import (
    IngestResult,
    InstanceOut,
    ResourceOut,
    SeriesOut,
    StudyPage,
    StudySearchIn,
    SubjectOut,
    SubjectPage,
)
from imagebank.api.security import API_PREFIX, project_access, runtime_of, set_audit
from imagebank.domain.access import Permission
from imagebank.domain.errors import (
    InvalidInputError,
    NotFoundError,
    UnsupportedMediaTypeError,
)
from imagebank.domain.model import IngestSummary, Level, Outcome
from imagebank.services.archive import Archive
from imagebank.services.exports import iter_zip
from imagebank.services.query import Queries

router = APIRouter(prefix=API_PREFIX, tags=["data"])
READ = [project_access(Permission.READ)]
SEARCH = [project_access(Permission.READ, "search")]
DOWNLOAD = [project_access(Permission.DOWNLOAD, "download")]
WRITE = [project_access(Permission.WRITE, "write")]
ID = r"^[0-9a-f]{32}$"
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {}}
LIMIT = Query(100, ge=1, le=1000)
OFFSET = Query(0, ge=0, le=10_000_000)
CHUNK = 1024 * 1024
#: Bodies larger than this are spooled to disk rather than held in memory.
MEMORY_BODY = 64 * 1024 * 1024
DATE_RANGE = re.compile(r"^(\d{8})?(-)?(\d{8})?$")



def _page(items: list[dict[str, Any]], limit: int, offset: int) -> dict[str, Any]:
    more = len(items) > limit
    return {"items": items[:limit], "limit": limit, "offset": offset,
            "next_offset": offset + limit if more else None}


# -- subjects ---------------------------------------------------------------------------------
@router.get("/projects/{project}/subjects", response_model=SubjectPage, dependencies=READ,
            responses=NOT_FOUND)
def list_subjects(request: Request, project: str, limit: int = LIMIT, offset: int = OFFSET
                  ) -> dict[str, Any]:
    """The project's subjects (patients), ordered by PatientID."""
    rows = runtime_of(request).archive.subjects(project, limit=limit + 1, offset=offset)
    return _page(rows, limit, offset)


@router.get("/projects/{project}/subjects/{subject}", response_model=SubjectOut,
            dependencies=READ, responses=NOT_FOUND)
def get_subject(request: Request, project: str, subject: str = Path(pattern=ID)
                ) -> dict[str, Any]:
    """A subject (patient) of the project."""
    return runtime_of(request).archive.in_project("subject", subject, project)


@router.get("/projects/{project}/subjects/{subject}/studies", response_model=StudyPage,
            dependencies=READ, responses=NOT_FOUND)
def subject_studies(request: Request, project: str, subject: str = Path(pattern=ID),
                    limit: int = LIMIT, offset: int = OFFSET) -> dict[str, Any]:
    """The subject's studies, newest first."""
    archive = runtime_of(request).archive
    archive.in_project("subject", subject, project)
    rows = archive.studies(project, limit=limit + 1, offset=offset, subject_id=subject)
    return _page(rows, limit, offset)


# -- studies ----------------------------------------------------------------------------------
@router.get("/projects/{project}/studies", response_model=StudyPage, dependencies=SEARCH,
            responses={**NOT_FOUND, 400: {}})
def list_studies(
    request: Request,
    project: str,
    PatientID: str | None = Query(None, max_length=64),
    StudyDate: str | None = Query(None, max_length=17, description="YYYYMMDD, or a range "
                                  "YYYYMMDD-YYYYMMDD (either end may be left open)"),
    AccessionNumber: str | None = Query(None, max_length=64),
    StudyInstanceUID: str | None = Query(None, max_length=64),
    ModalitiesInStudy: str | None = Query(None, max_length=16),
    limit: int = LIMIT,
    offset: int = OFFSET,
) -> dict[str, Any]:
    """The project's studies, newest first, filtered by the DICOM attributes given."""
    filters: dict[str, Any] = {}
    if PatientID is not None:
        filters["patient_id"] = PatientID
    if AccessionNumber is not None:
        filters["accession_number"] = AccessionNumber
    if StudyInstanceUID is not None:
        filters["study_instance_uid"] = StudyInstanceUID
    if ModalitiesInStudy is not None:
        filters["modality"] = ModalitiesInStudy
    if StudyDate:
        match = DATE_RANGE.fullmatch(StudyDate)
        if match is None or not (match.group(1) or match.group(3)):
            raise InvalidInputError("StudyDate is YYYYMMDD or a range YYYYMMDD-YYYYMMDD.")
        start, dash, end = match.groups()
        filters["study_date_from"] = start
        filters["study_date_to"] = end if dash else start
        filters = {k: v for k, v in filters.items() if v is not None}
    # The audit keeps which attributes were searched on, never their values.
    set_audit(request, detail={"filters": sorted(k for k, v in request.query_params.items()
                                                 if k not in ("limit", "offset"))})
    rows = runtime_of(request).archive.studies(project, limit=limit + 1, offset=offset,
                                               **filters)
    return _page(rows, limit, offset)


@router.post("/projects/{project}/studies/search", response_model=StudyPage,
             dependencies=SEARCH, responses={**NOT_FOUND, 400: {}})
def search_studies(request: Request, project: str, body: StudySearchIn) -> dict[str, Any]:
    """The project's studies matching the criteria of the body, newest first: GET /studies
    with the criteria kept out of the URL (and so out of every log and history that keeps
    URLs), and QIDO-RS's matching: wildcards, date ranges, PatientName in any case."""
    criteria = body.model_dump(exclude={"limit", "offset"}, exclude_none=True)
    # The audit keeps which attributes were searched on, never their values.
    set_audit(request, detail={"filters": sorted(criteria)})
    queries = Queries(runtime_of(request).archive)
    search = queries.parse(Level.STUDY, criteria, fuzzy=True)
    rows = queries.find_studies(search, project_ids=[project], limit=body.limit + 1,
                                offset=body.offset)
    return _page(rows, body.limit, body.offset)


@router.get("/projects/{project}/studies/{study}", response_model=dict[str, Any],
            dependencies=READ, responses=NOT_FOUND)
def get_study(request: Request, project: str, study: str = Path(pattern=ID)
              ) -> dict[str, Any]:
    """A study, with its series."""
    archive = runtime_of(request).archive
    row = archive.in_project("study", study, project)
    return {**row, "series": archive.series(study)}


@router.get("/projects/{project}/studies/{study}/series", response_model=list[SeriesOut],
            dependencies=READ, responses=NOT_FOUND)
def study_series(request: Request, project: str, study: str = Path(pattern=ID)
                 ) -> list[dict[str, Any]]:
    """The study's series."""
    archive = runtime_of(request).archive
    archive.in_project("study", study, project)
    return archive.series(study)


# -- series and instances ---------------------------------------------------------------------
@router.get("/projects/{project}/series/{series}", response_model=SeriesOut,
            dependencies=READ, responses=NOT_FOUND)
def get_series(request: Request, project: str, series: str = Path(pattern=ID)
               ) -> dict[str, Any]:
    """A series of the project."""
    return runtime_of(request).archive.in_project("series", series, project)


@router.get("/projects/{project}/series/{series}/instances",
            response_model=list[InstanceOut], dependencies=READ, responses=NOT_FOUND)
def series_instances(request: Request, project: str, series: str = Path(pattern=ID)
                     ) -> list[dict[str, Any]]:
    """The series' instances."""
    archive = runtime_of(request).archive
    archive.in_project("series", series, project)
    return archive.instances(series)


@router.get("/projects/{project}/instances/{instance}", response_model=InstanceOut,
            dependencies=READ, responses=NOT_FOUND)
def get_instance(request: Request, project: str, instance: str = Path(pattern=ID)
                 ) -> dict[str, Any]:
    """An instance's indexed attributes (its whole header: ``/metadata``)."""
    return runtime_of(request).archive.in_project("instance", instance, project)


@router.get("/projects/{project}/instances/{instance}/metadata",
            dependencies=READ, response_class=Response,
            responses={**NOT_FOUND, 200: {"content": {"application/dicom+json": {
                "schema": {"type": "object"}}}}})
def instance_metadata(request: Request, project: str, instance: str = Path(pattern=ID)
                      ) -> Response:
    """The instance's header as DICOM JSON (PS3.18 F.2), without bulk data."""
    row = runtime_of(request).archive.in_project("instance", instance, project)
    return Response(row["metadata_json"], media_type="application/dicom+json")


@router.get("/projects/{project}/instances/{instance}/file", dependencies=DOWNLOAD,
            responses={**NOT_FOUND, 200: {"content": {"application/dicom": {}}}},
            response_class=Response)
def download_instance(request: Request, project: str, instance: str = Path(pattern=ID)
                      ) -> Response:
    """The instance as it was received (DICOM Part 10)."""
    archive = runtime_of(request).archive
    row = archive.in_project("instance", instance, project)
    return _stream_object(archive, row["object_key"], "application/dicom", f"{instance}.dcm",
                          int(row["size_bytes"]))


def _stream_object(archive: Archive, key: str, media_type: str, filename: str,
                   size: int) -> Response:
    def chunks() -> Iterator[bytes]:
        with archive.store.open(key) as source:
            while block := source.read(CHUNK):
                yield block

    if size <= CHUNK:
        return Response(archive.store.get(key), media_type=media_type, headers={
            "Content-Disposition": f'attachment; filename="{filename}"'})
    return StreamingResponse(iterate_in_threadpool(chunks()), media_type=media_type,
                             headers={"Content-Length": str(size),
                                      "Content-Disposition": f'attachment; filename="{filename}"'})


def _zip_response(archive: Archive, level: str, object_id: str) -> StreamingResponse:
    rows = archive.instance_objects(level, [object_id])
    return StreamingResponse(
        iterate_in_threadpool(iter_zip(archive.store, rows)), media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{level}-{object_id}.zip"'})


@router.get("/projects/{project}/studies/{study}/archive", dependencies=DOWNLOAD,
            responses={**NOT_FOUND, 200: {"content": {"application/zip": {}}}},
            response_class=StreamingResponse)
def download_study(request: Request, project: str, study: str = Path(pattern=ID)
                   ) -> StreamingResponse:
    """The study as a zip, streamed (entries named by internal IDs, never patient data)."""
    archive = runtime_of(request).archive
    archive.in_project("study", study, project)
    return _zip_response(archive, "study", study)


@router.get("/projects/{project}/series/{series}/archive", dependencies=DOWNLOAD,
            responses={**NOT_FOUND, 200: {"content": {"application/zip": {}}}},
            response_class=StreamingResponse)
def download_series(request: Request, project: str, series: str = Path(pattern=ID)
                    ) -> StreamingResponse:
    """The series as a zip, streamed."""
    archive = runtime_of(request).archive
    archive.in_project("series", series, project)
    return _zip_response(archive, "series", series)


# -- uploads ----------------------------------------------------------------------------------
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/dicom": {"schema": {"type": "string", "format": "binary"}},
            "application/zip": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


async def receive_body(request: Request, limit: int) -> bytes | FilePath:
    """The request body: in memory when small, else spooled to a file in DATA/spool."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise InvalidInputError(f"The upload is larger than the limit of {limit} bytes "
                                "(IMAGEBANK_MAX_OBJECT_SIZE).", code="too_large")
    parts: list[bytes] = []
    size = 0
    spool: Any = None
    path: FilePath | None = None
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise InvalidInputError(f"The upload is larger than the limit of {limit} "
                                        "bytes (IMAGEBANK_MAX_OBJECT_SIZE).", code="too_large")
            if spool is None and size > MEMORY_BODY:
                fd, name = tempfile.mkstemp(dir=runtime_of(request).archive.spool_dir(),
                                            suffix=".body")
                spool, path = os.fdopen(fd, "wb"), FilePath(name)
                spool.write(b"".join(parts))
                parts = []
            if spool is not None:
                await run_in_threadpool(spool.write, chunk)
            else:
                parts.append(chunk)
    except BaseException:
        if spool is not None:
            spool.close()
            assert path is not None
            path.unlink(missing_ok=True)
        raise
    if spool is not None:
        spool.close()
        assert path is not None
        return path
    return b"".join(parts)


#: The uploaded file's name (its path within what the user chose), percent-encoded (RFC 3986
#: 2.1, as encodeURIComponent makes it): a header, never the URL, since it may name a patient.
FILENAME_HEADER = "X-Imagebank-Filename"
#: The longest header taken (encoded), and the longest name kept (its end, the file's own).
MAX_FILENAME_HEADER = 4096
MAX_FILENAME = 255
FILENAME_DESCRIPTION = (
    "The file's name or relative path as the user knows it, percent-encoded: recorded as "
    "the source of what the upload holds (`upload: <name>`), so that quarantine items can be "
    "told apart. Control and format characters are dropped; a name longer than "
    f"{MAX_FILENAME} characters keeps its end. Without it the source is `upload`.")


def upload_source(header: str | None) -> str:
    """The source recorded for an upload: ``upload``, or ``upload: <name>`` with the name of
    the X-Imagebank-Filename header decoded, its control and format characters (C0, C1,
    bidirectional overrides, line separators) dropped, and cut to MAX_FILENAME characters
    from its end."""
    name = unquote(header or "", errors="replace")
    name = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Zl",
                                                                       "Zp")).strip()
    if len(name) > MAX_FILENAME:
        name = "…" + name[-(MAX_FILENAME - 1):].lstrip()
    return f"upload: {name}" if name else "upload"


def _result(summary: IngestSummary, ids: list[str], study_ids: list[str] | None = None
            ) -> dict[str, Any]:
    return {**summary.as_dict(), "instance_ids": ids, "study_ids": study_ids or [],
            "problems": [{"reason": r, "message": m} for _, r, m in summary.problems]}


@router.post("/projects/{project}/instances", response_model=IngestResult,
             dependencies=WRITE, openapi_extra=UPLOAD_BODY,
             responses={400: {}, 403: {}, 404: {}, 409: {}, 415: {}})
async def upload(request: Request, project: str,
                 filename: str | None = Header(None, alias=FILENAME_HEADER,
                                               max_length=MAX_FILENAME_HEADER,
                                               description=FILENAME_DESCRIPTION)) -> Any:
    """Upload one DICOM file (application/dicom) or a zip of them (application/zip).

    One file: 200 when stored (or already there), 409 when another object has its
    SOPInstanceUID, 400 when it is not acceptable DICOM (it is kept in quarantine). A zip:
    200 with what happened to its files. For big zips, start an import job instead.
    What is quarantined records its source as `upload`, or `upload: <name>` with the name
    sent in the X-Imagebank-Filename header (a zip's members: `upload: <name>!<member>`).
    """
    archive = runtime_of(request).archive
    source = upload_source(filename)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in ("application/dicom", "application/zip", "application/octet-stream"):
        raise UnsupportedMediaTypeError(
            "Send application/dicom (one file) or application/zip.")
    body = await receive_body(request, archive.settings.max_object_size)
    study_ids: list[str] = []
    if isinstance(body, FilePath) or media == "application/zip":
        summary, ids = await run_in_threadpool(_ingest_file, archive, body, project,
                                               media == "application/zip", source)
    else:
        summary, ids, study_ids = await run_in_threadpool(_store_one, archive, body, project,
                                                          source)
    set_audit(request, detail={k: v for k, v in summary.as_dict().items() if k != "reasons"})
    result = _result(summary, ids, study_ids)
    if media == "application/zip" or summary.ok:
        return result
    status, code = (409, "conflict") if summary.conflicts else (400, "rejected")
    reason = next(iter(summary.reasons), "rejected")
    message = summary.problems[0][2] if summary.problems else "The file was not stored."
    return problem_response(status, f"Not stored ({reason}): {message}", code, summary=result)


def _store_one(archive: Archive, body: bytes, project: str, source: str
               ) -> tuple[IngestSummary, list[str], list[str]]:
    """One object: its summary, the instance stored, and the study that holds it (stored
    now or already there), for a client to link to."""
    received = archive.receive([(body, source)], project)
    study_ids = sorted({o.study_id for o in received.objects if o.study_id
                        and o.outcome in (Outcome.STORED, Outcome.DUPLICATE)})
    return received.summary, received.stored_ids, study_ids


def _ingest_file(archive: Archive, body: bytes | FilePath, project: str, is_zip: bool,
                 source: str) -> tuple[IngestSummary, list[str]]:
    if isinstance(body, bytes):
        path = archive.spool_dir() / f"{uuid.uuid4().hex}{'.zip' if is_zip else '.dcm'}"
        path.write_bytes(body)
    else:
        path = body.rename(body.with_suffix(".zip" if is_zip else ".dcm"))
    try:
        return archive.ingest([path], project, workers=1, name=source), []
    finally:
        path.unlink(missing_ok=True)


# -- resources --------------------------------------------------------------------------------
@router.get("/projects/{project}/resources", response_model=list[ResourceOut],
            dependencies=READ, responses=NOT_FOUND)
def list_resources(request: Request, project: str,
                   level: str | None = Query(None, pattern="^(project|subject|study|series)$"),
                   parent_id: str | None = Query(None, max_length=63)
                   ) -> list[dict[str, Any]]:
    """Non-DICOM files (NIfTI, segmentations, reports) attached to the project's objects."""
    return runtime_of(request).archive.resources(project, level, parent_id)


@router.post("/projects/{project}/resources", response_model=ResourceOut, status_code=201,
             dependencies=WRITE, responses={400: {}, 403: {}, 404: {}},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/octet-stream": {"schema": {"type": "string",
                                                         "format": "binary"}}}}})
async def add_resource(
    request: Request, project: str,
    level: str = Query(pattern="^(project|subject|study|series)$"),
    parent_id: str = Query(max_length=63),
    name: str = Query(min_length=1, max_length=255),
) -> dict[str, Any]:
    """Attach a file to the project or one of its subjects, studies or series."""
    archive = runtime_of(request).archive
    body = await receive_body(request, min(archive.settings.max_object_size, MEMORY_BODY))
    assert isinstance(body, bytes)
    media = request.headers.get("content-type", "application/octet-stream")[:127]
    row = await run_in_threadpool(archive.add_resource, project, level, parent_id, name,
                                  body, media)
    set_audit(request, level="resource", object_id=row["id"])
    return row


def _resource(archive: Archive, project: str, resource: str) -> dict[str, Any]:
    try:
        row = archive.resource(resource)
    except NotFoundError:
        row = None
    if row is None or row["project_id"] != project:
        raise NotFoundError(f"No resource {resource} in project {project!r}.")
    return row


@router.get("/projects/{project}/resources/{resource}", response_model=ResourceOut,
            dependencies=READ, responses=NOT_FOUND)
def get_resource(request: Request, project: str, resource: str = Path(pattern=ID)
                 ) -> dict[str, Any]:
    """A resource's description (its content: ``/file``)."""
    return _resource(runtime_of(request).archive, project, resource)


@router.get("/projects/{project}/resources/{resource}/file", dependencies=DOWNLOAD,
            responses={**NOT_FOUND, 200: {"content": {"*/*": {}}}},
            response_class=Response)
def download_resource(request: Request, project: str, resource: str = Path(pattern=ID)
                      ) -> Response:
    """The resource's file, with the media type it was attached with."""
    archive = runtime_of(request).archive
    row = _resource(archive, project, resource)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", row["name"])[:100] or "resource"
    return _stream_object(archive, row["object_key"], row["content_type"], safe,
                          int(row["size_bytes"]))

