"""read_header: every rejection reason it produces, and messages without patient data."""

from __future__ import annotations

import os

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from imagebank.dicom.header import read_header
from imagebank.dicom.part10 import EXECUTABLE_SIGNATURES
from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
from imagebank.domain.model import InstanceHeader, QuarantineReason, Rejection

PATIENT_NAME = "ZYGOTIC^QUENTINA"
PATIENT_ID = "PID-83611947"
BIRTH_DATE = "19471103"


def _dataset(**changes: object) -> Dataset:
    ds = next(make_study(SyntheticPatient.make(5), series=[SeriesSpec(slices=1, rows=32,
                                                                      columns=32)]))
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = BIRTH_DATE
    for key, value in changes.items():
        setattr(ds, key, value)
    return ds


def _good() -> bytes:
    return to_bytes(_dataset())


def _patient_values(ds: Dataset) -> list[str]:
    return [str(ds.PatientName), str(ds.PatientID), str(ds.PatientBirthDate),
            str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)]


def _rejected(data: bytes, reason: QuarantineReason, **kwargs: object) -> Rejection:
    result = read_header(data, **kwargs)  # type: ignore[arg-type]
    assert isinstance(result, Rejection), f"expected {reason}, got an accepted header"
    assert result.reason is reason, (result.reason, result.message)
    assert result.message and result.message[-1] == "."
    # Never patient data, whatever the reason.
    for value in (PATIENT_NAME, "ZYGOTIC", "QUENTINA", PATIENT_ID, "83611947", BIRTH_DATE):
        assert value not in result.message
    return result


def test_a_good_file_is_accepted_with_its_values() -> None:
    ds = _dataset()
    header = read_header(to_bytes(ds))
    assert isinstance(header, InstanceHeader)
    assert header.sop_instance_uid == ds.SOPInstanceUID
    assert header.study_instance_uid == ds.StudyInstanceUID
    assert header.series_instance_uid == ds.SeriesInstanceUID
    assert header.patient_id == PATIENT_ID
    assert header.values["patient_name"] == PATIENT_NAME
    assert header.values["rows"] == 32 and header.values["columns"] == 32
    assert header.values["modality"] == "CT"
    assert header.values["image_type"] == "ORIGINAL\\PRIMARY\\AXIAL"
    assert header.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    assert header.oddities == ()
    assert header.metadata["00100020"]["Value"] == [PATIENT_ID]
    assert "7FE00010" not in header.metadata


def test_empty() -> None:
    _rejected(b"", QuarantineReason.EMPTY)


@pytest.mark.parametrize("data", [
    b"hello, world\n" * 20,
    os.urandom(4096),
    b"\x00" * 132,
    b"\x00" * 128 + b"DICX" + b"\x00" * 64,
    b"DICM" + b"\x00" * 200,
    b"\x00" * 100,
])
def test_not_dicom(data: bytes) -> None:
    _rejected(data, QuarantineReason.NOT_DICOM)


def test_raw_dataset_without_preamble_is_not_dicom() -> None:
    ds = _dataset()
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_dataset(buffer, ds)
    raw = buffer.getvalue()
    assert PATIENT_ID.encode() in raw  # really the dataset, just without the Part 10 header
    _rejected(raw, QuarantineReason.NOT_DICOM)


@pytest.mark.parametrize("name", ["ExplVR_LitEndNoMeta.dcm", "ExplVR_BigEndNoMeta.dcm",
                                  "no_meta.dcm"])
def test_pydicom_files_without_meta_are_not_dicom(name: str) -> None:
    path = get_testdata_file(name)
    assert path is not None
    with open(path, "rb") as handle:
        data = handle.read()
    result = _rejected(data, QuarantineReason.NOT_DICOM)
    ds = pydicom.dcmread(path, force=True)
    for value in ("PatientName", "PatientID"):
        if ds.get(value):
            assert str(ds.get(value)) not in result.message


@pytest.mark.parametrize("signature", [s for s, _ in EXECUTABLE_SIGNATURES])
def test_executable_preamble(signature: bytes) -> None:
    data = bytearray(_good())
    data[: len(signature)] = signature
    data[len(signature):16] = b"\x90" * (16 - len(signature))
    assert read_header(_good()).__class__ is InstanceHeader  # the file itself is fine
    _rejected(bytes(data), QuarantineReason.EXECUTABLE_PREAMBLE)


def test_mz_and_elf_preambles_name_the_format() -> None:
    data = bytearray(_good())
    data[:2] = b"MZ"
    assert "MZ" in _rejected(bytes(data), QuarantineReason.EXECUTABLE_PREAMBLE).message
    data = bytearray(_good())
    data[:4] = b"\x7fELF"
    data[4:8] = b"\x02\x01\x01\x00"
    assert "ELF" in _rejected(bytes(data), QuarantineReason.EXECUTABLE_PREAMBLE).message


@pytest.mark.parametrize("signature", [b"II*\x00", b"MM\x00*"])
def test_tiff_preamble_is_allowed_and_noted(signature: bytes) -> None:
    data = bytearray(_good())
    data[:4] = signature
    data[4:8] = b"\x08\x00\x00\x00"
    header = read_header(bytes(data))
    assert isinstance(header, InstanceHeader)
    assert "tiff_preamble" in header.oddities


def test_other_nonzero_preamble_is_allowed_and_noted() -> None:
    data = bytearray(_good())
    data[:16] = b"Some vendor text"
    header = read_header(bytes(data))
    assert isinstance(header, InstanceHeader)
    assert "nonzero_preamble" in header.oddities
    assert "tiff_preamble" not in header.oddities


@pytest.mark.parametrize("keyword", ["SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"])
def test_missing_uid(keyword: str) -> None:
    ds = _dataset()
    delattr(ds, keyword)
    message = _rejected(to_bytes(ds), QuarantineReason.MISSING_UID).message
    assert keyword in message
    for other in {"SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"} - {keyword}:
        assert other not in message


@pytest.mark.parametrize("keyword", ["SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"])
def test_empty_uid_is_missing(keyword: str) -> None:
    ds = _dataset(**{keyword: ""})
    _rejected(to_bytes(ds), QuarantineReason.MISSING_UID)


def test_missing_uids_message_names_all_of_them() -> None:
    ds = _dataset()
    del ds.StudyInstanceUID
    del ds.SeriesInstanceUID
    message = _rejected(to_bytes(ds), QuarantineReason.MISSING_UID).message
    assert "StudyInstanceUID" in message and "SeriesInstanceUID" in message


def test_too_large() -> None:
    data = _good()
    message = _rejected(data, QuarantineReason.TOO_LARGE, max_size=len(data) - 1).message
    assert "IMAGEBANK_MAX_OBJECT_SIZE" in message
    assert isinstance(read_header(data, max_size=len(data)), InstanceHeader)


@pytest.mark.parametrize("name", ["DICOMDIR", "DICOMDIR-implicit", "DICOMDIR-bigEnd"])
def test_dicomdir(name: str) -> None:
    path = get_testdata_file(name)
    assert path is not None
    with open(path, "rb") as handle:
        data = handle.read()
    ds = pydicom.dcmread(path)
    result = _rejected(data, QuarantineReason.DICOMDIR)
    # A DICOMDIR lists patients: none of them shows in the message.
    for record in ds.DirectoryRecordSequence:
        for keyword in ("PatientName", "PatientID"):
            value = str(record.get(keyword) or "")
            if value:
                assert value not in result.message


def test_unreadable_meta() -> None:
    """A file meta group length of the wrong size cannot be decoded."""
    data = _good()
    assert data[132:140] == b"\x02\x00\x00\x00UL\x04\x00"
    damaged = data[:132] + b"\x02\x00\x00\x00UL\x02\x00" + data[140:142] + data[144:]
    _rejected(damaged, QuarantineReason.UNREADABLE)


def test_garbage_after_the_marker_is_rejected() -> None:
    data = b"\x00" * 128 + b"DICM" + bytes(range(256)) * 4
    result = read_header(data)
    assert isinstance(result, Rejection)
    assert result.reason in (QuarantineReason.TRUNCATED, QuarantineReason.UNREADABLE)


def test_undecodable_value_is_an_oddity_not_a_crash() -> None:
    """A US value of odd length (pydicom raises when decoding it) must not stop the reader."""
    data = _good()
    rows = b"\x28\x00\x10\x00US\x02\x00"
    i = data.index(rows)
    damaged = data[:i] + b"\x28\x00\x10\x00US\x01\x00" + data[i + 8 : i + 9] + data[i + 10 :]
    header = read_header(damaged)
    assert isinstance(header, InstanceHeader)
    assert header.values["rows"] is None
    assert "bad_value:Rows" in header.oddities
    assert header.values["columns"] == 32


def test_bad_numeric_string_is_an_oddity() -> None:
    ds = _dataset()
    ds["SliceThickness"].value = "1.25"
    data = to_bytes(ds)
    i = data.index(b"\x18\x00\x50\x00DS")
    length = int.from_bytes(data[i + 6 : i + 8], "little")
    damaged = data[: i + 8] + b"abc".ljust(length, b" ") + data[i + 8 + length :]
    header = read_header(damaged)
    assert isinstance(header, InstanceHeader)
    assert header.values["slice_thickness"] is None
    assert "bad_value:SliceThickness" in header.oddities


def test_rejection_messages_never_carry_patient_values_from_the_header() -> None:
    """Every rejection of a file carrying patient data leaves it out of the message."""
    ds = _dataset()
    good = to_bytes(ds)
    cases: list[bytes] = [good[:-7], good[: len(good) // 2], good[:700]]
    exe = bytearray(good)
    exe[:2] = b"MZ"
    cases.append(bytes(exe))
    no_uid = _dataset()
    del no_uid.SOPInstanceUID
    cases.append(to_bytes(no_uid))
    for data in cases:
        result = read_header(data)
        assert isinstance(result, Rejection)
        for value in _patient_values(ds):
            assert value not in result.message
