"""read_header over real files: pydicom's and pydicom-data's test files, and the shared data.

Every Part 10 file carrying the three UIDs is accepted, whatever its transfer syntax, and what
read_header reports matches pydicom's full read. Only files already on disk are used.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from functools import cache
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.data.data_manager import external_data_sources
from pydicom.errors import InvalidDicomError

from imagebank.dicom.header import read_header
from imagebank.dicom.part10 import has_part10_magic
from imagebank.domain.model import InstanceHeader, QuarantineReason, Rejection, column_of

SHARED_DATA = Path(os.environ.get(
    "IMAGEBANK_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
SHARED_FILES = sorted(
    [*(SHARED_DATA / "dcmqi-ct-3slice").rglob("*.dcm"),
     *(SHARED_DATA / "highdicom-test-files").rglob("*.dcm")]
)

#: Files pydicom ships cut short on purpose.
KNOWN_TRUNCATED = {"MR_truncated.dcm", "rtplan_truncated.dcm",
                   "emri_small_jpeg_2k_lossless_too_short.dcm"}
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
UIDS = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")

REQUIRED_SYNTAXES = {
    "1.2.840.10008.1.2": "implicit VR little endian",
    "1.2.840.10008.1.2.1": "explicit VR little endian",
    "1.2.840.10008.1.2.2": "explicit VR big endian",
    "1.2.840.10008.1.2.1.99": "deflated explicit VR little endian",
    "1.2.840.10008.1.2.4.50": "JPEG baseline",
    "1.2.840.10008.1.2.4.70": "JPEG lossless SV1",
    "1.2.840.10008.1.2.4.80": "JPEG-LS lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
    "1.2.840.10008.1.2.5": "RLE lossless",
}


def _testdata_files() -> list[str]:
    return sorted(f for f in set(get_testdata_files()) if os.path.isfile(f))


TESTDATA = _testdata_files()


def _uid(value: object) -> str:
    return str(value or "").strip().rstrip("\x00").strip()


@cache
def _classify(path: str) -> tuple[str, bytes]:
    """What pydicom (not imagebank) says the file is: part10 / raw / dicomdir / no_uid."""
    with open(path, "rb") as handle:
        data = handle.read()
    if not has_part10_magic(data):
        return "raw", data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, Exception):
            return "unreadable", data
    if str(ds.file_meta.get("MediaStorageSOPClassUID", "")) == DICOMDIR_CLASS:
        return "dicomdir", data
    if not all(_uid(ds.get(k)) for k in UIDS):
        return "no_uid", data
    return "part10", data


def _full_read(path: str) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def test_pydicom_data_files_are_on_disk() -> None:
    assert "pydicom-data" in external_data_sources(), "pip install pydicom-data (dev extra)"
    names = {os.path.basename(f) for f in TESTDATA}
    # Some files only pydicom-data has (JPEG 2000, JPEG-LS, deflate variants).
    for name in ("emri_small_jpeg_2k_lossless.dcm", "JPEGLSNearLossless_08.dcm", "CT_small.dcm",
                 "693_J2KR.dcm"):
        assert name in names, name
    assert len(TESTDATA) > 200


@pytest.mark.parametrize("path", TESTDATA, ids=[os.path.basename(p) for p in TESTDATA])
def test_pydicom_test_file(path: str) -> None:
    kind, data = _classify(path)
    name = os.path.basename(path)
    result = read_header(data)
    if isinstance(result, Rejection):
        _assert_no_patient_values(path, result.message)
    if name in KNOWN_TRUNCATED:
        assert isinstance(result, Rejection) and result.reason is QuarantineReason.TRUNCATED
        return
    if kind == "raw":
        assert isinstance(result, Rejection)
        assert result.reason in (QuarantineReason.NOT_DICOM, QuarantineReason.EMPTY)
        return
    if kind == "dicomdir":
        assert isinstance(result, Rejection) and result.reason is QuarantineReason.DICOMDIR
        return
    if kind == "no_uid":
        assert isinstance(result, Rejection), name
        assert result.reason is QuarantineReason.MISSING_UID, (name, result)
        return
    assert kind == "part10", (name, kind)
    assert isinstance(result, InstanceHeader), (name, result)
    _assert_matches_pydicom(result, path)


def _assert_no_patient_values(path: str, message: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, force=True)
            values = [str(ds.get(k) or "") for k in ("PatientName", "PatientID",
                                                     "PatientBirthDate")]
        except Exception:
            return
    for value in values:
        if value:
            assert value not in message


def _assert_matches_pydicom(header: InstanceHeader, path: str) -> None:
    ds = _full_read(path)
    for keyword in UIDS:
        assert header.values[column_of(keyword)] == _uid(ds.get(keyword))
    assert header.sop_instance_uid == _uid(ds.SOPInstanceUID)
    assert header.study_instance_uid == _uid(ds.StudyInstanceUID)
    assert header.series_instance_uid == _uid(ds.SeriesInstanceUID)
    assert header.transfer_syntax_uid == str(ds.file_meta.get("TransferSyntaxUID", ""))
    expected_class = _uid(ds.get("SOPClassUID")) or _uid(ds.file_meta.MediaStorageSOPClassUID)
    assert header.values["sop_class_uid"] == expected_class
    assert header.patient_id == str(ds.get("PatientID") or "")
    assert header.values["modality"] == (str(ds.Modality) if ds.get("Modality") else None)
    for keyword, column in (("Rows", "rows"), ("Columns", "columns")):
        expected = ds.get(keyword)
        assert header.values[column] == (None if expected in (None, "") else int(expected))
    if ds.get("PatientName"):
        assert header.values["patient_name"] == str(ds.PatientName)
    # DICOM JSON metadata: the header's values, never the pixels.
    meta = header.metadata
    assert _uid(meta["0020000D"]["Value"][0]) == _uid(ds.StudyInstanceUID)
    assert _uid(meta["00080018"]["Value"][0]) == _uid(ds.SOPInstanceUID)
    pixel = meta.get("7FE00010")
    assert pixel is None or "InlineBinary" not in pixel


def test_accepted_transfer_syntaxes_cover_the_required_ones() -> None:
    accepted: Counter[str] = Counter()
    rejected_part10 = []
    for path in TESTDATA:
        kind, data = _classify(path)
        result = read_header(data)
        if isinstance(result, InstanceHeader):
            accepted[result.transfer_syntax_uid] += 1
        elif kind == "part10" and os.path.basename(path) not in KNOWN_TRUNCATED:
            rejected_part10.append(os.path.basename(path))
    assert rejected_part10 == []
    missing = {uid: name for uid, name in REQUIRED_SYNTAXES.items() if uid not in accepted}
    assert missing == {}
    assert sum(accepted.values()) > 150


@pytest.mark.parametrize("path", SHARED_FILES, ids=[p.name for p in SHARED_FILES])
def test_shared_data_files_are_accepted(path: Path) -> None:
    result = read_header(path.read_bytes())
    assert isinstance(result, InstanceHeader), result
    _assert_matches_pydicom(result, str(path))


def test_shared_data_is_present() -> None:
    names = {p.name for p in SHARED_FILES}
    assert {"01.dcm", "02.dcm", "03.dcm", "liver.dcm", "ct_image.dcm", "sm_image.dcm",
            "sr_document.dcm"} <= names
