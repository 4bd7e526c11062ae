"""The DICOMweb routes (PS3.18 Studies Service: QIDO-RS, WADO-RS, STOW-RS), each served at
``/dicomweb`` (every project the principal may read) and ``/projects/{project}/dicomweb``.

Under a project the route's access dependency is the REST API's: ``project_access`` with READ
for searches and metadata, DOWNLOAD for anything carrying pixel data (instances, frames, bulk
data, rendered images, thumbnails), WRITE for STOW-RS; 404 for a project the user has no role
on. Under ``/dicomweb`` a signed-in user is enough and every query is restricted to the
projects the principal's roles and scopes allow (``dicomweb_common.projects_in_scope``).
The handlers are in ``dicomweb_qido``, ``dicomweb_wado``, ``dicomweb_pixels`` and
``dicomweb_stow``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Path, Query, Request, Response

from imagebank.api import dicomweb_pixels, dicomweb_qido, dicomweb_stow, dicomweb_wado
from imagebank.api.dicomweb_common import (
    GLOBAL_BASE,
    PROJECT_BASE,
    SERIES_UID,
    SOP_UID,
    STUDY_UID,
)
from imagebank.api.dicomweb_media import DICOM, DICOM_JSON, OCTET_STREAM
from imagebank.api.security import project_access, set_audit, signed_in
from imagebank.domain.access import Permission
from imagebank.domain.model import Level

router = APIRouter(tags=["dicomweb"])

_ARRAY = {"type": "array", "items": {"type": "object"}}
_BINARY = {"type": "string", "format": "binary"}
_WARNING = {"Warning": {"description": "299: filters that were ignored, or more matches "
                                       "than were sent (PS3.18 10.6.3).",
                        "schema": {"type": "string"}}}
SEARCH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The matches, as DICOM JSON (PS3.18 F.2).", "headers": _WARNING,
          "content": {DICOM_JSON: {"schema": _ARRAY}, "application/json": {"schema": _ARRAY}}},
    400: {}, 406: {}}
METADATA_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The instances' headers, as DICOM JSON (PS3.18 F.2).",
          "content": {DICOM_JSON: {"schema": _ARRAY}, "application/json": {"schema": _ARRAY}}},
    406: {}}
MULTIPART_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "multipart/related, one part per object.",
          "content": {"multipart/related": {"schema": _BINARY}}},
    400: {}, 406: {}}
INSTANCE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": 'multipart/related; type="application/dicom", or the one '
                         "instance when application/dicom is asked for.",
          "content": {"multipart/related": {"schema": _BINARY}, DICOM: {"schema": _BINARY}}},
    406: {}}
BULK_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The value, in a multipart/related body or bare.",
          "content": {"multipart/related": {"schema": _BINARY},
                      OCTET_STREAM: {"schema": _BINARY}}},
    400: {}, 406: {}}
IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The image (image/jpeg by default, or image/png).",
          "content": {"image/jpeg": {"schema": _BINARY}, "image/png": {"schema": _BINARY}}},
    400: {}, 406: {}}
STORE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Every instance stored (or already archived as sent).",
          "content": {DICOM_JSON: {"schema": {"type": "object"}}}},
    202: {"description": "Some instances stored, others failed (FailedSOPSequence).",
          "content": {DICOM_JSON: {"schema": {"type": "object"}}}},
    400: {}, 406: {}, 409: {"description": "No instance stored (FailedSOPSequence).",
                            "content": {DICOM_JSON: {"schema": {"type": "object"}}}},
    415: {}, 422: {}}
STORE_BODY = {"requestBody": {"required": True, "content": {
    "multipart/related": {"schema": _BINARY}}}}

LIMIT = dicomweb_qido.LIMIT
OFFSET = dicomweb_qido.OFFSET
FUZZY = dicomweb_qido.FUZZY
INCLUDE = dicomweb_qido.INCLUDE
FRAMES = Path(pattern=dicomweb_pixels.FRAME_LIST, max_length=10_000,
              description="Frame numbers from 1, comma-separated.")
FRAME = Path(pattern=r"^[1-9][0-9]{0,8}$", description="A frame number, from 1.")
TAG = Path(pattern=dicomweb_pixels.TAG, description="The element's tag, 8 hex digits.")
WINDOW = Query(None, max_length=100, description="center,width[,function] (linear, "
               "linear-exact, sigmoid).")
VIEWPORT = Query(None, max_length=40, description="vw,vh: width and height in pixels.")
QUALITY = Query(None, ge=1, le=100, description="JPEG quality, 1-100.")


def _add(method: str, path: str, endpoint: Callable[..., Any], permission: Permission,
         action: str, responses: dict[int | str, dict[str, Any]],
         openapi_extra: dict[str, Any] | None = None) -> None:
    """The route at both places: ``/dicomweb{path}`` and ``/projects/{project}/dicomweb
    {path}``."""
    not_found: dict[int | str, dict[str, Any]] = {404: {}}
    for base, access, extra in ((GLOBAL_BASE, signed_in, not_found),
                                (PROJECT_BASE, project_access(permission, action), {})):
        router.add_api_route(f"{base}{path}", endpoint, methods=[method], dependencies=[access],
                             response_class=Response, responses={**responses, **extra},
                             openapi_extra=openapi_extra)


# -- QIDO-RS ----------------------------------------------------------------------------------
def search_for_studies(request: Request, limit: int = LIMIT, offset: int = OFFSET,
                       fuzzymatching: bool = FUZZY, includefield: list[str] = INCLUDE
                       ) -> Response:
    """Search for studies (QIDO-RS, PS3.18 10.6): `{attribute}={value}` filters in DICOM's
    matching syntax, `includefield`, `fuzzymatching`, `limit`, `offset`."""
    return dicomweb_qido.search(request, Level.STUDY, limit=limit, offset=offset,
                                fuzzy=fuzzymatching, include=includefield)


def search_for_study_series(request: Request, study_uid: str = STUDY_UID,
                            limit: int = LIMIT, offset: int = OFFSET,
                            fuzzymatching: bool = FUZZY, includefield: list[str] = INCLUDE
                            ) -> Response:
    """Search for the series of a study (QIDO-RS)."""
    return dicomweb_qido.search(request, Level.SERIES, limit=limit, offset=offset,
                                fuzzy=fuzzymatching, include=includefield, study_uid=study_uid)


def search_for_series(request: Request, limit: int = LIMIT, offset: int = OFFSET,
                      fuzzymatching: bool = FUZZY, includefield: list[str] = INCLUDE
                      ) -> Response:
    """Search for series (QIDO-RS)."""
    return dicomweb_qido.search(request, Level.SERIES, limit=limit, offset=offset,
                                fuzzy=fuzzymatching, include=includefield)


def search_for_series_instances(request: Request, study_uid: str = STUDY_UID,
                                series_uid: str = SERIES_UID, limit: int = LIMIT,
                                offset: int = OFFSET, fuzzymatching: bool = FUZZY,
                                includefield: list[str] = INCLUDE) -> Response:
    """Search for the instances of a series (QIDO-RS)."""
    return dicomweb_qido.search(request, Level.INSTANCE, limit=limit, offset=offset,
                                fuzzy=fuzzymatching, include=includefield, study_uid=study_uid,
                                series_uid=series_uid)


def search_for_study_instances(request: Request, study_uid: str = STUDY_UID,
                               limit: int = LIMIT, offset: int = OFFSET,
                               fuzzymatching: bool = FUZZY, includefield: list[str] = INCLUDE
                               ) -> Response:
    """Search for the instances of a study (QIDO-RS)."""
    return dicomweb_qido.search(request, Level.INSTANCE, limit=limit, offset=offset,
                                fuzzy=fuzzymatching, include=includefield, study_uid=study_uid)


def search_for_instances(request: Request, limit: int = LIMIT, offset: int = OFFSET,
                         fuzzymatching: bool = FUZZY, includefield: list[str] = INCLUDE
                         ) -> Response:
    """Search for instances (QIDO-RS)."""
    return dicomweb_qido.search(request, Level.INSTANCE, limit=limit, offset=offset,
                                fuzzy=fuzzymatching, include=includefield)


_add("GET", "/studies", search_for_studies, Permission.READ, "search", SEARCH_RESPONSES)
_add("GET", "/studies/{study_uid}/series", search_for_study_series, Permission.READ, "search",
     SEARCH_RESPONSES)
_add("GET", "/series", search_for_series, Permission.READ, "search", SEARCH_RESPONSES)
_add("GET", "/studies/{study_uid}/series/{series_uid}/instances", search_for_series_instances,
     Permission.READ, "search", SEARCH_RESPONSES)
_add("GET", "/studies/{study_uid}/instances", search_for_study_instances, Permission.READ,
     "search", SEARCH_RESPONSES)
_add("GET", "/instances", search_for_instances, Permission.READ, "search", SEARCH_RESPONSES)


# -- WADO-RS: instances and metadata ----------------------------------------------------------
def retrieve_study(request: Request, study_uid: str = STUDY_UID) -> Response:
    """The study's instances (WADO-RS, PS3.18 10.4): multipart/related;
    type="application/dicom", each as stored unless a transfer-syntax is asked for."""
    set_audit(request, action="download")
    return dicomweb_wado.retrieve(request, study_uid)


def retrieve_series(request: Request, study_uid: str = STUDY_UID,
                    series_uid: str = SERIES_UID) -> Response:
    """The series' instances (WADO-RS)."""
    set_audit(request, action="download")
    return dicomweb_wado.retrieve(request, study_uid, series_uid)


def retrieve_instance(request: Request, study_uid: str = STUDY_UID,
                      series_uid: str = SERIES_UID, sop_uid: str = SOP_UID) -> Response:
    """The instance (WADO-RS)."""
    set_audit(request, action="download")
    return dicomweb_wado.retrieve(request, study_uid, series_uid, sop_uid)


def retrieve_study_metadata(request: Request, study_uid: str = STUDY_UID) -> Response:
    """The headers of the study's instances, as DICOM JSON (WADO-RS)."""
    set_audit(request, action="read")
    return dicomweb_wado.metadata(request, study_uid)


def retrieve_series_metadata(request: Request, study_uid: str = STUDY_UID,
                             series_uid: str = SERIES_UID) -> Response:
    """The headers of the series' instances, as DICOM JSON (WADO-RS)."""
    set_audit(request, action="read")
    return dicomweb_wado.metadata(request, study_uid, series_uid)


def retrieve_instance_metadata(request: Request, study_uid: str = STUDY_UID,
                               series_uid: str = SERIES_UID, sop_uid: str = SOP_UID
                               ) -> Response:
    """The instance's header, as DICOM JSON (WADO-RS)."""
    set_audit(request, action="read")
    return dicomweb_wado.metadata(request, study_uid, series_uid, sop_uid)


_SERIES = "/studies/{study_uid}/series/{series_uid}"
_INSTANCE = f"{_SERIES}/instances/{{sop_uid}}"
_add("GET", "/studies/{study_uid}", retrieve_study, Permission.DOWNLOAD, "download",
     MULTIPART_RESPONSES)
_add("GET", _SERIES, retrieve_series, Permission.DOWNLOAD, "download", MULTIPART_RESPONSES)
_add("GET", _INSTANCE, retrieve_instance, Permission.DOWNLOAD, "download", INSTANCE_RESPONSES)
_add("GET", "/studies/{study_uid}/metadata", retrieve_study_metadata, Permission.READ, "read",
     METADATA_RESPONSES)
_add("GET", f"{_SERIES}/metadata", retrieve_series_metadata, Permission.READ, "read",
     METADATA_RESPONSES)
_add("GET", f"{_INSTANCE}/metadata", retrieve_instance_metadata, Permission.READ, "read",
     METADATA_RESPONSES)


# -- WADO-RS: frames, bulk data, rendered, thumbnails -----------------------------------------
def retrieve_instance_frames(request: Request, study_uid: str = STUDY_UID,
                             series_uid: str = SERIES_UID, sop_uid: str = SOP_UID,
                             frame_list: str = FRAMES) -> Response:
    """Frames of the instance, one part each: uncompressed (application/octet-stream), or
    as stored with transfer-syntax=* (WADO-RS)."""
    set_audit(request, action="download")
    return dicomweb_pixels.frames(request, study_uid, series_uid, sop_uid, frame_list)


def retrieve_bulkdata(request: Request, study_uid: str = STUDY_UID,
                      series_uid: str = SERIES_UID, sop_uid: str = SOP_UID, tag: str = TAG
                      ) -> Response:
    """The value of one binary element of the instance, e.g. 7FE00010 (WADO-RS)."""
    set_audit(request, action="download")
    return dicomweb_pixels.bulkdata(request, study_uid, series_uid, sop_uid, tag)


def retrieve_instance_rendered(request: Request, study_uid: str = STUDY_UID,
                               series_uid: str = SERIES_UID, sop_uid: str = SOP_UID,
                               window: str | None = WINDOW, viewport: str | None = VIEWPORT,
                               quality: int | None = QUALITY) -> Response:
    """The instance's first frame rendered as image/jpeg or image/png (WADO-RS)."""
    set_audit(request, action="download")
    return dicomweb_pixels.rendered(request, study_uid, series_uid, sop_uid, 1, window=window,
                                    viewport=viewport, quality=quality)


def retrieve_frame_rendered(request: Request, study_uid: str = STUDY_UID,
                            series_uid: str = SERIES_UID, sop_uid: str = SOP_UID,
                            frame: str = FRAME, window: str | None = WINDOW,
                            viewport: str | None = VIEWPORT, quality: int | None = QUALITY
                            ) -> Response:
    """One frame rendered as image/jpeg or image/png (WADO-RS)."""
    set_audit(request, action="download")
    return dicomweb_pixels.rendered(request, study_uid, series_uid, sop_uid, int(frame),
                                    window=window, viewport=viewport, quality=quality)


def retrieve_study_thumbnail(request: Request, study_uid: str = STUDY_UID,
                             viewport: str | None = VIEWPORT) -> Response:
    """A thumbnail of the study: the middle image of its first series (WADO-RS)."""
    set_audit(request, action="download")
    return dicomweb_pixels.thumbnail(request, study_uid, viewport=viewport)


def retrieve_series_thumbnail(request: Request, study_uid: str = STUDY_UID,
                              series_uid: str = SERIES_UID, viewport: str | None = VIEWPORT
                              ) -> Response:
    """A thumbnail of the series: its middle image (WADO-RS)."""
    set_audit(request, action="download")
    return dicomweb_pixels.thumbnail(request, study_uid, series_uid, viewport=viewport)


def retrieve_instance_thumbnail(request: Request, study_uid: str = STUDY_UID,
                                series_uid: str = SERIES_UID, sop_uid: str = SOP_UID,
                                viewport: str | None = VIEWPORT) -> Response:
    """A thumbnail of the instance (WADO-RS)."""
    set_audit(request, action="download")
    return dicomweb_pixels.thumbnail(request, study_uid, series_uid, sop_uid,
                                     viewport=viewport)


_add("GET", f"{_INSTANCE}/frames/{{frame_list}}", retrieve_instance_frames,
     Permission.DOWNLOAD, "download", MULTIPART_RESPONSES)
_add("GET", f"{_INSTANCE}/bulkdata/{{tag}}", retrieve_bulkdata, Permission.DOWNLOAD,
     "download", BULK_RESPONSES)
_add("GET", f"{_INSTANCE}/rendered", retrieve_instance_rendered, Permission.DOWNLOAD,
     "download", IMAGE_RESPONSES)
_add("GET", f"{_INSTANCE}/frames/{{frame}}/rendered", retrieve_frame_rendered,
     Permission.DOWNLOAD, "download", IMAGE_RESPONSES)
_add("GET", "/studies/{study_uid}/thumbnail", retrieve_study_thumbnail, Permission.DOWNLOAD,
     "download", IMAGE_RESPONSES)
_add("GET", f"{_SERIES}/thumbnail", retrieve_series_thumbnail, Permission.DOWNLOAD,
     "download", IMAGE_RESPONSES)
_add("GET", f"{_INSTANCE}/thumbnail", retrieve_instance_thumbnail, Permission.DOWNLOAD,
     "download", IMAGE_RESPONSES)


# -- STOW-RS ----------------------------------------------------------------------------------
async def store_instances(request: Request) -> Response:
    """Store DICOM instances (STOW-RS, PS3.18 10.5): multipart/related;
    type="application/dicom", one file per part. Under /dicomweb: 400, store into a
    project's address."""
    set_audit(request, action="write")
    return await dicomweb_stow.store(request)


async def store_study_instances(request: Request, study_uid: str = STUDY_UID) -> Response:
    """Store DICOM instances of one study (STOW-RS): a part of another study is refused
    (FailureReason A900)."""
    set_audit(request, action="write")
    return await dicomweb_stow.store(request, study_uid)


_add("POST", "/studies", store_instances, Permission.WRITE, "write", STORE_RESPONSES,
     STORE_BODY)
_add("POST", "/studies/{study_uid}", store_study_instances, Permission.WRITE, "write",
     STORE_RESPONSES, STORE_BODY)
