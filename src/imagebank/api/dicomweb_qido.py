"""QIDO-RS: the Search transaction (PS3.18 10.6) over ``services.query``.

``{attributeID}={value}`` filters (keywords or tags, in DICOM's matching syntax; a UID list
may be separated by commas or backslashes), ``includefield`` (repeatable, comma-separated,
``all``), ``fuzzymatching``, ``limit`` and ``offset``. One index query per search (and one for
the stored headers when an ``includefield`` needs attributes that are not indexed).

Decided for imagebank: no match → 200 with ``[]`` (PS3.18 also allows 204; both
dicomweb-client and OHIF read an empty array); ``limit`` defaults to and is capped at 1000,
and when more matched a ``Warning: 299`` header says so (PS3.18 10.6.3); filters on
attributes that are not indexed are ignored and named in a ``Warning: 299`` header. Each match
carries its ``RetrieveURL`` (0008,1190) on the service it was found through.
"""

from __future__ import annotations

from typing import Any

from fastapi import Query, Request, Response
from pydicom.datadict import dictionary_VR, tag_for_keyword

from imagebank.api.dicomweb_common import (
    base_url,
    dumps,
    projects_in_scope,
    queries,
    warning,
)
from imagebank.api.dicomweb_media import negotiate_json
from imagebank.api.security import set_audit
from imagebank.domain.access import Permission
from imagebank.domain.model import Level
from imagebank.services.query import keyword_of

MAX_LIMIT = 1000
#: Query keys that are parameters of the search, not attributes (PS3.18 8.3.4).
PARAMETERS = frozenset({"includefield", "limit", "offset", "fuzzymatching", "orderby"})
LIMIT = Query(MAX_LIMIT, ge=1, description=f"At most this many matches (at most {MAX_LIMIT}).")
OFFSET = Query(0, ge=0, le=10_000_000, description="Skip this many matches first.")
FUZZY = Query(False, description="Case-insensitive matching of person names.")
INCLUDE = Query([], max_length=200,
                description="Attributes to return besides the defaults (keywords or tags, "
                "repeatable or comma-separated), or 'all'.")
_STUDY, _SERIES, _SOP = "0020000D", "0020000E", "00080018"


def _filters(request: Request, fixed: dict[str, str]) -> dict[str, str]:
    """The query's attribute filters by keyword (repeated keys joined as a list), with the
    path's UIDs, which win over the query's."""
    filters: dict[str, str] = {}
    for key, raw in request.query_params.multi_items():
        if key in PARAMETERS:
            continue
        keyword = keyword_of(key)
        tag = tag_for_keyword(keyword)
        value = raw
        if (tag is not None and dictionary_VR(tag) == "UI") or keyword == "ModalitiesInStudy":
            value = raw.replace(",", "\\")  # PS3.18 8.3.4.1: a list may use commas
        filters[keyword] = f"{filters[keyword]}\\{value}" if keyword in filters else value
    filters.update(fixed)
    return filters


def _include(values: list[str]) -> tuple[list[str], bool]:
    fields: list[str] = []
    everything = False
    for value in values:
        for item in (v.strip() for v in value.split(",")):
            if item.lower() == "all":
                everything = True
            elif item:
                fields.append(keyword_of(item))
    return fields, everything


def _first(dataset: dict[str, Any], tag: str) -> str | None:
    values = dataset.get(tag, {}).get("Value")
    return str(values[0]) if values else None


def _retrieve_url(base: str, level: Level, dataset: dict[str, Any]) -> str | None:
    study = _first(dataset, _STUDY)
    if study is None:
        return None
    url = f"{base}/studies/{study}"
    if level is Level.STUDY:
        return url
    series = _first(dataset, _SERIES)
    if series is None:
        return None
    url += f"/series/{series}"
    if level is Level.SERIES:
        return url
    sop = _first(dataset, _SOP)
    return f"{url}/instances/{sop}" if sop else None


def search(request: Request, level: Level, *, limit: int, offset: int, fuzzy: bool,
           include: list[str], study_uid: str | None = None,
           series_uid: str | None = None) -> Response:
    """The matches at ``level`` as DICOM JSON (PS3.18 10.6.3)."""
    media_type = negotiate_json(request.headers.get("accept"))
    fixed = {"StudyInstanceUID": study_uid} if study_uid else {}
    if series_uid:
        fixed["SeriesInstanceUID"] = series_uid
    filters = _filters(request, fixed)
    fields, everything = _include(include)
    service = queries(request)
    parsed = service.parse(level, filters, fuzzy=fuzzy, include=fields, include_all=everything)
    # The audit keeps which attributes were searched on, never their values.
    set_audit(request, action="search", detail={
        "level": level.value, "filters": sorted(k for k in filters if k not in fixed),
        "includefield": "all" if everything else len(fields)})
    limit = min(limit, MAX_LIMIT)
    project_ids = projects_in_scope(request, Permission.READ)
    matches: list[dict[str, Any]] = []
    unsupported: list[str] = list(parsed.unsupported)
    if project_ids != []:
        result = service.search(parsed, project_ids=project_ids, limit=limit + 1,
                                offset=offset)
        matches, unsupported = result.matches, result.unsupported
    headers: dict[str, str] = {}
    warnings = []
    if unsupported:
        warnings.append(warning(request, "The following attributes are not supported for "
                                f"matching: {', '.join(sorted(set(unsupported)))}"))
    if len(matches) > limit:
        matches = matches[:limit]
        warnings.append(warning(request, "The number of results exceeded the maximum "
                                "supported by the server. Additional results can be "
                                "requested."))
    if warnings:
        headers["Warning"] = ", ".join(warnings)
    base = base_url(request)
    for dataset in matches:
        url = _retrieve_url(base, level, dataset)
        if url is not None:
            dataset["00081190"] = {"vr": "UR", "Value": [url]}
    return Response(dumps(matches), media_type=media_type, headers=headers)

