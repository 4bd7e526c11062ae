"""Structural checks of a DICOM Part 10 file (PS3.10 7.1) before and after parsing its header.

Pure functions over bytes: the preamble, the ``DICM`` prefix, and a walk of the data elements
after the header (pixel data and anything that follows) to prove none is cut short. pydicom
reads a truncated value without complaint, so the walk is ours.
"""

from __future__ import annotations

import struct
import zlib

PREAMBLE_LENGTH = 128
MAGIC = b"DICM"

#: Leading bytes of formats a preamble must not carry (PS3.10 7.5 allows any content, but a
#: preamble that makes the file an executable is the DICOM/PE polyglot of CVE-2019-11687).
EXECUTABLE_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"MZ", "a Windows/DOS executable (MZ)"),
    (b"\x7fELF", "a Linux executable (ELF)"),
    (b"#!", "a script (#!)"),
    (b"\xca\xfe\xba\xbe", "a Mach-O or Java class file"),
    (b"\xcf\xfa\xed\xfe", "a Mach-O executable"),
    (b"\xce\xfa\xed\xfe", "a Mach-O executable"),
    (b"\xfe\xed\xfa", "a Mach-O executable"),
    (b"PK\x03\x04", "a ZIP or JAR archive"),
)
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*")

_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_UNDEFINED = 0xFFFFFFFF
_ITEM = (0xFFFE, 0xE000)
_ITEM_END = (0xFFFE, 0xE00D)
_SEQ_END = (0xFFFE, 0xE0DD)
_MAX_DEPTH = 64


class Truncated(Exception):
    """The data runs out before an element's declared length."""


def has_part10_magic(data: bytes) -> bool:
    return len(data) >= PREAMBLE_LENGTH + 4 and data[128:132] == MAGIC


def executable_preamble(data: bytes) -> str | None:
    """What executable format the preamble carries, or None."""
    preamble = data[:PREAMBLE_LENGTH]
    if not preamble.strip(b"\x00"):
        return None
    for signature, what in EXECUTABLE_SIGNATURES:
        if preamble.startswith(signature):
            return what
    return None


def preamble_oddity(data: bytes) -> str | None:
    """A note for a non-zero preamble that is allowed (TIFF, or anything not executable)."""
    preamble = data[:PREAMBLE_LENGTH]
    if not preamble.strip(b"\x00"):
        return None
    if preamble.startswith(TIFF_SIGNATURES):
        return "tiff_preamble"
    return "nonzero_preamble"


def dataset_offset(data: bytes) -> int:
    """Offset of the dataset: the first element after the file meta group (0002,xxxx).

    The meta group is always explicit VR little endian (PS3.10 7.1); it is walked element by
    element rather than trusting (0002,0000), which some writers omit or get wrong. Raises
    Truncated if the meta group itself runs past the end of the data.
    """
    pos, end = PREAMBLE_LENGTH + len(MAGIC), len(data)
    if pos >= end:
        raise Truncated
    declared_end = None
    if data[pos : pos + 6] == b"\x02\x00\x00\x00UL" and pos + 12 <= end:
        # (0002,0000) File Meta Information Group Length: the meta group's declared size.
        declared_end = pos + 12 + struct.unpack_from("<I", data, pos + 8)[0]
    while pos + 8 <= end:
        if struct.unpack_from("<H", data, pos)[0] != 0x0002:
            return pos
        vr = data[pos + 4 : pos + 6]
        if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
            # Meta written in implicit VR (seen in vendor files).
            length = struct.unpack_from("<I", data, pos + 4)[0]
            pos += 8
        elif vr in _LONG_VRS:
            if pos + 12 > end:
                raise Truncated
            length = struct.unpack_from("<I", data, pos + 8)[0]
            pos += 12
        else:
            length = struct.unpack_from("<H", data, pos + 6)[0]
            pos += 8
        if length == _UNDEFINED:
            raise Truncated
        pos += length
        if pos > end:
            raise Truncated
    if (pos < end and data[pos:end].strip(b"\x00")) or (
        declared_end is not None and end < declared_end
    ):
        raise Truncated
    return end


def check_elements_complete(data: bytes, offset: int, *, implicit_vr: bool,
                            little_endian: bool) -> None:
    """Walk data elements from ``offset`` to the end; raise Truncated if any is cut short."""
    end = _walk(data, offset, len(data), implicit_vr, "<" if little_endian else ">", 0, None)
    if end > len(data):
        raise Truncated


def check_deflated_complete(data: bytes, offset: int) -> None:
    """A deflated dataset (1.2.840.10008.1.2.1.99) must decompress to its end marker."""
    decompressor = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        decompressor.decompress(data[offset:])
    except zlib.error as exc:
        raise Truncated from exc
    if not decompressor.eof:
        raise Truncated


def _walk(buf: bytes, pos: int, end: int, implicit: bool, order: str, depth: int,
          stop: tuple[int, int] | None) -> int:
    """Skip elements; return the position after ``stop`` (or ``end``)."""
    if depth > _MAX_DEPTH:
        raise Truncated
    u16, u32 = order + "H", order + "I"
    while pos < end:
        if pos + 8 > end:
            # Trailing zero padding shorter than an element header is tolerated.
            if not buf[pos:end].strip(b"\x00"):
                return end
            raise Truncated
        group = struct.unpack_from(u16, buf, pos)[0]
        element = struct.unpack_from(u16, buf, pos + 2)[0]
        tag = (group, element)
        if group == 0xFFFE:
            # Item and delimitation tags: always a 4-byte length, no VR (PS3.5 7.5).
            length = struct.unpack_from(u32, buf, pos + 4)[0]
            pos += 8
            if tag == stop:
                return pos
            if tag == _ITEM:
                if length == _UNDEFINED:
                    pos = _walk(buf, pos, end, implicit, order, depth + 1, _ITEM_END)
                else:
                    pos += length
                continue
            continue
        vr = buf[pos + 4 : pos + 6]
        if implicit or not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
            # Implicit VR, or an element written implicitly inside an explicit dataset (seen
            # in vendor files; pydicom reads them too).
            length = struct.unpack_from(u32, buf, pos + 4)[0]
            pos += 8
        elif vr in _LONG_VRS:
            if pos + 12 > end:
                raise Truncated
            length = struct.unpack_from(u32, buf, pos + 8)[0]
            pos += 12
        else:
            length = struct.unpack_from(u16, buf, pos + 6)[0]
            pos += 8
        if length == _UNDEFINED:
            # A sequence, or encapsulated pixel data: items until the sequence delimiter.
            pos = _walk(buf, pos, end, implicit, order, depth + 1, _SEQ_END)
        else:
            pos += length
            if pos > end:
                raise Truncated
    if stop is not None:
        raise Truncated
    return pos
