"""A file cut short is never archived: truncated (or unreadable), at any offset.

pydicom reads a value cut short by the end of the data without complaint, so read_header walks
the data elements itself. These tests cut synthetic files at every offset (header and pixel
data) in several transfer syntaxes, plus the truncated files pydicom ships.
"""

from __future__ import annotations

import io

import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.filereader import data_element_generator
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from imagebank.dicom.header import read_header
from imagebank.dicom.part10 import dataset_offset
from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
from imagebank.domain.model import InstanceHeader, QuarantineReason, Rejection

CUT_REASONS = {QuarantineReason.TRUNCATED, QuarantineReason.UNREADABLE}
PATIENT_ID = "PID-TRUNC-4471"
PATIENT_NAME = "CUTSHORT^WILHELMINA"


def _file(ts: UID, rows: int = 32, columns: int = 32) -> tuple[Dataset, bytes]:
    ds = next(make_study(SyntheticPatient.make(9), series=[SeriesSpec(slices=1, rows=rows,
                                                                      columns=columns)]))
    ds.PatientID = PATIENT_ID
    ds.PatientName = PATIENT_NAME
    if ts == RLELossless:
        ds.compress(RLELossless)
    else:
        ds.file_meta.TransferSyntaxUID = ts
    data = to_bytes(ds)
    header = read_header(data)
    assert isinstance(header, InstanceHeader), "the whole file must be accepted"
    assert header.transfer_syntax_uid == ts
    return ds, data


def _top_level_elements(data: bytes, ts: UID) -> list[tuple[int, int, int]]:
    """(tag, start, end) of each top-level data element of the dataset."""
    implicit = ts == ImplicitVRLittleEndian
    little = ts != ExplicitVRBigEndian
    fp = io.BytesIO(data)
    fp.seek(dataset_offset(data))
    result = []
    start = fp.tell()
    for element in data_element_generator(fp, implicit, little):
        result.append((int(element.tag), start, fp.tell()))
        start = fp.tell()
    assert result[-1][0] == 0x7FE00010 and result[-1][2] == len(data)
    return result


def _assert_never_accepted_when_cut(data: bytes, offsets: list[int], allowed: set[int]) -> None:
    accepted_at: list[int] = []
    bad_reasons: dict[int, str] = {}
    for n in offsets:
        result = read_header(data[:n])
        if isinstance(result, InstanceHeader):
            if n not in allowed:
                accepted_at.append(n)
            continue
        assert PATIENT_ID not in result.message and "CUTSHORT" not in result.message
        if n < 132:
            if result.reason is not QuarantineReason.NOT_DICOM:
                bad_reasons[n] = result.reason.value
        elif n not in allowed and result.reason not in CUT_REASONS:
            bad_reasons[n] = result.reason.value
    assert accepted_at == [], f"cut files accepted at offsets {accepted_at[:20]}"
    assert bad_reasons == {}, f"cut files rejected for another reason: {bad_reasons}"


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                                ExplicitVRBigEndian, RLELossless],
                         ids=["explicit-le", "implicit-le", "explicit-be", "rle"])
def test_cut_anywhere_is_never_accepted(ts: UID) -> None:
    _, data = _file(ts)
    elements = _top_level_elements(data, ts)
    rows_start = next(start for tag, start, _ in elements if tag == 0x00280010)
    # A cut exactly between two elements ahead of the image attributes leaves a well-formed
    # dataset (an instance without an image): it cannot be told from a whole one. Cuts after
    # the image attributes are known by the missing pixel data. Elsewhere a cut is a cut.
    boundaries = {end for _, _, end in elements if end <= rows_start}
    boundaries.add(elements[0][1])  # the file meta alone, with an empty dataset
    if ts == ExplicitVRBigEndian:
        # One zero byte past such a boundary (the big-endian tag's high byte) reads as padding.
        boundaries |= {b + 1 for b in boundaries if data[b] == 0}
    pixel_start = elements[-1][1]
    offsets = list(range(1, pixel_start + 16)) + list(range(pixel_start + 16, len(data), 5))
    _assert_never_accepted_when_cut(data, offsets, boundaries)


def test_cut_deflated_file_is_never_accepted() -> None:
    _, data = _file(DeflatedExplicitVRLittleEndian)
    # pydicom pads the deflated stream to an even length: only that pad byte may go.
    padding = {n for n in range(len(data)) if not data[n:].strip(b"\x00")}
    assert len(padding) <= 1
    _assert_never_accepted_when_cut(data, list(range(1, len(data))), padding)


@pytest.mark.parametrize("keyword", ["PatientName", "PatientID", "StudyInstanceUID",
                                     "SeriesInstanceUID", "SOPInstanceUID", "Rows", "Columns",
                                     "ImagePositionPatient", "PixelSpacing", "BitsAllocated"])
@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian],
                         ids=["explicit-le", "implicit-le"])
def test_cut_inside_a_header_element_is_truncated(ts: UID, keyword: str) -> None:
    ds, data = _file(ts)
    tag = int(ds[keyword].tag)
    elements = _top_level_elements(data, ts)
    _, start, end = next(e for e in elements if e[0] == tag)
    for n in sorted({start + 2, start + 6, end - 1, (start + end) // 2}):
        result = read_header(data[:n])
        assert isinstance(result, Rejection), f"cut at {n} inside {keyword} was accepted"
        assert result.reason in CUT_REASONS, (n, result.reason)


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.25, 0.5, 0.9, 0.999])
@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                                ExplicitVRBigEndian, RLELossless],
                         ids=["explicit-le", "implicit-le", "explicit-be", "rle"])
def test_cut_inside_pixel_data_is_truncated(ts: UID, fraction: float) -> None:
    _, data = _file(ts, rows=64, columns=64)
    _, start, end = _top_level_elements(data, ts)[-1]
    value_start = start + 12  # tag, VR, reserved, 4-byte length (or implicit: 8)
    n = value_start + int((end - value_start) * fraction)
    assert start < n < end
    result = read_header(data[:n])
    assert isinstance(result, Rejection)
    assert result.reason is QuarantineReason.TRUNCATED


def test_cut_at_the_pixel_data_tag_is_truncated() -> None:
    """The header is whole but the pixel data element is gone: still truncated."""
    _, data = _file(ExplicitVRLittleEndian)
    _, start, _ = _top_level_elements(data, ExplicitVRLittleEndian)[-1]
    result = read_header(data[:start])
    assert isinstance(result, Rejection)
    assert result.reason is QuarantineReason.TRUNCATED


def test_trailing_padding_is_tolerated() -> None:
    _, data = _file(ExplicitVRLittleEndian)
    for pad in (b"\x00", b"\x00" * 7, b"\x00" * 8, b"\x00" * 64):
        assert isinstance(read_header(data + pad), InstanceHeader)


def test_trailing_garbage_is_not_tolerated() -> None:
    _, data = _file(ExplicitVRLittleEndian)
    result = read_header(data + b"\xff\xff\xff")
    assert isinstance(result, Rejection)
    assert result.reason is QuarantineReason.TRUNCATED


@pytest.mark.parametrize("name", ["MR_truncated.dcm", "rtplan_truncated.dcm",
                                  "emri_small_jpeg_2k_lossless_too_short.dcm"])
def test_pydicom_truncated_files(name: str) -> None:
    path = get_testdata_file(name)
    assert path is not None, f"{name} is not on disk (pydicom / pydicom-data)"
    complete = {"MR_truncated.dcm": "MR_small.dcm", "rtplan_truncated.dcm": "rtplan.dcm"}
    with open(path, "rb") as handle:
        data = handle.read()
    if name in complete:
        whole_path = get_testdata_file(complete[name])
        assert whole_path is not None
        with open(whole_path, "rb") as handle:
            whole = handle.read()
        # It really is a cut copy of the complete file, which is accepted.
        assert whole.startswith(data[:1000]) and len(whole) > len(data)
        assert isinstance(read_header(whole), InstanceHeader)
    result = read_header(data)
    assert isinstance(result, Rejection)
    assert result.reason is QuarantineReason.TRUNCATED
