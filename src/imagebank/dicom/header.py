"""Reading what the index needs from a DICOM header: the header only, never the pixels.

``read_header(data)`` returns an :class:`InstanceHeader` or a :class:`Rejection` with a reason a
person can act on. Tolerant on read (STYLE.md: odd vendor files are read and the oddity is
recorded), strict on what cannot be archived: no Part 10 header, missing UIDs, truncation,
an executable preamble, a DICOMDIR.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
from dataclasses import replace
from typing import Any

import pydicom
import pydicom.config
from pydicom.datadict import keyword_dict
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.uid import DeflatedExplicitVRLittleEndian

from imagebank.dicom.dicomjson import dataset_to_json
from imagebank.dicom.part10 import (
    Truncated,
    check_deflated_complete,
    check_elements_complete,
    dataset_offset,
    executable_preamble,
    has_part10_magic,
    preamble_oddity,
)
from imagebank.domain.model import (
    INDEXED_ATTRIBUTES,
    REQUIRED_UIDS,
    InstanceHeader,
    QuarantineReason,
    Rejection,
    Scalar,
    column_of,
)

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


# Tolerant on read, and quiet: pydicom's validation warnings quote the offending values, which
# are patient data. Oddities are recorded on the instance instead (``oddities``).
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE


def read_header(data: bytes, *, max_size: int | None = None) -> InstanceHeader | Rejection:
    """Parse and validate one received object (PS3.10 file) from its bytes.

    No warning escapes (they may quote patient data); any is recorded as an oddity.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _read_header(data, max_size)
    if caught and isinstance(result, InstanceHeader) and "read_warnings" not in result.oddities:
        return replace(result, oddities=(*result.oddities, "read_warnings"))
    return result


def _read_header(data: bytes, max_size: int | None) -> InstanceHeader | Rejection:
    if not data:
        return Rejection(QuarantineReason.EMPTY, "The file is empty (0 bytes).")
    if max_size is not None and len(data) > max_size:
        return Rejection(
            QuarantineReason.TOO_LARGE,
            f"The file is {len(data):,} bytes, over the limit of {max_size:,} bytes "
            "(setting IMAGEBANK_MAX_OBJECT_SIZE).",
        )
    if not has_part10_magic(data):
        return Rejection(
            QuarantineReason.NOT_DICOM,
            "Not a DICOM Part 10 file: there is no 'DICM' marker after the 128-byte preamble. "
            "If it is a raw DICOM dataset, add a file meta header (e.g. DCMTK's dcmconv) and "
            "ingest it again.",
        )
    executable = executable_preamble(data)
    if executable is not None:
        return Rejection(
            QuarantineReason.EXECUTABLE_PREAMBLE,
            f"The 128-byte preamble makes this file {executable} (a DICOM/executable polyglot, "
            "CVE-2019-11687). It is held in quarantine; rewrite it with a zeroed preamble if "
            "the source is trusted.",
        )
    oddities: list[str] = []
    note = preamble_oddity(data)
    if note:
        oddities.append(note)

    fp = io.BytesIO(data)
    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001 - untrusted input: any failure is a rejection
        return Rejection(
            QuarantineReason.UNREADABLE,
            f"The DICOM header cannot be read ({type(exc).__name__}); the file is damaged "
            "or not DICOM.",
        )
    stop = fp.tell()
    meta = ds.file_meta
    ts = str(meta.get("TransferSyntaxUID", "") or "")
    if not ts:
        oddities.append("no_transfer_syntax")
    if str(meta.get("MediaStorageSOPClassUID", "")) == MEDIA_STORAGE_DIRECTORY:
        return Rejection(
            QuarantineReason.DICOMDIR,
            "This is a DICOMDIR (a media directory), not an image: it is not archived. The "
            "files it lists are ingested on their own.",
        )

    try:
        # The whole dataset is walked, header included: pydicom reads a value cut short by
        # the end of the data without complaint, so a file cut inside its header would
        # otherwise be archived with a damaged header and no pixel data.
        start = dataset_offset(data)
        if ts == DeflatedExplicitVRLittleEndian:
            check_deflated_complete(data, start)
        else:
            little_endian = bool(ds.original_encoding[1])
            check_elements_complete(
                data, start, implicit_vr=bool(ds.original_encoding[0]),
                little_endian=little_endian,
            )
            if ("Rows" in ds or "Columns" in ds) and not _pixel_data_at(data, stop, little_endian):
                # Cut at an element boundary between the image attributes and the pixels.
                raise Truncated
    except Truncated:
        return Rejection(
            QuarantineReason.TRUNCATED,
            f"The file is truncated: a data element runs past its end, or the pixel data "
            f"is missing ({len(data):,} bytes). Send or copy it again from the source.",
        )

    try:
        values, bad = extract_values(ds)
    except Exception as exc:  # noqa: BLE001 - untrusted input: any failure is a rejection
        return Rejection(
            QuarantineReason.UNREADABLE,
            f"The header's values cannot be decoded ({type(exc).__name__}).",
        )
    oddities.extend(f"bad_value:{k}" for k in bad)
    missing = [k for k in REQUIRED_UIDS if not values.get(column_of(k))]
    if missing:
        return Rejection(
            QuarantineReason.MISSING_UID,
            f"The header has no {', '.join(missing)}, so the object cannot be placed in a "
            "study and series. Fix it at the source and send it again.",
        )
    if values.get("sop_class_uid") is None and meta.get("MediaStorageSOPClassUID"):
        values["sop_class_uid"] = str(meta.MediaStorageSOPClassUID)
    try:
        metadata = dataset_to_json(ds)
    except Exception:  # noqa: BLE001 - a value pydicom cannot decode must not stop the ingest
        metadata = {}
        oddities.append("json_failed")
    return InstanceHeader(
        values=values,
        metadata=metadata,
        transfer_syntax_uid=ts,
        oddities=tuple(oddities),
    )


#: (7FE0,0008) Float Pixel Data, (7FE0,0009) Double Float Pixel Data, (7FE0,0010) Pixel Data.
_PIXEL_TAGS = frozenset({(0x7FE0, 0x0008), (0x7FE0, 0x0009), (0x7FE0, 0x0010)})


def _pixel_data_at(data: bytes, offset: int, little_endian: bool) -> bool:
    """Whether a pixel data element starts at ``offset`` (where pydicom stopped reading)."""
    if offset + 4 > len(data):
        return False
    tag = struct.unpack_from("<HH" if little_endian else ">HH", data, offset)
    return tag in _PIXEL_TAGS


#: VRs whose values use only the default character repertoire (PS3.5 6.2), so their raw
#: bytes can be decoded directly, without pydicom's per-element conversion (the ingest's
#: costliest step otherwise). Everything else goes through pydicom.
_ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI"})
_TAGS = [(a, None if (t := keyword_dict.get(a.keyword)) is None else BaseTag(t))
         for a in INDEXED_ATTRIBUTES]


def extract_values(ds: Dataset) -> tuple[dict[str, Scalar], list[str]]:
    """Map each indexed attribute to a column value; return also the keywords that failed."""
    values: dict[str, Scalar] = {}
    bad: list[str] = []
    elements = ds._dict  # read-only look-up by tag, no conversion
    encoding = _single_byte_encoding(ds)
    for attribute, tag in _TAGS:
        try:
            if tag is None:
                raise KeyError(attribute.keyword)
            stored = elements.get(tag)
            if stored is None:
                values[attribute.column] = None
                continue
            if isinstance(stored, RawDataElement):
                vr = stored.VR
                if vr in _ASCII_VRS:
                    values[attribute.column] = _convert_raw(stored.value, attribute.kind)
                    continue
                if vr in _TEXT_VRS and encoding is not None and b"\x1b" not in (
                        stored.value or b""):
                    values[attribute.column] = _convert_raw(stored.value, attribute.kind,
                                                            encoding)
                    continue
                if vr == "US" and stored.value is not None and len(stored.value) == 2:
                    values[attribute.column] = int.from_bytes(
                        stored.value, "little" if stored.is_little_endian else "big")
                    continue
            # Values are decoded lazily: a malformed one (e.g. a US of odd length) raises here.
            raw: Any = ds[tag].value
            if raw is None or raw == "":
                values[attribute.column] = None
                continue
            values[attribute.column] = _convert(raw, attribute.kind)
        except Exception:  # noqa: BLE001 - untrusted input: a bad value is recorded, not fatal
            values[attribute.column] = None
            bad.append(attribute.keyword)
    for keyword in REQUIRED_UIDS:
        column = column_of(keyword)
        value = values.get(column)
        if isinstance(value, str):
            values[column] = value.strip().rstrip("\x00") or None
    return values, bad


def _single_byte_encoding(ds: Dataset) -> str | None:
    """The Python codec of the dataset's text when it is one simple character set (no code
    extensions), else None (pydicom then decodes)."""
    declared = ds.get_item(0x00080005)
    if declared is None or not declared.value:
        return "latin-1"  # the default repertoire is ASCII; latin-1 never fails to decode
    value = declared.value
    if isinstance(value, bytes):
        text = value.decode("ascii", "replace")
    elif isinstance(value, str):
        text = value
    else:
        text = "\\".join(str(v) for v in value)
    terms = [t.strip(" \x00") for t in text.split("\\")]
    if len(terms) != 1:
        return None
    return _CHARSETS.get(terms[0])


#: Specific Character Set terms (PS3.3 C.12.1.1.2) with a single Python codec.
_CHARSETS = {"": "latin-1", "ISO_IR 6": "latin-1", "ISO_IR 100": "latin-1",
             "ISO_IR 192": "utf-8", "ISO_IR 101": "iso8859_2", "ISO_IR 109": "iso8859_3",
             "ISO_IR 110": "iso8859_4", "ISO_IR 144": "iso8859_5", "ISO_IR 127": "iso8859_6",
             "ISO_IR 126": "iso8859_7", "ISO_IR 138": "iso8859_8", "ISO_IR 148": "iso8859_9",
             "ISO_IR 203": "iso8859_15"}
_TEXT_VRS = frozenset({"LO", "SH", "PN", "ST", "LT"})


def _convert_raw(value: bytes | None, kind: str, encoding: str = "latin-1") -> Scalar:
    """A value straight from its bytes (padding stripped), in a single-byte or UTF-8 text."""
    if not value:
        return None
    text = value.decode(encoding, "replace").strip(" \x00")
    if not text:
        return None
    if kind == "multi":
        return "\\".join(part.strip(" \x00") for part in text.split("\\"))
    # A single-valued column keeps the first value of a multi-valued attribute.
    first = text.split("\\", 1)[0].strip(" \x00")
    if kind == "int":
        return int(first) if first.isdigit() else int(float(first))
    if kind == "float":
        number = float(first)
        if math.isnan(number) or math.isinf(number):
            raise ValueError("not a finite number")
        return number
    return first


def _convert(raw: Any, kind: str) -> Scalar:
    if kind == "multi":
        if isinstance(raw, list | tuple | pydicom.multival.MultiValue):
            return "\\".join(str(v) for v in raw)
        return str(raw)
    if isinstance(raw, list | tuple | pydicom.multival.MultiValue):
        raw = raw[0] if len(raw) else None
        if raw is None:
            return None
    if kind == "int":
        return int(raw)
    if kind == "float":
        value = float(raw)
        if math.isnan(value):
            raise ValueError("NaN")
        return value
    return str(raw)
