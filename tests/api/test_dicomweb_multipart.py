"""multipart/related reading and writing, and DICOMweb content negotiation, on their own."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_files

from imagebank.api import dicomweb_stow, multipart
from imagebank.api.dicomweb_media import (
    negotiate_bulkdata,
    negotiate_dicom,
    negotiate_frames,
    negotiate_json,
    negotiate_rendered,
)
from imagebank.domain.errors import (
    InvalidInputError,
    NotAcceptableError,
    UnsupportedMediaTypeError,
)

BOUNDARY = "b0und4ry-x"


def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    async def generate() -> AsyncIterator[bytes]:
        for start in range(0, len(data), size):
            yield data[start:start + size]
    return generate()


def _read(data: bytes, size: int = 1 << 16, limit: int = 1 << 30) -> list[multipart.Part]:
    return asyncio.run(multipart.read_parts(_chunks(data, size), BOUNDARY.encode(),
                                            limit=limit))


def _body(parts: list[bytes], *, preamble: bytes = b"", epilogue: bytes = b"",
          padding: bytes = b"") -> bytes:
    out = [preamble]
    for index, part in enumerate(parts):
        lead = b"" if index == 0 and not preamble else b"\r\n"
        out.append(lead + f"--{BOUNDARY}".encode() + padding +
                   b"\r\nContent-Type: application/dicom\r\n\r\n" + part)
    out.append(f"\r\n--{BOUNDARY}--".encode() + epilogue)
    return b"".join(out)


PARTS = [b"first part", b"", b"\r\n--not-the-boundary\r\n" + bytes(range(256)) * 40,
         b"--b0und4ry-" + b"x" * 10]  # a near-delimiter that is not one (no CRLF before)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 13, 64, 1000, 1 << 20])
def test_parts_are_read_whatever_the_chunking(size: int) -> None:
    body = _body(PARTS, preamble=b"ignored preamble\r\n", epilogue=b"\r\nignored epilogue")
    parts = _read(body, size)
    assert [p.body for p in parts] == PARTS
    assert all(p.headers == {"content-type": "application/dicom"} for p in parts)
    assert parts[0].media_type == multipart.MediaType("application/dicom", {})


def test_transport_padding_after_a_delimiter_is_allowed() -> None:
    assert [p.body for p in _read(_body(PARTS[:2], padding=b" \t"), 5)] == PARTS[:2]


@pytest.mark.parametrize(("body", "words"), [
    (b"no delimiter at all", "not multipart/related"),
    (_body([b"abc"])[:-4], "cut short"),  # no close delimiter
    (f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\nabc".encode(), "cut short"),
    (f"--{BOUNDARY}\r\nno colon here\r\n\r\nabc\r\n--{BOUNDARY}--".encode(), "malformed"),
    (f"--{BOUNDARY}xx\r\n\r\nabc\r\n--{BOUNDARY}--".encode(), "line end"),
])
def test_a_malformed_body_is_refused_with_a_reason(body: bytes, words: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        _read(body, 3)
    assert caught.value.code == "bad_multipart"
    assert words in str(caught.value)


def test_a_body_over_the_limit_is_refused() -> None:
    with pytest.raises(InvalidInputError) as caught:
        _read(_body([b"x" * 1000]), 100, limit=500)
    assert caught.value.code == "too_large"


def test_written_bodies_read_back() -> None:
    values = [("application/dicom; transfer-syntax=1.2.840.10008.1.2.1", b"one\r\n--x"),
              ("application/octet-stream", b"")]
    body = b"".join(multipart.encode(BOUNDARY, iter(values)))
    parts = _read(body, 4)
    assert [(p.headers["content-type"], p.body) for p in parts] == values
    content_type = multipart.parse_media_type(
        multipart.content_type(BOUNDARY, "application/dicom"))
    assert content_type.type == "multipart/related"
    assert content_type.params == {"type": "application/dicom", "boundary": BOUNDARY}


def test_media_types_and_boundaries_are_parsed() -> None:
    media = multipart.parse_media_type(
        'Multipart/Related; TYPE="application/dicom"; boundary="a b,c"; q=0.5')
    assert media.type == "multipart/related"
    assert media.params == {"type": "application/dicom", "boundary": "a b,c", "q": "0.5"}
    assert media.quality == 0.5
    assert multipart.boundary_of(media) == b"a b,c"
    with pytest.raises(UnsupportedMediaTypeError):
        multipart.boundary_of(multipart.parse_media_type("application/dicom"))
    with pytest.raises(InvalidInputError):
        multipart.boundary_of(multipart.parse_media_type("multipart/related; type=x"))
    assert multipart.split_header_list('a/b; x="1,2", c/d ,, ') == ['a/b; x="1,2"', "c/d"]


# -- negotiation ------------------------------------------------------------------------------
def test_json_resources() -> None:
    assert negotiate_json(None) == "application/dicom+json"
    assert negotiate_json("application/dicom+json, application/json") == "application/dicom+json"
    assert negotiate_json("application/json") == "application/json"
    assert negotiate_json("text/html;q=0.9, */*;q=0.1") == "application/dicom+json"
    assert negotiate_json("application/dicom+json;q=0.2, application/json") == "application/json"
    for refused in ("application/dicom+xml", "image/png", "application/dicom+json;q=0"):
        with pytest.raises(NotAcceptableError):
            negotiate_json(refused)


def test_instances_with_transfer_syntaxes() -> None:
    choice = negotiate_dicom('multipart/related; type="application/dicom"',
                             single_allowed=False)
    assert choice.multipart and choice.syntaxes == ("*",) and choice.as_stored("1.2.3")
    choice = negotiate_dicom(
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1;'
        ' q=0.5, multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.'
        '1.2.4.50', single_allowed=False)
    assert choice.syntaxes == ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.1")
    assert not choice.as_stored("1.2.840.10008.1.2.5")
    assert choice.as_stored("1.2.840.10008.1.2.1")
    assert choice.targets() == ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.1")
    assert negotiate_dicom("*/*", single_allowed=False).syntaxes == ("*",)
    single = negotiate_dicom("application/dicom", single_allowed=True)
    assert not single.multipart
    with pytest.raises(NotAcceptableError):
        negotiate_dicom("application/dicom", single_allowed=False)
    with pytest.raises(NotAcceptableError):
        negotiate_dicom('multipart/related; type="application/dicom+xml"', single_allowed=True)


def test_frames_bulkdata_and_rendered() -> None:
    explicit = "1.2.840.10008.1.2.1"
    assert negotiate_frames('multipart/related; type="application/octet-stream"') == [explicit]
    assert negotiate_frames(
        "multipart/related; type=application/octet-stream; transfer-syntax=*") == ["*"]
    assert negotiate_frames('multipart/related; type="image/jls", */*;q=0.1') == [
        "1.2.840.10008.1.2.4.80", "*"]
    with pytest.raises(NotAcceptableError):
        negotiate_frames("application/octet-stream")
    assert negotiate_bulkdata('multipart/related; type="application/octet-stream"') is True
    assert negotiate_bulkdata("application/octet-stream") is False
    assert negotiate_bulkdata(None) is True
    assert negotiate_rendered(None) == "image/jpeg"
    assert negotiate_rendered("image/webp, image/png;q=0.8") == "image/png"
    with pytest.raises(NotAcceptableError):
        negotiate_rendered("application/dicom")


# -- the UIDs STOW-RS reads from each part ----------------------------------------------------
@pytest.mark.filterwarnings("ignore")
def test_the_uid_probe_reads_what_pydicom_reads() -> None:
    """On every pydicom test file pydicom can read: the fast walk (when it applies) and the
    probe give pydicom's SOP Class, SOP Instance, Study and Series UIDs."""
    walked = 0
    keywords = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
    for path in get_testdata_files():  # (a pattern would try to download files)
        if not Path(path).is_file():
            continue
        data = Path(path).read_bytes()
        try:
            ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
        except Exception:  # not a file pydicom reads
            continue
        expected = [str(ds.get(k, "")).strip("\x00 ") or None for k in keywords]
        fast = dicomweb_stow._walk_uids(data)
        if fast is not None:
            walked += 1
            assert [fast.sop_class, fast.sop_instance, fast.study, fast.series] == expected, path
        probe = dicomweb_stow._probe(dicomweb_stow.part10(data))
        if data[128:132] == b"DICM":
            assert [probe.sop_class, probe.sop_instance, probe.study, probe.series] == (
                expected), path
    assert walked >= 50


def test_a_part_without_its_preamble_gets_one() -> None:
    raw = b"\x02\x00\x01\x00OB\x00\x00\x02\x00\x00\x00\x00\x01"
    assert dicomweb_stow.part10(raw) == bytes(128) + b"DICM" + raw
    whole = bytes(128) + b"DICM" + raw
    assert dicomweb_stow.part10(whole) is whole
    assert dicomweb_stow.part10(b"not dicom") == b"not dicom"
