"""``dataset_to_json`` is pydicom's JSON of each element (same options), only faster.

Compared on every file pydicom (and pydicom-data) ships that pydicom can read, on the shared
test data when present, on synthetic instances, and on hand-made datasets with the values the
fast path must leave to pydicom: each element's JSON, the elements dropped and their order
must be the same. Compared as serialised JSON, so that NaN equals NaN and a UID its string.
"""

from __future__ import annotations

import io
import json
import os
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pydicom.config
import pytest
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from imagebank.dicom.dicomjson import BULK_THRESHOLD, _bulk_uri, dataset_to_json
from imagebank.dicom.header import extract_values
from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes

SHARED_DATA = Path(os.environ.get(
    "IMAGEBANK_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))


def _files() -> list[str]:
    files = [f for f in get_testdata_files() if os.path.isfile(f)]
    if SHARED_DATA.is_dir():
        files += [str(p) for p in sorted(SHARED_DATA.rglob("*.dcm"))[:200]]
    return sorted(set(files))


FILES = _files()


@pytest.fixture(params=["IGNORE", "WARN"])
def reading_mode(request: pytest.FixtureRequest) -> Iterator[str]:
    """imagebank reads with IGNORE (header.py); pydicom's default is WARN: both agree."""
    settings = pydicom.config.settings
    before = settings.reading_validation_mode
    settings.reading_validation_mode = getattr(pydicom.config, request.param)
    try:
        yield request.param
    finally:
        settings.reading_validation_mode = before


def _read(source: str | bytes) -> Dataset | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fp: Any = io.BytesIO(source) if isinstance(source, bytes) else source
            return pydicom.dcmread(fp, stop_before_pixels=True, force=True)
        except Exception:  # files pydicom cannot read are not compared
            return None


def _pydicom_json(ds: Dataset) -> dict[str, Any]:
    """pydicom's own JSON of each top-level element, converted in the reading mode in force.

    (``Dataset.to_json_dict`` would convert in strict mode and drop invalid values; imagebank
    is tolerant on read and keeps them, so the reference is built element by element.)
    """
    result: dict[str, Any] = {}
    for tag in ds.keys():
        try:
            result[f"{tag:08X}"] = ds[tag].to_json_dict(_bulk_uri, BULK_THRESHOLD)
        except Exception:  # pydicom cannot convert it: dropped on both sides
            continue
    return result


def assert_same(source: str | bytes, *, touch: str = "none") -> None:
    """Read ``source`` twice; compare pydicom's JSON of one with ours of the other.

    ``touch``: "extract" reads the indexed attributes first (as read_header does), "half"
    reads every other element, so that converted and raw elements are mixed.
    """
    expected_ds, actual_ds = _read(source), _read(source)
    if expected_ds is None or actual_ds is None:
        pytest.skip("pydicom cannot read this file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for ds in (expected_ds, actual_ds):
            if touch == "extract":
                try:
                    extract_values(ds)
                except Exception:  # same on both sides
                    pass
            elif touch == "half":
                for n, tag in enumerate(list(ds.keys())):
                    if n % 2 == 0:
                        try:
                            ds.get(tag)
                        except Exception:  # same on both sides
                            pass
        expected = _pydicom_json(expected_ds)
        actual = dataset_to_json(actual_ds)
    assert list(actual) == list(expected)
    for key in expected:
        assert _dumps(actual[key]) == _dumps(expected[key]), key


def _dumps(value: Any) -> str:
    # default=str: with pydicom's datetime_conversion, its own JSON holds DA/TM objects.
    return json.dumps(value, default=str)


@pytest.mark.parametrize("path", FILES, ids=lambda p: Path(p).name)
def test_same_as_pydicom_on_test_files(path: str, reading_mode: str) -> None:
    assert_same(path)


@pytest.mark.parametrize("touch", ["extract", "half"])
def test_same_as_pydicom_with_converted_elements(touch: str, reading_mode: str) -> None:
    for path in FILES:
        assert_same(path, touch=touch)


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_same_as_pydicom_on_synthetic_instances(modality: str, reading_mode: str) -> None:
    spec = SeriesSpec(modality=modality, slices=3, rows=16, columns=16)
    for ds in make_study(SyntheticPatient.make(7), series=[spec]):
        data = to_bytes(ds)
        assert_same(data)
        assert_same(data, touch="extract")


# -- hand-made datasets: what the fast path must get right or leave to pydicom -------------
_LONG = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
_PACK = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d"}
_TEXT_PAD = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC",
             "UR", "UT"}


def _element(tag: int, vr: str, value: Any, *, implicit: bool, little: bool) -> bytes:
    """One data element encoded by hand, so that any value, valid or not, is kept."""
    order = "<" if little else ">"
    if isinstance(value, bytes):
        raw = value
    elif vr == "AT":
        raw = b"".join(struct.pack(f"{order}HH", t >> 16, t & 0xFFFF) for t in value)
    else:
        values = value if isinstance(value, list) else [value]
        raw = struct.pack(f"{order}{len(values)}{_PACK[vr]}", *values)
    if len(raw) % 2:
        raw += b" " if vr in _TEXT_PAD else b"\x00"
    head = struct.pack(f"{order}HH", tag >> 16, tag & 0xFFFF)
    if implicit:
        return head + struct.pack(f"{order}I", len(raw)) + raw
    if vr in _LONG:
        return head + vr.encode() + b"\x00\x00" + struct.pack(f"{order}I", len(raw)) + raw
    return head + vr.encode() + struct.pack(f"{order}H", len(raw)) + raw


def _encode(elements: list[tuple[int, str, Any]], *, syntax: str = ExplicitVRLittleEndian,
            charset: str | None = None) -> bytes:
    """A Part 10 file with these elements (in tag order), values written as given."""
    meta = Dataset()
    meta.file_meta = FileMetaDataset()
    meta.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    meta.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    meta.save_as(buffer, enforce_file_format=True)
    implicit = syntax == ImplicitVRLittleEndian
    little = syntax != ExplicitVRBigEndian
    everything = [(0x00080018, "UI", b"1.2.3.4\x00"), *elements]
    if charset is not None:
        everything.append((0x00080005, "CS", charset.encode()))
    body = b"".join(_element(tag, vr, value, implicit=implicit, little=little)
                    for tag, vr, value in sorted(everything, key=lambda e: e[0]))
    return buffer.getvalue() + body


ODD_VALUES: list[tuple[str, list[tuple[int, str, Any]]]] = [
    ("strings", [(0x00080060, "CS", b"CT"), (0x00081030, "LO", b"A\\B "),
                 (0x00080008, "CS", b"ORIGINAL\\PRIMARY"), (0x00180015, "CS", b"")]),
    ("invalid CS (lowercase: pydicom keeps it)", [(0x00080060, "CS", b"ct")]),
    ("invalid SH (too long: pydicom drops it)", [(0x00080050, "SH", b"A" * 20)]),
    ("CS too long", [(0x00080060, "CS", b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")]),
    ("empty items", [(0x00080008, "CS", b"A\\\\B"), (0x00280030, "DS", b"0.5\\"),
                     (0x00200037, "DS", b"1\\0\\0\\0\\1\\0")]),
    ("IS", [(0x00200013, "IS", b"12 "), (0x00200012, "IS", b" 7"), (0x00280008, "IS", b"1.0"),
            (0x00200011, "IS", b"99999999999"), (0x00201002, "IS", b"  ")]),
    ("DS", [(0x00180050, "DS", b"1.25"), (0x00281050, "DS", b" 40 "),
            (0x00281051, "DS", b"1.2345678901234567"), (0x00281052, "DS", b"nan"),
            (0x00281053, "DS", b"1e3"), (0x00180088, "DS", b"1_0")]),
    ("PN", [(0x00100010, "PN", b"DOE^JOHN"), (0x00080090, "PN", b"A^B=C^D="),
            (0x00081070, "PN", b"=ONLY^IDEOGRAPHIC"), (0x00081060, "PN", b"X\\Y^Z"),
            (0x00081050, "PN", b"==")]),
    ("PN latin-1", [(0x00100010, "PN", "MÜLLER^JÖRG".encode("latin-1"))]),
    ("UI", [(0x0020000D, "UI", b"1.2.3\x00"), (0x0020000E, "UI", b"1.2.x")]),
    ("texts", [(0x00081030, "LO", b"trailing\x00"), (0x00204000, "LT", b"a\\b text  "),
               (0x00324000, "LT", b""), (0x00081040, "LO", b"\x01control")]),
    ("numbers", [(0x00280010, "US", 512), (0x00280106, "US", [1, 2]), (0x00189310, "FD", 1.5),
                 (0x00189311, "FL", float("nan")), (0x00181140, "SL", -3),
                 (0x00189219, "UL", b"\x01\x00\x00\x00\x00\x00")]),
    ("binary", [(0x00291010, "OB", b"\x00" * 700), (0x00291011, "OB", b"\x01" * 900),
                (0x00089459, "OF", b""), (0x00420011, "OW", b"\x02" * 768),
                (0x00420012, "OB", b"\x02" * 769)]),
    ("AT and AE and UR", [(0x00209165, "AT", [0x00100010, 0x00100020]),
                          (0x00020016, "AE", b" ME  "), (0x00080120, "UR", b"http://x/ ")]),
    ("private", [(0x00090010, "LO", b"ACME"), (0x00091001, "DS", b"1.5"),
                 (0x00091002, "UN", b"\x01\x02")]),
    ("UN of a known tag", [(0x00080060, "UN", b"CT")]),
    ("unknown public tag", [(0x00090001, "LO", b"odd")]),
]


def _sequence_file(item_value: bytes, *, syntax: str = ExplicitVRLittleEndian) -> bytes:
    settings = pydicom.config.settings
    before = settings.writing_validation_mode
    settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        item = Dataset()
        item.add_new(0x00080100, "SH", b"CODE")
        item.add_new(0x00080104, "LO", b"meaning")
        bad = Dataset()
        bad.add_new(0x00081155, "UI", item_value)
        nested = Dataset()
        nested.add_new(0x00400260, "SQ", Sequence([item]))
        ds = Dataset()
        ds.SOPInstanceUID = "1.2.3.4"
        ds.add_new(0x00081032, "SQ", Sequence([item, nested]))
        ds.add_new(0x00400275, "SQ", Sequence([bad]))
        ds.add_new(0x00081111, "SQ", Sequence())
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
        ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
        ds.file_meta.TransferSyntaxUID = syntax
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()
    finally:
        settings.writing_validation_mode = before


SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]


@pytest.mark.parametrize("syntax", SYNTAXES, ids=["explicit", "implicit", "big-endian"])
@pytest.mark.parametrize(("name", "elements"), ODD_VALUES, ids=[n for n, _ in ODD_VALUES])
def test_same_as_pydicom_on_odd_values(name: str, elements: list[tuple[int, str, Any]],
                                       syntax: str, reading_mode: str) -> None:
    assert_same(_encode(elements, syntax=syntax))


@pytest.mark.parametrize("charset", ["ISO_IR 100", "ISO_IR 192", "ISO 2022 IR 6\\ISO 2022 IR 87",
                                     "GB18030", "ISO_IR 144"])
def test_same_as_pydicom_in_other_character_sets(charset: str, reading_mode: str) -> None:
    name = {"ISO_IR 100": "MÜLLER^JÖRG".encode("latin-1"),
            "ISO_IR 192": "ΔΗΜΗΤΡΗΣ^ΝΙΚΟΣ".encode(),
            "ISO 2022 IR 6\\ISO 2022 IR 87": b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B",
            "GB18030": "王^小东".encode("gb18030"),
            "ISO_IR 144": "Люкceмбypг".encode("iso8859_5")}[charset]
    elements = [(0x00100010, "PN", name), (0x00081030, "LO", name.replace(b"^", b" ")),
                (0x00204000, "LT", name), (0x00100020, "LO", b"ID\\2")]
    for syntax in SYNTAXES:
        assert_same(_encode(elements, syntax=syntax, charset=charset))


@pytest.mark.parametrize("item_value", [b"1.2.3", b"1.2.x"], ids=["valid", "invalid-kept"])
@pytest.mark.parametrize("syntax", SYNTAXES, ids=["explicit", "implicit", "big-endian"])
def test_same_as_pydicom_on_sequences(item_value: bytes, syntax: str, reading_mode: str) -> None:
    data = _sequence_file(item_value, syntax=syntax)
    assert_same(data)
    assert_same(data, touch="half")


def test_a_sequence_with_an_invalid_item_element_is_kept_as_received() -> None:
    """Tolerant on read: pydicom's strict to_json_dict would drop the whole sequence."""
    ds = _read(_sequence_file(b"1.2.x"))
    assert ds is not None
    result = dataset_to_json(ds)
    assert result["00400275"] == {"vr": "SQ", "Value": [
        {"00081155": {"vr": "UI", "Value": ["1.2.x"]}}]}
    assert result["00081032"]["Value"][1]["00400260"]["Value"][0]["00080100"] == {
        "vr": "SH", "Value": ["CODE"]}
    assert result["00081111"] == {"vr": "SQ", "Value": []}


def test_bulk_data_and_inline_binary() -> None:
    ds = _read(_encode([(0x00291010, "OB", b"\x00" * 768), (0x00291011, "OB", b"\x01" * 770)]))
    assert ds is not None
    result = dataset_to_json(ds)
    assert result["00291010"]["InlineBinary"].startswith("AAAA")
    assert result["00291011"] == {"vr": "OB", "BulkDataURI": "bulkdata/00291011"}


@pytest.mark.parametrize("setting", ["datetime_conversion", "use_DS_decimal", "use_IS_numpy"])
def test_other_pydicom_settings_fall_back_to_pydicom(setting: str) -> None:
    spec = SeriesSpec(slices=1, rows=8, columns=8)
    synthetic = to_bytes(next(make_study(SyntheticPatient.make(1), series=[spec])))
    before = getattr(pydicom.config, setting)
    setattr(pydicom.config, setting, True)
    try:
        assert_same(synthetic)
        for path in FILES[:20]:
            assert_same(path)
    finally:
        setattr(pydicom.config, setting, before)
