"""Content negotiation for DICOMweb, in one place (PS3.18 8.7: Accept, with multipart/related's
``type`` and ``transfer-syntax`` parameters and q-values).

Each resource kind has one function that reads the ``Accept`` header and answers what to send,
or raises NotAcceptableError (406) naming what the resource can be. An absent Accept, ``*/*``
and ``multipart/*`` accept the resource's default.

Transfer syntax, decided for imagebank: an instance retrieve with no ``transfer-syntax``
parameter, or ``*``, gets each instance as it is stored (as Orthanc answers ``*``; PS3.18's
default is Explicit VR Little Endian, which would decompress compressed instances on every
retrieve). Frames follow PS3.18: ``application/octet-stream`` without a transfer syntax means
uncompressed (Explicit VR Little Endian).
"""

from __future__ import annotations

from dataclasses import dataclass

from imagebank.api.multipart import MediaType, parse_media_type, split_header_list
from imagebank.domain.errors import NotAcceptableError

ANY = "*"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
OCTET_STREAM = "application/octet-stream"
MULTIPART = "multipart/related"
_WILDCARDS = frozenset({"*/*", "multipart/*"})
#: The transfer syntax a compressed frame's media type means when none is given (PS3.18
#: Table 8.7.3-5 to -7: the first listed for each type).
_IMAGE_DEFAULT_SYNTAX = {
    "image/jpeg": "1.2.840.10008.1.2.4.50",
    "image/jls": "1.2.840.10008.1.2.4.80",
    "image/jp2": "1.2.840.10008.1.2.4.90",
    "image/jpx": "1.2.840.10008.1.2.4.92",
    "image/dicom-rle": "1.2.840.10008.1.2.5",
    "image/jxl": "1.2.840.10008.1.2.4.110",
}
RENDERED_TYPES = ("image/jpeg", "image/png")


def accepted(header: str | None) -> list[MediaType]:
    """The Accept header's media ranges, most wanted first (q=0 dropped); absent → */*."""
    if not header or not header.strip():
        return [MediaType("*/*")]
    ranges = [parse_media_type(item) for item in split_header_list(header)]
    ranges = [r for r in ranges if r.quality > 0]
    ranges.sort(key=lambda r: -r.quality)  # stable: ties keep the client's order
    return ranges


def _refuse(what: str) -> NotAcceptableError:
    return NotAcceptableError(f"None of the media types in the Accept header can be sent for "
                              f"this resource; it is available as {what}.")


def negotiate_json(header: str | None) -> str:
    """DICOM JSON resources (search results, metadata, store responses)."""
    for media in accepted(header):
        if media.type in (DICOM_JSON, "application/json"):
            return media.type
        if media.type in ("*/*", "application/*"):
            return DICOM_JSON
        if media.type == MULTIPART and media.params.get("type", "").lower() == DICOM_JSON:
            return DICOM_JSON  # PS3.18 before 2017 asked for metadata this way
    raise _refuse(f"{DICOM_JSON} (or application/json)")


@dataclass(frozen=True, slots=True)
class DicomChoice:
    """How to send DICOM instances: multipart or one bare part, and the transfer syntaxes
    acceptable in order of preference (``*``: as stored)."""

    multipart: bool
    syntaxes: tuple[str, ...]

    def as_stored(self, stored: str) -> bool:
        return ANY in self.syntaxes or stored in self.syntaxes

    def targets(self) -> tuple[str, ...]:
        """The transfer syntaxes to try converting to, most wanted first."""
        return tuple(s for s in self.syntaxes if s != ANY)


def negotiate_dicom(header: str | None, *, single_allowed: bool) -> DicomChoice:
    """Instances (study, series, instance retrieve). ``single_allowed``: a bare
    ``application/dicom`` may be answered with the one instance, not multipart."""
    found: list[tuple[bool, str]] = []
    for media in accepted(header):
        if media.type == MULTIPART:
            part = media.params.get("type", DICOM).lower()
            if part in (DICOM, "application/*", "*/*"):
                found.append((True, media.params.get("transfer-syntax", ANY).strip() or ANY))
        elif media.type in _WILDCARDS:
            found.append((True, ANY))
        elif media.type == DICOM and single_allowed:
            found.append((False, media.params.get("transfer-syntax", ANY).strip() or ANY))
    if not found:
        raise _refuse(f'{MULTIPART}; type="{DICOM}" (with a transfer-syntax parameter, or '
                      "none for each instance as stored)")
    multipart = found[0][0]
    syntaxes = tuple(dict.fromkeys(ts for mp, ts in found if mp == multipart))
    return DicomChoice(multipart, syntaxes)


def negotiate_frames(header: str | None) -> list[str]:
    """Frames and pixel data: the transfer syntaxes acceptable for each frame, in order of
    preference (``*``: as stored), for ``pixels.frames``."""
    syntaxes: list[str] = []
    for media in accepted(header):
        if media.type in _WILDCARDS:
            syntaxes.append(ANY)
            continue
        if media.type != MULTIPART:
            continue
        part = media.params.get("type", OCTET_STREAM).lower()
        given = media.params.get("transfer-syntax", "").strip()
        if part == OCTET_STREAM:
            syntaxes.append(given or EXPLICIT_VR_LITTLE_ENDIAN)
        elif part in ("*/*", "image/*", "application/*"):
            syntaxes.append(given or ANY)
        elif part in _IMAGE_DEFAULT_SYNTAX:
            syntaxes.append(given or _IMAGE_DEFAULT_SYNTAX[part])
    if not syntaxes:
        raise _refuse(f'{MULTIPART}; type="{OCTET_STREAM}" (uncompressed, or with '
                      "transfer-syntax=* as stored) or a compressed image type")
    return list(dict.fromkeys(syntaxes))


def negotiate_bulkdata(header: str | None) -> bool:
    """Bulk data: True for multipart/related (one part), False for the bare value."""
    for media in accepted(header):
        if media.type in _WILDCARDS:
            return True
        if media.type == MULTIPART and media.params.get("type", OCTET_STREAM).lower() in (
                OCTET_STREAM, "*/*", "application/*"):
            return True
        if media.type == OCTET_STREAM:
            return False
    raise _refuse(f'{MULTIPART}; type="{OCTET_STREAM}" or {OCTET_STREAM}')


def negotiate_rendered(header: str | None) -> str:
    """Rendered images and thumbnails: image/jpeg (the default) or image/png."""
    for media in accepted(header):
        if media.type in RENDERED_TYPES:
            return media.type
        if media.type in ("*/*", "image/*"):
            return "image/jpeg"
    raise _refuse(" or ".join(RENDERED_TYPES))
