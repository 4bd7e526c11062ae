"""WADO-RS: instances and metadata (PS3.18 10.4) of a study, a series or an instance.

Instances are streamed as multipart/related, one object read from the store after another
(never a whole study in memory); an instance that must change transfer syntax is converted by
``dicom.pixels.transcode`` (406 when it cannot be made in any syntax the client accepts: the
first is converted before the response starts, so that a refusal is a clean 406).

Metadata is the DICOM JSON stored in the index at ingest, with each ``BulkDataURI`` made
absolute (the instance's ``/bulkdata/{tag}``) and Pixel Data given one, as viewers (OHIF)
expect. It is streamed as a JSON array, the index read ``METADATA_CHUNK`` instances at a time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from fastapi import Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool

from imagebank.api import multipart
from imagebank.api.dicomweb_common import (
    METADATA_CHUNK,
    base_url,
    instances,
    queries,
)
from imagebank.api.dicomweb_media import DICOM, DicomChoice, negotiate_dicom, negotiate_json
from imagebank.api.security import runtime_of
from imagebank.dicom import pixels
from imagebank.domain.access import Permission
from imagebank.domain.errors import NotAcceptableError
from imagebank.storage.base import ObjectStore

log = logging.getLogger("imagebank.api")

CHUNK = 1024 * 1024
#: Transfer syntaxes whose Pixel Data is native (not encapsulated).
NATIVE_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1",
                             "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"})
_BULK_PREFIX = '"BulkDataURI":"bulkdata/'


def instance_url(base: str, row: dict[str, Any]) -> str:
    return (f"{base}/studies/{row['study_instance_uid']}/series/"
            f"{row['series_instance_uid']}/instances/{row['sop_instance_uid']}")


# -- instances --------------------------------------------------------------------------------
def _convert(data: bytes, targets: tuple[str, ...]) -> tuple[str, bytes]:
    """The instance in the first of ``targets`` it can be converted to."""
    for syntax in targets:
        try:
            return syntax, pixels.transcode(data, syntax)
        except NotAcceptableError:
            continue
    raise NotAcceptableError(
        "An instance cannot be converted to any transfer syntax the Accept header asks for; "
        "ask for transfer-syntax=* to have each instance as it is stored.")


def guarded(chunks: Iterator[bytes], what: str) -> Iterator[bytes]:
    """``chunks``, stopped short (no closing boundary, no closing bracket: a client sees a
    malformed body, never a complete-looking one) with one log line if producing them fails
    once the response has started: no traceback, no object key, no patient data."""
    try:
        yield from chunks
    except Exception as exc:  # noqa: BLE001 - the status line is sent: all we can do is stop
        log.error("%s stopped part way: %s", what, getattr(exc, "code", type(exc).__name__))


def _read(store: ObjectStore, key: str) -> Iterator[bytes]:
    with store.open(key) as source:
        while block := source.read(CHUNK):
            yield block


def _plan(store: ObjectStore, rows: list[dict[str, Any]], choice: DicomChoice
          ) -> tuple[str, bytes] | None:
    """Check that every instance can be sent before the response starts: converts the first
    instance that needs it (406 otherwise) and returns its result."""
    for row in rows:
        if not choice.as_stored(row["transfer_syntax_uid"] or ""):
            if not choice.targets():
                raise NotAcceptableError("No transfer syntax asked for can be sent.")
            return _convert(store.get(row["object_key"]), choice.targets())
    return None


def retrieve(request: Request, study_uid: str, series_uid: str | None = None,
             sop_uid: str | None = None) -> Response:
    """The instances as multipart/related; type="application/dicom" (PS3.18 10.4.1)."""
    choice = negotiate_dicom(request.headers.get("accept"), single_allowed=sop_uid is not None)
    rows = instances(request, Permission.DOWNLOAD, study_uid, series_uid, sop_uid)
    store = runtime_of(request).archive.store
    first = _plan(store, rows, choice)

    def content(row: dict[str, Any]) -> tuple[str, Iterator[bytes]]:
        nonlocal first
        stored = row["transfer_syntax_uid"] or ""
        if choice.as_stored(stored):
            return stored, _read(store, row["object_key"])
        if first is not None:
            (syntax, data), first = first, None
        else:
            syntax, data = _convert(store.get(row["object_key"]), choice.targets())
        return syntax, iter((data,))

    if not choice.multipart:  # one instance, as a bare application/dicom body
        syntax, body = content(rows[0])
        return StreamingResponse(iterate_in_threadpool(guarded(body, "WADO-RS instance")),
                                 media_type=f"{DICOM}; transfer-syntax={syntax}")
    boundary = multipart.new_boundary()

    def parts() -> Iterator[bytes]:
        for index, row in enumerate(rows):
            syntax, body = content(row)
            yield (multipart.CRLF if index else b"") + multipart.part_header(
                boundary, f"{DICOM}; transfer-syntax={syntax}")
            yield from body
        yield multipart.closing(boundary)

    return StreamingResponse(iterate_in_threadpool(guarded(parts(), "WADO-RS retrieve")),
                             media_type=multipart.content_type(boundary, DICOM))


# -- metadata ---------------------------------------------------------------------------------
def metadata_text(text: str, url: str, row: dict[str, Any]) -> str:
    """The stored DICOM JSON of an instance with absolute bulk data URIs (``url``: the
    instance's), and a BulkDataURI for its Pixel Data when it is an image."""
    escaped = json.dumps(url)[1:-1]
    if _BULK_PREFIX in text:
        text = text.replace(_BULK_PREFIX, f'"BulkDataURI":"{escaped}/bulkdata/')
    text = text.strip()
    if row.get("rows") and '"7FE00010"' not in text and text.endswith("}"):
        native = (row.get("transfer_syntax_uid") or "") in NATIVE_SYNTAXES
        vr = "OW" if native and (row.get("bits_allocated") or 0) > 8 else "OB"
        pixel = f'"7FE00010":{{"vr":"{vr}","BulkDataURI":"{escaped}/bulkdata/7FE00010"}}'
        text = f"{text[:-1]}{',' if text != '{}' else ''}{pixel}}}"
    return text


def metadata(request: Request, study_uid: str, series_uid: str | None = None,
             sop_uid: str | None = None) -> Response:
    """The instances' headers as a DICOM JSON array (PS3.18 10.4.1.1.2)."""
    media_type = negotiate_json(request.headers.get("accept"))
    rows = instances(request, Permission.READ, study_uid, series_uid, sop_uid)
    base = base_url(request)
    service = queries(request)
    projects = sorted({r["project_id"] for r in rows})
    wanted = {r["id"] for r in rows}

    def texts() -> Iterator[bytes]:
        yield b"["
        emitted = False
        for start in range(0, len(rows), METADATA_CHUNK):
            chunk = rows[start:start + METADATA_CHUNK]
            found = service.instances(projects, study_uid=study_uid,
                                      sop_uids=[r["sop_instance_uid"] for r in chunk],
                                      with_metadata=True)
            by_id = {r["id"]: r for r in found if r["id"] in wanted}
            pieces = [metadata_text(full.get("metadata_json") or "{}",
                                    instance_url(base, full), full)
                      for full in (by_id.get(row["id"]) for row in chunk)
                      if full is not None]  # None: removed since the listing
            if pieces:
                yield ((',' if emitted else '') + ",".join(pieces)).encode("utf-8")
                emitted = True
        yield b"]"

    if len(rows) <= METADATA_CHUNK:  # small: one answer with its length
        return Response(b"".join(texts()), media_type=media_type)
    return StreamingResponse(iterate_in_threadpool(guarded(texts(), "WADO-RS metadata")),
                             media_type=media_type)
