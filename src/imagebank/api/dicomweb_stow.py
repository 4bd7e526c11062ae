"""STOW-RS: the Store transaction (PS3.18 10.5) into one project, through the shared ingest
pipeline (``Archive.receive``: the same checks, quarantine and batching as C-STORE).

The multipart body is read whole before anything is stored (a malformed body stores nothing),
then every part goes to the pipeline in one call, which answers each part's outcome. The
response is the Store Instances Response Module (PS3.18 Annex I) in DICOM JSON: 200 all
stored (an identical re-send counts as stored), 202 some failed, 409 none stored; each failure
with its Failure Reason (Table I.2-2).

Decided for imagebank: a store goes to a project, so ``POST /dicomweb/studies`` answers 400
pointing to ``/projects/{project}/dicomweb/studies``. A part whose StudyInstanceUID is not the
one in the URL is not stored (0xA900).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool
from pydicom.filereader import read_partial
from pydicom.tag import BaseTag

from imagebank.api import multipart
from imagebank.api.dicomweb_common import base_url, dumps, project_of
from imagebank.api.dicomweb_media import DICOM, OCTET_STREAM, negotiate_json
from imagebank.api.security import runtime_of, set_audit
from imagebank.dicom.part10 import Truncated, dataset_offset
from imagebank.domain.errors import InvalidInputError, UnsupportedMediaTypeError
from imagebank.domain.model import Outcome
from imagebank.services.archive import Archive

#: Failure Reason (0008,1197) values, PS3.18 Table I.2-2 and PS3.7 C.
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111  # another object with this SOPInstanceUID is archived
SOP_CLASS_NOT_SUPPORTED = 0x0122
#: The ingest pipeline's quarantine reasons as Failure Reasons.
FAILURE_REASONS: dict[str, int] = {
    "empty": CANNOT_UNDERSTAND, "not_dicom": CANNOT_UNDERSTAND,
    "unreadable": CANNOT_UNDERSTAND, "truncated": CANNOT_UNDERSTAND,
    "executable_preamble": CANNOT_UNDERSTAND, "missing_uid": DOES_NOT_MATCH,
    "too_large": OUT_OF_RESOURCES, "dicomdir": SOP_CLASS_NOT_SUPPORTED,
    "conflict": DUPLICATE_SOP_INSTANCE, "patient_mismatch": DOES_NOT_MATCH,
}
_LAST_PROBED = 0x0020000E  # SeriesInstanceUID: the last of the UIDs read from each part
_PROBED: list[BaseTag | int] = [BaseTag(t) for t in (0x00080016, 0x00080018, 0x0020000D,
                                                    0x0020000E)]
_PART_TYPES = frozenset({DICOM, OCTET_STREAM})


@dataclass(slots=True)
class _Item:
    """One part: its identity as far as it can be read, and what became of it."""

    sop_class: str | None = None
    sop_instance: str | None = None
    study: str | None = None
    series: str | None = None
    failure: int | None = None


_WANTED = {0x00080016: 0, 0x00080018: 1, 0x0020000D: 2, 0x0020000E: 3}
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                       b"UR", b"UT", b"UV"})
_IMPLICIT = "1.2.840.10008.1.2"
_NOT_WALKED = frozenset({"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"})  # deflate, BE


def _walk_uids(data: bytes) -> _Item | None:
    """The UIDs read straight from the bytes of a little endian Part 10 file whose elements
    up to (0020,000E) have defined lengths (the common case: ~30 µs); None otherwise."""
    if data[128:132] != b"DICM":
        return None
    try:
        end = dataset_offset(data)
    except Truncated:
        return None
    pos, syntax = 132, ""
    while pos + 8 <= end:  # the file meta group: explicit VR little endian
        group, element = struct.unpack_from("<HH", data, pos)
        vr = data[pos + 4:pos + 6]
        if vr in _LONG_VRS:
            length, header = struct.unpack_from("<I", data, pos + 8)[0], 12
        else:
            length, header = struct.unpack_from("<H", data, pos + 6)[0], 8
        if (group, element) == (0x0002, 0x0010):
            syntax = data[pos + header:pos + header + length].decode("ascii", "replace")
            syntax = syntax.strip("\x00 ")
        pos += header + length
    if not syntax or syntax in _NOT_WALKED:
        return None
    implicit = syntax == _IMPLICIT
    found: list[str | None] = [None, None, None, None]
    pos, size = end, len(data)
    while pos + 8 <= size:
        group, element = struct.unpack_from("<HH", data, pos)
        tag = group << 16 | element
        if tag > _LAST_PROBED:
            break
        vr = data[pos + 4:pos + 6]
        if implicit:
            length, header = struct.unpack_from("<I", data, pos + 4)[0], 8
        elif not (vr.isalpha() and vr.isupper()):
            return None  # not explicit VR after all (seen in vendor files): pydicom copes
        elif vr in _LONG_VRS:
            length, header = struct.unpack_from("<I", data, pos + 8)[0], 12
        else:
            length, header = struct.unpack_from("<H", data, pos + 6)[0], 8
        if length == 0xFFFFFFFF or pos + header + length > size:
            return None  # a sequence of undefined length, or cut short: pydicom judges
        index = _WANTED.get(tag)
        if index is not None:
            value = data[pos + header:pos + header + length].decode("ascii", "replace")
            found[index] = value.strip("\x00 ") or None
        pos += header + length
    return _Item(found[0], found[1], found[2], found[3])


def _probe(data: bytes) -> _Item:
    """The part's SOP Class, SOP Instance, Study and Series UIDs (reading only the elements
    up to them); empty when the part cannot be read as DICOM (the pipeline says why)."""
    walked = _walk_uids(data)
    if walked is not None:
        return walked
    try:
        ds = read_partial(io.BytesIO(data), stop_when=lambda tag, vr, length:
                          int(tag) > _LAST_PROBED, specific_tags=_PROBED)
        values = [ds.get(tag) for tag in _PROBED]
    except Exception:  # noqa: BLE001 - unreadable: the ingest pipeline records the reason
        return _Item()
    sop_class, sop_instance, study, series = (
        str(v.value).strip("\x00 ") or None if v is not None and v.value else None
        for v in values)
    return _Item(sop_class, sop_instance, study, series)


def part10(data: bytes) -> bytes:
    """The part as a Part 10 file: one that starts with its file meta header but lacks the
    preamble and ``DICM`` prefix (what dicomweb-client and pydicom's ``dcmwrite`` send by
    default) gets them; anything else is left to the pipeline to judge."""
    if (data[:2] == b"\x02\x00" and data[4:6].isalpha() and data[4:6].isupper()
            and data[128:132] != b"DICM"):
        return bytes(128) + b"DICM" + data
    return data


def _ui(value: str | None) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def _store(archive: Archive, project: str, bodies: list[bytes], study_uid: str | None
           ) -> tuple[list[_Item], dict[str, int]]:
    """Store the parts that may be stored: each part's identity and failure (None: stored or
    already archived as is), and the pipeline's counts."""
    items = [_probe(body) for body in bodies]
    pending: list[int] = []
    for index, item in enumerate(items):
        if study_uid is not None and item.study is not None and item.study != study_uid:
            item.failure = DOES_NOT_MATCH
        else:
            pending.append(index)
    if not pending:
        return items, {"stored": 0, "duplicates": 0}
    # One call: the pipeline answers each object's outcome in order (a StorageError means
    # nothing of this request was stored, and the client is told the archive is unavailable).
    received = archive.receive([(bodies[i], f"stow-rs part {i + 1}") for i in pending],
                               project)
    for index, outcome in zip(pending, received.objects, strict=True):
        if outcome.outcome not in (Outcome.STORED, Outcome.DUPLICATE):
            items[index].failure = FAILURE_REASONS.get(outcome.reason or "",
                                                       PROCESSING_FAILURE)
    counts = {"stored": received.summary.stored, "duplicates": received.summary.duplicates}
    return items, counts


async def store(request: Request, study_uid: str | None = None) -> Response:
    """Store the instances of a multipart/related request (PS3.18 10.5)."""
    project = project_of(request)
    if project is None:
        raise InvalidInputError(
            "Instances are stored into a project: POST them to "
            "/projects/{project}/dicomweb/studies.", code="project_required")
    media_type = negotiate_json(request.headers.get("accept"))
    content_type = multipart.parse_media_type(request.headers.get("content-type", ""))
    boundary = multipart.boundary_of(content_type)
    declared = content_type.params.get("type", DICOM).lower()
    if declared not in _PART_TYPES:
        raise UnsupportedMediaTypeError(
            'Only DICOM files can be stored here: send multipart/related; '
            'type="application/dicom".')
    archive = runtime_of(request).archive
    limit = archive.settings.max_object_size
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise InvalidInputError(f"The request is larger than the limit of {limit} bytes "
                                "(IMAGEBANK_MAX_OBJECT_SIZE); send fewer instances per "
                                "request.", code="too_large")
    parts = await multipart.read_parts(request.stream(), boundary, limit=limit)
    if not parts:
        raise InvalidInputError("The multipart body holds no parts.", code="bad_multipart")
    for part in parts:
        part_type = part.media_type
        if part_type is not None and part_type.type not in _PART_TYPES:
            raise UnsupportedMediaTypeError(
                "Every part must be a DICOM file (Content-Type: application/dicom); nothing "
                "was stored.")
    bodies = [part10(part.body) for part in parts]
    del parts
    items, counts = await run_in_threadpool(_store, archive, project, bodies, study_uid)
    return _response(request, media_type, items, counts, study_uid)


def _response(request: Request, media_type: str, items: list[_Item], counts: dict[str, int],
              study_uid: str | None) -> Response:
    base = base_url(request)
    referenced: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    reasons: dict[str, int] = {}
    for item in items:
        reference = {"00081150": _ui(item.sop_class), "00081155": _ui(item.sop_instance)}
        if item.failure is None:
            url: dict[str, Any] = {"vr": "UR"}
            if item.study and item.series and item.sop_instance:
                url["Value"] = [f"{base}/studies/{item.study}/series/{item.series}/"
                                f"instances/{item.sop_instance}"]
            referenced.append({**reference, "00081190": url})
        else:
            failed.append({**reference, "00081197": {"vr": "US", "Value": [item.failure]}})
            key = f"{item.failure:04X}"
            reasons[key] = reasons.get(key, 0) + 1
    studies = {item.study for item in items if item.failure is None}
    study = study_uid or (next(iter(studies)) if len(studies) == 1 else None)
    body: dict[str, Any] = {"00081190": {"vr": "UR", "Value": [f"{base}/studies/{study}"]}
                            if study else {"vr": "UR"}}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": referenced}
    status = 200 if not failed else 202 if referenced else 409
    set_audit(request, detail={"parts": len(items), "stored": counts["stored"],
                               "duplicates": counts["duplicates"], "failed": len(failed),
                               "failure_reasons": reasons})
    return Response(dumps(body), status_code=status, media_type=media_type)
