"""multipart/related (RFC 2387) for DICOMweb: reading a request body, writing a response.

Reading (STOW-RS) is incremental: the body's chunks go into one buffer and each part is cut
out as soon as its closing delimiter has arrived, so a request's bytes are copied twice
(network chunk → buffer → the part's ``bytes``), whatever the number of parts. Writing
(WADO-RS) yields the delimiters and part headers around bodies the caller streams.

Media-type headers (``Content-Type``, each element of ``Accept``) are parsed here too:
``type; name=value; name="quoted value"`` (RFC 9110 5.6.6), names lowercased.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

from imagebank.domain.errors import InvalidInputError, UnsupportedMediaTypeError

CRLF = b"\r\n"
#: RFC 2046 5.1.1: 1-70 characters of a restricted set (we also accept what clients send).
_BOUNDARY_RE = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{1,200}$")
_PARAM_RE = re.compile(r'\s*;\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,]*)')
#: Headers of one part, at most (a part's header is a few short lines).
MAX_PART_HEADER = 16 * 1024


@dataclass(frozen=True, slots=True)
class MediaType:
    """A media type with its parameters: ``multipart/related; type="application/dicom"``."""

    type: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def quality(self) -> float:
        """The ``q`` weight of an Accept element (1 when absent or malformed)."""
        try:
            value = float(self.params.get("q", "1"))
        except ValueError:
            return 1.0
        return min(max(value, 0.0), 1.0)


def parse_media_type(text: str) -> MediaType:
    """``type/subtype; a=b; c="d"`` → MediaType (type and names lowercased)."""
    main, _, rest = text.partition(";")
    params: dict[str, str] = {}
    for match in _PARAM_RE.finditer(";" + rest if rest else ""):
        name, value = match.group(1).lower(), match.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[name] = value
    return MediaType(main.strip().lower(), params)


def split_header_list(text: str) -> list[str]:
    """A comma-separated header list, commas inside quoted strings kept (``Accept``)."""
    items: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            items.append("".join(current))
            current = []
            continue
        current.append(char)
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


# -- reading ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Part:
    """One body part: its headers (names lowercased) and its content."""

    headers: dict[str, str]
    body: bytes

    @property
    def media_type(self) -> MediaType | None:
        value = self.headers.get("content-type")
        return parse_media_type(value) if value else None


def boundary_of(content_type: MediaType) -> bytes:
    """The boundary of a multipart Content-Type (415 when it is not multipart/related)."""
    if content_type.type != "multipart/related":
        raise UnsupportedMediaTypeError(
            'Send the instances as multipart/related; type="application/dicom" (PS3.18 '
            "10.5), one DICOM file per part.")
    boundary = content_type.params.get("boundary", "")
    if not _BOUNDARY_RE.fullmatch(boundary):
        raise InvalidInputError("The multipart/related Content-Type has no valid boundary "
                                "parameter.", code="bad_multipart")
    return boundary.encode("ascii")


def _headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.split(CRLF):
        if not line.strip():
            continue
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon or not name.strip():
            raise InvalidInputError("A multipart part has a malformed header line.",
                                    code="bad_multipart")
        headers[name.strip().lower()] = value.strip()
    return headers


async def read_parts(chunks: AsyncIterator[bytes], boundary: bytes, *, limit: int,
                     max_parts: int = 100_000) -> list[Part]:
    """Every part of a multipart body, read from ``chunks`` as they arrive.

    Raises InvalidInputError (400, code ``bad_multipart`` or ``too_large``) when the body is
    not a complete multipart body with this boundary, or is larger than ``limit`` bytes.
    """
    first = b"--" + boundary
    delimiter = CRLF + first
    buffer = bytearray()
    parts: list[Part] = []
    size = 0
    started = ended = False
    headers: dict[str, str] | None = None  # of the part being read, once complete
    scan = 0  # where the search for the next delimiter resumes

    def too_large() -> InvalidInputError:
        return InvalidInputError(f"The request is larger than the limit of {limit} bytes "
                                 "(IMAGEBANK_MAX_OBJECT_SIZE); send fewer instances per "
                                 "request.", code="too_large")

    def advance() -> bool:
        """Consume what the buffer holds; False when more bytes are needed."""
        nonlocal started, ended, headers, scan
        if not started:
            at = buffer.find(first)
            if at < 0 or len(buffer) < at + len(first) + 2:
                return False
            # The preamble (anything before the first delimiter) is ignored (RFC 2046).
            del buffer[:at + len(first)]
            started = True
            return _after_delimiter()
        if headers is None:
            end = buffer.find(CRLF + CRLF)
            if end < 0:
                if len(buffer) > MAX_PART_HEADER:
                    raise InvalidInputError("A multipart part's headers never end.",
                                            code="bad_multipart")
                return False
            headers = _headers(bytes(buffer[:end]))
            del buffer[:end + 4]
            scan = 0
            return True
        end = buffer.find(delimiter, scan)
        if end < 0:
            scan = max(0, len(buffer) - len(delimiter) + 1)
            return False
        if len(buffer) < end + len(delimiter) + 2:
            scan = end
            return False
        with memoryview(buffer) as view:  # one copy, not two (a bytearray slice is a copy)
            body = bytes(view[:end])
        parts.append(Part(headers, body))
        if len(parts) > max_parts:
            raise InvalidInputError(f"A request holds at most {max_parts} parts.",
                                    code="bad_multipart")
        headers = None
        del buffer[:end + len(delimiter)]
        return _after_delimiter()

    def _after_delimiter() -> bool:
        nonlocal ended
        if buffer[:2] == b"--":
            ended = True
            return False
        # Transport padding (spaces, tabs) may follow a delimiter before its CRLF.
        stripped = 0
        while stripped < len(buffer) and buffer[stripped] in b" \t":
            stripped += 1
        if buffer[stripped:stripped + 2] != CRLF:
            if len(buffer) - stripped < 2:
                return False
            raise InvalidInputError("A multipart delimiter is not followed by a line end.",
                                    code="bad_multipart")
        del buffer[:stripped + 2]
        return True

    async for chunk in chunks:
        if ended or not chunk:
            continue  # the epilogue is ignored
        size += len(chunk)
        if size > limit:
            raise too_large()
        buffer += chunk
        while not ended and advance():
            pass
    if not ended:
        if not started:
            raise InvalidInputError("The body is not multipart/related with the boundary its "
                                    "Content-Type names.", code="bad_multipart")
        raise InvalidInputError("The multipart body ends before its closing delimiter: it "
                                "was cut short.", code="bad_multipart")
    return parts


# -- writing ----------------------------------------------------------------------------------
def new_boundary() -> str:
    return f"imagebank-{uuid.uuid4().hex}"


def content_type(boundary: str, part_type: str) -> str:
    """The Content-Type of a multipart/related response whose parts are ``part_type``."""
    return f'multipart/related; type="{part_type}"; boundary={boundary}'


def part_header(boundary: str, media_type: str, location: str | None = None) -> bytes:
    """The delimiter and headers that open a part (its body follows)."""
    lines = [f"--{boundary}", f"Content-Type: {media_type}"]
    if location:
        lines.append(f"Content-Location: {location}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def closing(boundary: str) -> bytes:
    """What follows the last part's body: its line end and the close delimiter."""
    return f"\r\n--{boundary}--\r\n".encode("latin-1")


def encode(boundary: str, parts: Iterator[tuple[str, bytes]]) -> Iterator[bytes]:
    """A whole multipart body of (media type, content) parts, piece by piece."""
    first = True
    for media_type, body in parts:
        if not first:
            yield CRLF
        first = False
        yield part_header(boundary, media_type)
        yield body
    if first:  # no parts: still a well-formed body
        yield f"--{boundary}--\r\n".encode("latin-1")
        return
    yield closing(boundary)
