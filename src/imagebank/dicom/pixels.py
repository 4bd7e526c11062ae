"""Pixel data of one stored instance for WADO-RS: frames, bulk data, transcoding (rendering is
in ``dicom.rendering``, on the same reading and decoding).

Every function takes the Part 10 bytes of one instance and parses its header once, with the
bulk values left in place (``dcmread(defer_size=...)``): native frames are sliced out of the
stored bytes and encapsulated frames are cut with pydicom's encapsulation helpers (Basic and
Extended Offset Tables, several fragments per frame), so nothing is decoded unless asked for.

PS3.18 10.4 (Retrieve transaction) resources, with the media types of PS3.18 8.7.3:

- :func:`frames`: frames in their stored transfer syntax, or uncompressed.
- :func:`bulkdata`: the value of one bulk data element.
- ``rendering.render`` / ``rendering.thumbnail``: rendered frames (PS3.18 8.3.5.1 viewport,
  window, quality), with the grayscale pipeline of PS3.3 C.11.
- :func:`transcode`: the instance re-encoded uncompressed (PS3.5 A.1, A.2).

Decoders: pydicom's own (RLE, native), Pillow (8-bit JPEG, JPEG 2000), GDCM (JPEG lossless,
JPEG-LS, JPEG 2000) and pylibjpeg-openjpeg (JPEG 2000, HTJ2K); 12-bit lossy JPEG (Process 4)
has no decoder with a permissive licence (pylibjpeg-libjpeg is GPL). A syntax none of them
decodes gives :class:`NotAcceptableError` (frames, bulk data, transcoding) or an
:class:`InvalidInputError` with code ``cannot_render`` (rendering): never a traceback. Errors
name frame numbers, tags and transfer syntaxes only, never a value of the header.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pydicom
import pydicom.config
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import (
    encapsulate,
    generate_fragments,
    generate_frames,
    get_frame,
    parse_basic_offsets,
)
from pydicom.filewriter import dcmwrite
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import as_pixel_options, pack_bits
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from imagebank.dicom.synthetic import IMPLEMENTATION_UID
from imagebank.domain.errors import InvalidInputError, NotAcceptableError, NotFoundError

ENCAPSULATED_UNCOMPRESSED = UID("1.2.840.10008.1.2.1.98")
OCTET_STREAM = "application/octet-stream"
IMPLEMENTATION_VERSION = "IMAGEBANK"

#: PS3.18 Table 8.7.3-5 (single-frame and multi-frame media types of compressed pixel data);
#: the transfer syntaxes not named here (native ones) are ``application/octet-stream``.
MEDIA_TYPES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51": "image/jpeg",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.57": "image/jpeg",  # JPEG Lossless (Process 14)
    "1.2.840.10008.1.2.4.70": "image/jpeg",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.5": "image/dicom-rle",  # RLE Lossless
    "1.2.840.10008.1.2.4.80": "image/jls",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": "image/jls",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90": "image/jp2",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91": "image/jp2",  # JPEG 2000
    "1.2.840.10008.1.2.4.92": "image/jpx",  # JPEG 2000 Part 2 Multi-component Lossless
    "1.2.840.10008.1.2.4.93": "image/jpx",  # JPEG 2000 Part 2 Multi-component
    "1.2.840.10008.1.2.4.201": "image/jphc",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202": "image/jphc",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203": "image/jphc",  # HTJ2K
    "1.2.840.10008.1.2.4.110": "image/jxl",  # JPEG XL Lossless
    "1.2.840.10008.1.2.4.111": "image/jxl",  # JPEG XL JPEG Recompression
    "1.2.840.10008.1.2.4.112": "image/jxl",  # JPEG XL
    "1.2.840.10008.1.2.4.100": "video/mpeg",  # MPEG2 Main Profile / Main Level
    "1.2.840.10008.1.2.4.100.1": "video/mpeg",
    "1.2.840.10008.1.2.4.101": "video/mpeg",  # MPEG2 Main Profile / High Level
    "1.2.840.10008.1.2.4.101.1": "video/mpeg",
    "1.2.840.10008.1.2.4.102": "video/mp4",  # MPEG-4 AVC/H.264
    "1.2.840.10008.1.2.4.102.1": "video/mp4",
    "1.2.840.10008.1.2.4.103": "video/mp4",
    "1.2.840.10008.1.2.4.103.1": "video/mp4",
    "1.2.840.10008.1.2.4.104": "video/mp4",
    "1.2.840.10008.1.2.4.104.1": "video/mp4",
    "1.2.840.10008.1.2.4.105": "video/mp4",
    "1.2.840.10008.1.2.4.105.1": "video/mp4",
    "1.2.840.10008.1.2.4.106": "video/mp4",
    "1.2.840.10008.1.2.4.106.1": "video/mp4",
    "1.2.840.10008.1.2.4.107": "video/H265",  # HEVC/H.265 Main Profile
    "1.2.840.10008.1.2.4.108": "video/H265",  # HEVC/H.265 Main 10 Profile
}

#: Uncompressed transfer syntaxes a frame can be sent in, in order of preference (frames of
#: native pixel data are the same bytes in both little endian syntaxes).
_NATIVE_TARGETS = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)

#: PS3.18 Table 8.7.4-1 rendered media types → Pillow format.
RENDERED_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF",
                    "image/jp2": "JPEG2000"}
VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")

#: (7FE0,0008) Float Pixel Data, (7FE0,0009) Double Float Pixel Data, (7FE0,0010) Pixel Data.
PIXEL_DATA = 0x7FE00010
_PIXEL_KEYWORDS = {0x7FE00010: "PixelData", 0x7FE00008: "FloatPixelData",
                   0x7FE00009: "DoubleFloatPixelData"}
_EXTENDED_OFFSETS = 0x7FE00001
_EXTENDED_LENGTHS = 0x7FE00002
_BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
#: Word size of the binary VRs, for byte swapping a big endian value.
_WORD = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
#: Values at least this long stay in the stored bytes until used.
_DEFER = 2048
_UNDEFINED = 0xFFFFFFFF
_SEQUENCE_END = (0xFFFE, 0xE0DD)
_ITEM = (0xFFFE, 0xE000)
_MAX_VIEWPORT = 8192
#: (implicit VR, little endian) as pydicom read them → transfer syntax, for a file meta
#: header without (0002,0010).
_INFERRED_SYNTAX = {(True, True): ImplicitVRLittleEndian, (False, True): ExplicitVRLittleEndian,
                    (False, False): ExplicitVRBigEndian}

# Tolerant on read, and quiet, as in header.py: validation warnings quote values.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE


# -- reading ----------------------------------------------------------------------------------


@contextmanager
def _quiet() -> Iterator[None]:
    """pydicom's warnings may quote header values (patient data): none escapes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@dataclass(frozen=True, slots=True)
class _Pixels:
    """Where one pixel data element's value lies: ``buffer[start:end]``."""

    ds: Dataset
    ts: UID
    tag: int
    vr: str
    buffer: bytes
    start: int
    end: int
    encapsulated: bool
    little_endian: bool
    frames: int

    @property
    def keyword(self) -> str:
        return _PIXEL_KEYWORDS[self.tag]

    def reader(self) -> io.BytesIO:
        """A file-like positioned at the first byte of the value (no copy of the bytes)."""
        fp = io.BytesIO(self.buffer)
        fp.seek(self.start)
        return fp

    def value(self) -> memoryview:
        return memoryview(self.buffer)[self.start : self.end]


def _open(data: bytes) -> Dataset:
    """The dataset, with bulk values deferred (read from ``data`` when used)."""
    return _read(data)[0]


def _read(data: bytes) -> tuple[Dataset, bool]:
    """The dataset, and whether its transfer syntax was inferred (none in the file meta)."""
    try:
        with _quiet():
            ds = pydicom.dcmread(io.BytesIO(data), defer_size=_DEFER)
            if ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
                # Offsets of a deflated dataset are those of the inflated stream: read whole.
                ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:
        raise InvalidInputError(
            f"The stored object cannot be read as a DICOM file ({type(exc).__name__}).",
            code="unreadable",
        ) from exc
    if not ds.file_meta.get("TransferSyntaxUID"):
        # Archived with the oddity "no_transfer_syntax": the encoding pydicom found is used.
        implicit, little = ds.original_encoding
        inferred = _INFERRED_SYNTAX.get((bool(implicit), bool(little)))
        if inferred is None:
            raise InvalidInputError("The stored object has no Transfer Syntax UID.",
                                    code="unreadable")
        ds.file_meta.TransferSyntaxUID = inferred
        return ds, True
    return ds, False


def _transfer_syntax(ds: Dataset) -> UID:
    return UID(str(ds.file_meta.TransferSyntaxUID))


class _Value(NamedTuple):
    """Where an element's value lies: ``buffer[start:end]`` (``buffer`` is the stored object
    when the value was deferred, so nothing is copied)."""

    vr: str
    buffer: bytes
    start: int
    end: int
    undefined_length: bool
    little_endian: bool


def _value(ds: Dataset, data: bytes, tag: int, *, in_sequences: bool = False) -> _Value | None:
    element = ds.get_item(tag, keep_deferred=True)
    if element is None:
        return _nested(ds, data, tag) if in_sequences else None
    little_endian = ds.original_encoding[1] is not False
    if isinstance(element, RawDataElement):
        vr = str(element.VR or _dictionary_vr(tag))
        undefined = element.length == _UNDEFINED
        if element.value is None:  # deferred: the value is still in the stored bytes
            start = element.value_tell
            end = _sequence_end(data, start) if undefined else start + element.length
            return _Value(vr, data, start, min(end, len(data)), undefined, little_endian)
        raw = bytes(element.value)
        return _Value(vr, raw, 0, len(raw), undefined, little_endian)
    assert isinstance(element, DataElement)
    value = element.value if isinstance(element.value, bytes) else b""
    return _Value(str(element.VR), value, 0, len(value), bool(element.is_undefined_length),
                  little_endian)


def _nested(ds: Dataset, data: bytes, tag: int) -> _Value | None:
    """The first occurrence of ``tag`` inside a sequence item (depth first)."""
    for key, element in list(ds._dict.items()):
        if (element.VR or _dictionary_vr(key)) != "SQ":
            continue
        for item in ds[key].value or ():
            found = _value(item, data, tag, in_sequences=True)
            if found is not None:
                return found
    return None


def _dictionary_vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


def _binary(vr: str) -> bool:
    """Whether values of ``vr`` are bulk data (ambiguous VRs such as "OB or OW" included)."""
    return any(part in _BULK_VRS for part in vr.split(" or "))


def _word(vr: str, default: int = 1) -> int:
    """Word size of a binary VR ("OB or OW" and "US or SS or OW" as OW)."""
    for part in reversed(vr.split(" or ")):
        if part in _WORD:
            return _WORD[part]
    return default


def _sequence_end(data: bytes, pos: int) -> int:
    """End of an encapsulated value (the offset of its Sequence Delimitation Item)."""
    end = len(data)
    while pos + 8 <= end:
        group, element, length = struct.unpack_from("<HHI", data, pos)
        if (group, element) == _SEQUENCE_END:
            return pos
        if (group, element) != _ITEM or length == _UNDEFINED:
            break
        pos += 8 + length
    return min(pos, end)


def _frame_count(ds: Dataset) -> int:
    try:
        n = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        n = 1
    return max(n, 1)


def _pixels(ds: Dataset, data: bytes) -> _Pixels:
    tag = next((t for t in _PIXEL_KEYWORDS if t in ds._dict), None)
    if tag is None:
        raise InvalidInputError("The instance has no pixel data (it is not an image).",
                                code="no_pixel_data")
    value = _value(ds, data, tag)
    assert value is not None
    ts = _transfer_syntax(ds)
    return _Pixels(ds=ds, ts=ts, tag=tag, vr=value.vr, buffer=value.buffer,
                   start=value.start, end=value.end,
                   encapsulated=value.undefined_length and ts.is_encapsulated,
                   little_endian=value.little_endian, frames=_frame_count(ds))


def _indices(numbers: Sequence[int], count: int) -> list[int]:
    """0-based indices of 1-based frame numbers (PS3.18 10.4: frame lists start at 1)."""
    if not numbers:
        raise InvalidInputError("No frame number was given.", code="invalid_frame")
    indices = []
    for number in numbers:
        if isinstance(number, bool) or not isinstance(number, int):
            raise InvalidInputError("Frame numbers are whole numbers from 1.",
                                    code="invalid_frame")
        if not 1 <= number <= count:
            raise NotFoundError(
                f"Frame {number} does not exist: the instance has {count} frame(s).")
        indices.append(number - 1)
    return indices


def _damaged(what: str) -> InvalidInputError:
    return InvalidInputError(f"The stored pixel data is damaged: {what}.",
                             code="damaged_pixel_data")


# -- frames -----------------------------------------------------------------------------------


def frame_count(data: bytes) -> int:
    """Number of frames of the instance's pixel data; 0 for an object without pixel data."""
    ds = _open(data)
    if not any(t in ds._dict for t in _PIXEL_KEYWORDS):
        return 0
    return _frame_count(ds)


def media_type(transfer_syntax_uid: str) -> str:
    """The media type of frames in ``transfer_syntax_uid``, with its ``transfer-syntax``
    parameter (PS3.18 8.7.3.5)."""
    base = MEDIA_TYPES.get(str(transfer_syntax_uid), OCTET_STREAM)
    return f"{base}; transfer-syntax={transfer_syntax_uid}"


def frames(data: bytes, numbers: Sequence[int], accept: Sequence[str]) -> tuple[str, list[bytes]]:
    """The frames ``numbers`` (1-based) and their media type (PS3.18 10.4, 8.7.3).

    ``accept`` lists the transfer syntax UIDs the client takes (``"*"``: any). Native pixel
    data is sent as is (little endian, Explicit VR Little Endian); encapsulated frames as
    stored when their syntax is accepted, else decoded when an uncompressed syntax is.
    """
    ds = _open(data)
    px = _pixels(ds, data)
    indices = _indices(numbers, px.frames)
    wanted = {str(a).strip().strip('"') for a in accept}
    anything = "*" in wanted
    if not px.encapsulated:
        target = ExplicitVRLittleEndian if anything else _native_target(wanted, px.ts)
        return media_type(target), [_native_frame(px, i) for i in indices]
    if anything or px.ts in wanted:
        if MEDIA_TYPES.get(px.ts, "").startswith("video/"):
            raise NotAcceptableError(
                f"The pixel data is a video ({px.ts.name}): its frames cannot be sent one by "
                "one. Retrieve the instance or its bulk data instead.")
        return media_type(px.ts), _encoded_frames(px, indices)
    target = _native_target(wanted, px.ts)
    if px.ts == ENCAPSULATED_UNCOMPRESSED:
        return media_type(target), _encoded_frames(px, indices)
    return media_type(target), _decoded_frames(px, indices)


def _native_target(wanted: set[str], stored: UID) -> UID:
    for target in _NATIVE_TARGETS:
        if target in wanted:
            return target
    raise NotAcceptableError(
        f"The frames are stored as {stored.name}; they can be sent in that transfer syntax or "
        f"uncompressed ({ExplicitVRLittleEndian}), and this archive does not re-compress.")


def _bits_per_frame(px: _Pixels) -> int:
    ds = px.ds
    samples = int(ds.get("SamplesPerPixel") or 1)
    if str(ds.get("PhotometricInterpretation", "")) == "YBR_FULL_422" and samples == 3:
        samples = 2  # PS3.3 C.7.6.3.1.2: two chroma samples per pair of pixels
    return int(ds.Rows) * int(ds.Columns) * samples * int(ds.BitsAllocated)


def _native_frame(px: _Pixels, index: int) -> bytes:
    """Frame ``index`` of native pixel data as little endian bytes, cut from the value."""
    try:
        bits = _bits_per_frame(px)
        bits_allocated = int(px.ds.BitsAllocated)
    except (AttributeError, TypeError, ValueError) as exc:
        raise _damaged("the image pixel attributes are missing or invalid") from exc
    value = px.value()
    first_bit = index * bits
    if first_bit + bits > len(value) * 8:
        raise _damaged(f"frame {index + 1} lies past the end of the pixel data")
    if first_bit % 8 == 0 and bits % 8 == 0:
        frame = bytes(value[first_bit // 8 : (first_bit + bits) // 8])
    else:
        # Bit-packed data (Bits Allocated 1) whose frames do not start on a byte boundary.
        raw = np.frombuffer(value[first_bit // 8 : -(-(first_bit + bits) // 8)], np.uint8)
        unpacked = np.unpackbits(raw, bitorder="little")[first_bit % 8 : first_bit % 8 + bits]
        return np.packbits(unpacked, bitorder="little").tobytes()
    if not px.little_endian and bits_allocated > 8:
        frame = _swap(frame, _word(px.vr, bits_allocated // 8))
    return frame


def _swap(value: bytes, word: int) -> bytes:
    """Big endian words to little endian."""
    if word < 2 or len(value) % word:
        return value
    return np.frombuffer(value, np.dtype(f">u{word}")).astype(f"<u{word}").tobytes()


def _extended_offsets(px: _Pixels) -> tuple[bytes, bytes] | None:
    ds = px.ds
    if _EXTENDED_OFFSETS in ds._dict and _EXTENDED_LENGTHS in ds._dict:
        offsets, lengths = ds[_EXTENDED_OFFSETS].value, ds[_EXTENDED_LENGTHS].value
        if offsets and lengths:
            return bytes(offsets), bytes(lengths)
    return None


def _encoded_frames(px: _Pixels, indices: Sequence[int]) -> list[bytes]:
    """Frames of encapsulated pixel data as stored (PS3.5 A.4: fragments of a frame joined)."""
    wanted = set(indices)
    found: dict[int, bytes] = {}
    extended = _extended_offsets(px)
    try:
        with _quiet():
            fp = px.reader()
            has_offsets = extended is not None or bool(parse_basic_offsets(fp))
            fp.seek(px.start)
            if len(wanted) == 1 and has_offsets:
                (index,) = wanted
                found[index] = get_frame(fp, index, number_of_frames=px.frames,
                                         extended_offsets=extended)
            else:
                for i, frame in enumerate(generate_frames(fp, number_of_frames=px.frames,
                                                          extended_offsets=extended)):
                    if i in wanted:
                        found[i] = frame
                        if len(found) == len(wanted):
                            break
    except (ValueError, struct.error, EOFError) as exc:
        raise _damaged("its fragments cannot be split into frames") from exc
    missing = sorted(wanted - set(found))
    if missing:
        raise _damaged(f"frame {missing[0] + 1} is not in the encapsulated pixel data")
    return [found[i] for i in indices]


# -- decoding ---------------------------------------------------------------------------------


class _Undecodable(Exception):
    """No installed decoder can decode this pixel data."""


def _decode(px: _Pixels, indices: Sequence[int]) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """Frames decoded to arrays (YCbCr converted to RGB), each with the Image Pixel values
    that describe it (pydicom's decoders, one frame at a time)."""
    if not px.encapsulated:
        encoded = [_native_frame(px, i) for i in indices]
        syntax = ExplicitVRLittleEndian
    else:
        encoded = _encoded_frames(px, indices)
        syntax = ExplicitVRLittleEndian if px.ts == ENCAPSULATED_UNCOMPRESSED else px.ts
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as exc:
        raise _Undecodable from exc
    if not decoder.is_available:
        raise _Undecodable
    for frame in encoded:
        try:
            with _quiet():
                options = as_pixel_options(px.ds, number_of_frames=1,
                                           pixel_keyword=px.keyword)
                options.pop("extended_offsets", None)
                source = encapsulate([frame]) if syntax.is_encapsulated else frame
                array, properties = decoder.as_array(source, index=0, **options)
        except Exception as exc:  # any decoder failure means "cannot decode"
            raise _Undecodable from exc
        yield array, dict(properties)


def _decoded_frames(px: _Pixels, indices: Sequence[int]) -> list[bytes]:
    """Frames decoded to the bytes of native (Explicit VR Little Endian) pixel data."""
    try:
        return [_native_bytes(array, int(properties.get("bits_allocated", 8)))
                for array, properties in _decode(px, indices)]
    except _Undecodable as exc:
        raise NotAcceptableError(
            f"The pixel data is stored as {px.ts.name}, which this archive cannot decode; ask "
            f"for that transfer syntax ({px.ts}) instead.") from exc


def _native_bytes(array: np.ndarray, bits_allocated: int) -> bytes:
    if bits_allocated == 1:
        return bytes(pack_bits(array))
    if bits_allocated in (8, 16, 32, 64) and array.dtype.itemsize * 8 != bits_allocated:
        kind = "i" if array.dtype.kind == "i" else ("f" if array.dtype.kind == "f" else "u")
        array = array.astype(f"<{kind}{bits_allocated // 8}")
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


# -- bulk data --------------------------------------------------------------------------------


def bulkdata(data: bytes, tag: int) -> tuple[str, bytes]:
    """The value of the bulk data element ``tag`` and its media type (PS3.18 10.4, 8.7.3).

    Pixel data: native values as stored (little endian, Explicit VR Little Endian); an
    encapsulated single frame or video as stored (its frames joined) in its own media type;
    encapsulated multi-frame images decoded to native pixel data, since one body cannot carry
    several compressed frames (ask for the frames for those). Any other binary element (OB,
    OW, OF, OD, OL, OV, UN): its value, little endian. The element is looked for at the top
    level first, then inside sequences (first occurrence).
    """
    ds = _open(data)
    if tag in _PIXEL_KEYWORDS and tag in ds._dict:
        return _pixel_bulkdata(_pixels(ds, data))
    found = _value(ds, data, tag, in_sequences=True)
    if found is None:
        raise NotFoundError(f"The instance has no bulk data element ({tag >> 16:04X},"
                            f"{tag & 0xFFFF:04X}).")
    if not _binary(found.vr) or found.undefined_length:
        raise NotFoundError(f"Element ({tag >> 16:04X},{tag & 0xFFFF:04X}) is not bulk data "
                            f"(its VR is {found.vr}).")
    value = bytes(memoryview(found.buffer)[found.start : found.end])
    if not found.little_endian:
        value = _swap(value, _word(found.vr))
    return OCTET_STREAM, value


def _pixel_bulkdata(px: _Pixels) -> tuple[str, bytes]:
    if not px.encapsulated:
        value = bytes(px.value())
        if not px.little_endian:
            value = _swap(value, _word(px.vr))
        return media_type(ExplicitVRLittleEndian), value
    indices = list(range(px.frames))
    if px.ts == ENCAPSULATED_UNCOMPRESSED:
        return media_type(ExplicitVRLittleEndian), b"".join(_encoded_frames(px, indices))
    if MEDIA_TYPES.get(px.ts, "").startswith("video/"):
        return media_type(px.ts), _all_fragments(px)
    if px.frames == 1:
        return media_type(px.ts), _encoded_frames(px, [0])[0]
    return media_type(ExplicitVRLittleEndian), b"".join(_decoded_frames(px, indices))


def _all_fragments(px: _Pixels) -> bytes:
    """Every fragment of an encapsulated value, in order (a video stream is their sequence)."""
    try:
        with _quiet():
            fp = px.reader()
            parse_basic_offsets(fp)
            return b"".join(generate_fragments(fp))
    except (ValueError, struct.error, EOFError) as exc:
        raise _damaged("its fragments cannot be read") from exc


# -- transcoding ------------------------------------------------------------------------------


def transcode(data: bytes, transfer_syntax_uid: str) -> bytes:
    """The instance re-encoded in Explicit or Implicit VR Little Endian (PS3.5 A.2, A.1),
    decompressed if need be; the same bytes when it is already in that syntax.

    The SOP Instance UID and every other attribute are kept (PS3.5: a change of transfer
    syntax is the same instance); the file meta header names this implementation as writer.
    """
    target = UID(str(transfer_syntax_uid).strip())
    if target not in _NATIVE_TARGETS:
        raise NotAcceptableError(
            f"This archive converts instances to {ExplicitVRLittleEndian} or "
            f"{ImplicitVRLittleEndian} only, not to {target}.")
    ds, inferred = _read(data)
    source = _transfer_syntax(ds)
    if source == target and not inferred:
        return data
    if source.is_encapsulated:
        tag = next((t for t in _PIXEL_KEYWORDS if t in ds._dict), None)
        if tag is not None:
            px = _pixels(ds, data)
            if px.encapsulated:
                _decompress(ds, px)
    with _quiet():
        if ds.original_encoding[1] is False:
            _to_little_endian(ds)
        meta = ds.file_meta
        meta.TransferSyntaxUID = target
        for keyword in ("SOPClassUID", "SOPInstanceUID"):
            if ds.get(keyword) and not meta.get(f"MediaStorage{keyword}"):
                setattr(meta, f"MediaStorage{keyword}", ds.get(keyword))
        ds.file_meta.ImplementationClassUID = IMPLEMENTATION_UID
        ds.file_meta.ImplementationVersionName = IMPLEMENTATION_VERSION
        out = io.BytesIO()
        try:
            dcmwrite(out, ds, implicit_vr=target == ImplicitVRLittleEndian, little_endian=True,
                     enforce_file_format=True)
        except Exception as exc:
            raise NotAcceptableError(
                f"The instance cannot be re-encoded as {target.name} "
                f"({type(exc).__name__}).") from exc
    return out.getvalue()


def _decompress(ds: Dataset, px: _Pixels) -> None:
    """Replace encapsulated pixel data by its native form (PS3.5 8.2), in place."""
    try:
        _, properties = next(_decode(px, [0]))
    except _Undecodable as exc:
        raise NotAcceptableError(
            f"The instance is stored as {px.ts.name}, which this archive cannot decode, so it "
            "can only be sent in that transfer syntax.") from exc
    bits_allocated = int(properties.get("bits_allocated", 8))
    value = b"".join(_decoded_frames(px, range(px.frames)))
    if len(value) % 2:
        value += b"\x00"
    for tag in (_EXTENDED_OFFSETS, _EXTENDED_LENGTHS):
        if tag in ds._dict:
            del ds[tag]
    ds[px.tag] = DataElement(px.tag, "OB" if bits_allocated <= 8 else "OW", value)
    ds.PhotometricInterpretation = properties.get("photometric_interpretation",
                                                  ds.PhotometricInterpretation)
    if int(properties.get("samples_per_pixel", 1)) > 1:
        ds.PlanarConfiguration = int(properties.get("planar_configuration", 0))


def _to_little_endian(ds: Dataset) -> None:
    """Byte-swap the binary values of a big endian dataset (dcmwrite converts the rest)."""
    for element in ds.iterall():
        word = _word(str(element.VR))
        if word > 1 and isinstance(element.value, bytes):
            element.value = _swap(element.value, word)
