"""DICOM JSON (PS3.18 Annex F) of a header, without bulk data.

Binary values longer than ``BULK_THRESHOLD`` bytes are replaced by a ``BulkDataURI`` naming
the attribute's tag path, resolved later against the stored instance (PS3.18 F.2.6).

The output is exactly pydicom's ``Dataset.to_json_dict(bulk_data_threshold=1024,
bulk_data_element_handler=..., suppress_invalid_tags=True)``, several times faster: pydicom
converts every raw element to a ``DataElement`` (with its validation) and then to JSON, which
costs about 1.2 ms for a CT header; here the common cases (explicit or dictionary VR, values in
the default or a single-byte/UTF-8 character set, well-formed numbers) go straight from the
raw bytes to JSON, checked with pydicom's own validators, and anything else (private tags of
implicit VR, ambiguous VRs, code extensions, values pydicom would reject or repair, custom
pydicom hooks or settings) goes through pydicom itself, element by element, so that the
result, invalid elements dropped included, is the same. ``tests/dicom/test_dicomjson.py``
compares both on every pydicom test file.
"""

from __future__ import annotations

import base64
import logging
import struct
from collections.abc import Callable
from typing import Any

from pydicom import config as pydicom_config
from pydicom import hooks as pydicom_hooks
from pydicom.charset import default_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID
from pydicom.valuerep import IS, VALIDATORS, DSfloat

BULK_THRESHOLD = 1024
#: pydicom compares the raw length with the base64 length: 3/4 of the threshold.
_BULK_RAW = (BULK_THRESHOLD // 4) * 3

_log = logging.getLogger(__name__)

_BINARY = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN",
                     "US or SS or OW", "US or OW", "OB or OW"})
#: Strings in the default repertoire, decoded as pydicom's ``convert_string`` does.
_PLAIN_STRINGS = frozenset({"AS", "CS", "DA", "DT", "TM"})
#: Strings in the dataset's character set, split on backslashes (``convert_text``).
_TEXT = frozenset({"SH", "LO", "UC"})
#: Strings in the dataset's character set, never split (``convert_single_string``).
_SINGLE_TEXT = frozenset({"ST", "LT", "UT"})
#: struct codes and standard sizes of the binary numbers.
_STRUCT = {"US": ("H", 2), "SS": ("h", 2), "UL": ("L", 4), "SL": ("l", 4), "FL": ("f", 4),
           "FD": ("d", 8), "SV": ("q", 8), "UV": ("Q", 8)}
_INT_JSON = frozenset({"IS", "SL", "SS", "SV", "UL", "US", "UV", "US or SS"})
_FLOAT_JSON = frozenset({"DS", "FD", "FL"})
_LUT_DESCRIPTORS = frozenset({0x00281101, 0x00281102, 0x00281103, 0x00283002})
_SPECIFIC_CHARACTER_SET = 0x00080005
_IS_RANGE = range(-(2**31), 2**31)

_validate: dict[str, Callable[[str, Any], tuple[bool, str]]] = dict(VALIDATORS)


class _Fallback(Exception):
    """The fast path does not handle this element: pydicom does."""


def _bulk_uri(element: DataElement) -> str:
    return f"bulkdata/{element.tag:08X}"


def dataset_to_json(ds: Dataset) -> dict[str, Any]:
    """The dataset (not its file meta) as a DICOM JSON object."""
    # Tolerant on read: unlike pydicom's to_json_dict, which converts in strict mode and drops
    # every element whose value is invalid (a malformed StudyInstanceUID among them), values
    # are converted in the reading mode in force (IGNORE in imagebank), so they are kept.
    return _dataset(ds, suppress=True, fast=_fast_path_allowed())


def _fast_path_allowed() -> bool:
    """False when pydicom is configured to convert values otherwise than by default."""
    c = pydicom_config
    return (
        c.data_element_callback is None
        and not c.datetime_conversion
        and not c.use_DS_numpy
        and not c.use_IS_numpy
        and not c.use_DS_decimal
        and not c.use_none_as_empty_text_VR_value
        and c.replace_un_with_known_vr
        and pydicom_hooks.hooks.raw_element_vr is pydicom_hooks.raw_element_vr
        and pydicom_hooks.hooks.raw_element_value is pydicom_hooks.raw_element_value
        and not pydicom_hooks.hooks.raw_element_kwargs
    )


def _dataset(ds: Dataset, *, suppress: bool, fast: bool = True) -> dict[str, Any]:
    """JSON of one dataset; ``suppress`` drops failing elements (top level), else raise (as
    pydicom does in sequence items, which drops the whole sequence at the top level).
    Without ``fast``, every element is converted by pydicom."""
    result: dict[str, Any] = {}
    elements = ds._dict
    encoding: str | None = None
    for tag in list(elements):
        element = elements.get(tag)
        if element is None:
            continue
        try:
            try:
                if not fast:
                    raise _Fallback
                if isinstance(element, RawDataElement):
                    if encoding is None:
                        encoding = _first_encoding(ds)
                    value = _raw(ds, element, encoding)
                else:
                    value = _element(element)
            except _Fallback:
                value = _pydicom_element(ds, tag)
        except Exception as exc:
            if not suppress:
                raise
            # pydicom logs the exception text, which may quote the value: only the tag here.
            _log.debug("DICOM JSON: element %08X dropped (%s)", tag, type(exc).__name__)
            continue
        result[f"{tag:08X}"] = value
    return result


def _pydicom_element(ds: Dataset, tag: int) -> dict[str, Any]:
    element = ds[tag]
    converted: dict[str, Any] = element.to_json_dict(_bulk_uri, BULK_THRESHOLD)
    return converted


def _first_encoding(ds: Dataset) -> str:
    encodings = ds.original_character_set or ds._character_set
    if isinstance(encodings, str):
        return encodings
    return encodings[0] if encodings else default_encoding


def _check(vr: str, value: str) -> None:
    validator = _validate.get(vr)
    if validator is not None and not validator(vr, value)[0]:
        raise _Fallback


def _strings(vr: str, values: list[str]) -> dict[str, Any]:
    if len(values) == 1:
        if not values[0]:
            return {"vr": vr}
        return {"vr": vr, "Value": values}
    if "" in values:
        raise _Fallback
    return {"vr": vr, "Value": values}


# -- raw elements: bytes to JSON ------------------------------------------------------------
def _raw(ds: Dataset, raw: RawDataElement, encoding: str) -> dict[str, Any]:
    try:
        return _raw_value(ds, raw, encoding)
    except (ValueError, LookupError, UnicodeError, struct.error):
        raise _Fallback from None  # pydicom decides: it may repair, or drop, the element


def _raw_value(ds: Dataset, raw: RawDataElement, encoding: str) -> dict[str, Any]:
    tag = raw.tag
    vr = raw.VR
    if vr is None:
        # Implicit VR: the dictionary's, as pydicom's hook does for public tags.
        if tag.is_private:
            raise _Fallback
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            raise _Fallback from None
    elif vr == "UN":
        raise _Fallback  # pydicom may replace UN with the dictionary's VR
    vr = str(vr)
    data = raw.value
    if raw.length == 0:
        if vr == "SQ":
            return {"vr": vr, "Value": []}
        return {"vr": vr}
    if data is None or tag in _LUT_DESCRIPTORS:
        raise _Fallback
    if vr in _BINARY:
        if " " in vr:  # ambiguous: pydicom resolves it from other elements
            raise _Fallback
        if len(data) > _BULK_RAW:
            return {"vr": vr, "BulkDataURI": f"bulkdata/{tag:08X}"}
        return {"vr": vr, "InlineBinary": base64.b64encode(data).decode("utf-8")}
    if vr in _PLAIN_STRINGS:
        # pydicom does not validate these on reading (``convert_string``).
        return _strings(vr, data.decode(default_encoding).rstrip(" \x00").split("\\"))
    if vr == "UI":
        values = data.decode(default_encoding).rstrip("\x00 ").split("\\")
        for v in values:
            _check(vr, v)  # pydicom's UID() validates, then strips (a no-op on a valid UID)
        return _strings(vr, values)
    if vr in _TEXT:
        if b"\x1b" in data:
            raise _Fallback
        text = data.decode(encoding)
        values = []
        for item in text.split("\\"):
            _check(vr, item)
            v = item.rstrip("\x00 ")
            _check(vr, v)
            values.append(v)
        return _strings(vr, values)
    if vr in _SINGLE_TEXT:
        if b"\x1b" in data:
            raise _Fallback
        text = data.decode(encoding)
        _check(vr, text)
        text = text.rstrip("\x00 ")
        _check(vr, text)
        return {"vr": vr, "Value": [text]} if text else {"vr": vr}
    if vr == "PN":
        return _raw_pn(data, encoding)
    if vr == "IS":
        return _raw_is(data)
    if vr == "DS":
        return _raw_ds(data)
    if vr in _STRUCT:
        code, size = _STRUCT[vr]
        if len(data) % size:
            raise _Fallback
        little = raw.is_little_endian
        numbers = list(struct.unpack(f"{'<' if little else '>'}{len(data) // size}{code}", data))
        if vr in _FLOAT_JSON:
            return {"vr": vr, "Value": [float(n) for n in numbers]}
        return {"vr": vr, "Value": numbers}
    if vr == "AE":  # not validated on reading either
        return _strings(vr, [v.strip() for v in data.decode(default_encoding).split("\\")])
    if vr == "SQ":
        sequence = ds[tag]  # pydicom parses the items (their elements stay raw)
        return {"vr": vr, "Value": [_dataset(item, suppress=False) for item in sequence.value]}
    raise _Fallback  # AT, UR and anything unknown


def _raw_pn(data: bytes, encoding: str) -> dict[str, Any]:
    data = data.rstrip(b"\x00 ")
    if not data.isascii() or b"\x1b" in data:
        raise _Fallback  # pydicom re-encodes names: only ASCII is sure to come back the same
    text = data.decode(encoding)
    names = []
    for value in text.split("\\"):
        if not value:
            raise _Fallback
        _check("PN", value)
        components = value.split("=")
        while components and not components[-1]:
            components.pop()
        if not components:
            raise _Fallback
        name = {"Alphabetic": components[0]}
        if len(components) > 1:
            name["Ideographic"] = components[1]
        if len(components) > 2:
            name["Phonetic"] = components[2]
        names.append(name)
    if not names:
        return {"vr": "PN"}
    return {"vr": "PN", "Value": names}


def _raw_is(data: bytes) -> dict[str, Any]:
    values = data.decode(default_encoding).rstrip(" \x00").split("\\")
    if len(values) == 1 and not values[0].strip():
        return {"vr": "IS"}
    numbers = []
    for v in values:
        _check("IS", v)
        number = int(v)  # a ValueError ("1.0", "") falls back to pydicom
        if number not in _IS_RANGE:
            raise _Fallback
        numbers.append(number)
    return {"vr": "IS", "Value": numbers}


def _raw_ds(data: bytes) -> dict[str, Any]:
    values = data.decode(default_encoding).strip().rstrip(" \x00").split("\\")
    if len(values) == 1 and not values[0].strip():
        return {"vr": "DS"}
    numbers = []
    for v in values:
        text = v.strip()
        if not text:
            raise _Fallback
        _check("DS", text)  # at most 16 characters of the DS repertoire: no nan, no inf
        numbers.append(float(v))
    return {"vr": "DS", "Value": numbers}


# -- converted elements ---------------------------------------------------------------------
def _element(element: DataElement) -> dict[str, Any]:
    vr = str(element.VR)
    value = element._value
    if vr in _BINARY and vr != "US or SS":
        if type(value) is not bytes:
            raise _Fallback
        if not value:
            return {"vr": vr}
        if len(value) > _BULK_RAW:
            return {"vr": vr, "BulkDataURI": _bulk_uri(element)}
        return {"vr": vr, "InlineBinary": base64.b64encode(value).decode("utf-8")}
    if vr == "SQ":
        return {"vr": vr, "Value": [_dataset(item, suppress=False) for item in value]}
    if vr in ("PN", "AT"):
        raise _Fallback
    kind = type(value)
    items: list[Any]
    if kind is str or kind is UID:
        if not value:
            return {"vr": vr}
        items = [value]
    elif value is None:
        return {"vr": vr}
    elif kind is int or kind is float or kind is IS or kind is DSfloat:
        items = [value]
    elif kind is MultiValue or kind is list:
        if not value:
            return {"vr": vr}
        items = list(value)
    else:
        raise _Fallback
    if vr in _INT_JSON or vr in _FLOAT_JSON:
        number = int if vr in _INT_JSON else float
        try:
            items = [number(v) for v in items]
        except (ValueError, TypeError, OverflowError):
            raise _Fallback from None
    else:
        for v in items:
            if type(v) is not str and type(v) is not UID:
                raise _Fallback
    return {"vr": vr, "Value": items}
