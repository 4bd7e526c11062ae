"""Frames, bulk data, transcoding and rendering of stored instances (imagebank.dicom.pixels).

Frames are checked against pydicom's own decoding of the whole object; grey levels against the
formulas of PS3.3 C.11.2.1.2 written out here; transcoded files with dicom3tools' dciodvfy.
"""

from __future__ import annotations

import importlib.util
import io
import math
import shutil
import statistics
import subprocess
import time
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.pixels.utils import pack_bits
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from imagebank.dicom import pixels, rendering
from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
from imagebank.domain.errors import (
    ImagebankError,
    InvalidInputError,
    NotAcceptableError,
    NotFoundError,
)
from testkit import SHARED_DATA

ELE = str(ExplicitVRLittleEndian)
IVLE = str(ImplicitVRLittleEndian)
DCIODVFY = shutil.which("dciodvfy")
REAL_CT = SHARED_DATA / "dcmqi-ct-3slice" / "ct-3slice" / "01.dcm"
SR = SHARED_DATA / "highdicom-test-files" / "sr_document.dcm"

#: PS3.18 Table 8.7.3-5, as the standard gives it (not taken from the implementation).
EXPECTED_MEDIA = {
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
}


def _file(name: str) -> bytes:
    path = get_testdata_file(name)
    assert path, name
    return Path(str(path)).read_bytes()


def _read(data: bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data))


def _array(data: bytes) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(_read(data).pixel_array)


def _frames_of(array: np.ndarray, ds: Dataset) -> list[np.ndarray]:
    return list(array) if int(ds.get("NumberOfFrames") or 1) > 1 else [array]


def _part10(ds: Dataset, ts: str = ELE) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = generate_uid()
    ds.file_meta = meta
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _image(stored: np.ndarray, photometric: str = "MONOCHROME2", **attributes: object) -> bytes:
    """A small Secondary Capture image of ``stored`` (frames, rows, columns) or (rows, columns)."""
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "PIXELS^TEST"
    ds.PatientID = "PIXID-0001"
    ds.Modality = "OT"
    ds.set_pixel_data(stored, photometric, 8 * stored.dtype.itemsize)
    if stored.ndim == 3 and photometric.startswith("MONO"):
        ds.NumberOfFrames = stored.shape[0]
    for key, value in attributes.items():
        setattr(ds, key, value)
    return _part10(ds)


@pytest.fixture(scope="module")
def ct() -> bytes:
    ds = next(make_study(SyntheticPatient.make(3), series=[SeriesSpec(slices=1, rows=64,
                                                                       columns=64)]))
    return to_bytes(ds)


# -- frames -----------------------------------------------------------------------------------


def test_frame_count() -> None:
    assert pixels.frame_count(_file("emri_small.dcm")) == 10
    assert pixels.frame_count(_file("CT_small.dcm")) == 1
    assert pixels.frame_count(_file("emri_small_RLE.dcm")) == 10
    assert pixels.frame_count(SR.read_bytes()) == 0


@pytest.mark.parametrize("name", ["emri_small.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm",
                                  "MR_small_implicit.dcm", "SC_rgb_2frame.dcm",
                                  "SC_rgb_expb_2frame.dcm", "rtdose.dcm"])
def test_native_frames_are_little_endian_raw_pixels(name: str) -> None:
    data = _file(name)
    ds = _read(data)
    expected = _frames_of(_array(data), ds)
    numbers = list(range(len(expected), 0, -1))  # every frame, last first
    media, parts = pixels.frames(data, numbers, [ELE])
    assert media == f"application/octet-stream; transfer-syntax={ELE}"
    assert len(parts) == len(expected)
    for number, part in zip(numbers, parts, strict=True):
        want = expected[number - 1]
        got = np.frombuffer(part, want.dtype.newbyteorder("<")).reshape(want.shape)
        assert np.array_equal(got, want)


def test_native_frames_any_and_implicit_accept(ct: bytes) -> None:
    raw = _array(ct).astype("<u2").tobytes()
    assert pixels.frames(ct, [1], ["*"]) == (
        f"application/octet-stream; transfer-syntax={ELE}", [raw])
    media, parts = pixels.frames(ct, [1, 1], [IVLE])
    assert media.endswith(f"transfer-syntax={IVLE}") and parts == [raw, raw]
    with pytest.raises(NotAcceptableError):
        pixels.frames(ct, [1], [str(JPEGBaseline8Bit)])


def test_bit_packed_frames_not_on_byte_boundaries() -> None:
    rng = np.random.default_rng(7)
    masks = rng.integers(0, 2, size=(3, 3, 3), dtype=np.uint8)  # 9 bits per frame
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Rows = ds.Columns = 3
    ds.NumberOfFrames = 3
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 1
    ds.HighBit = 0
    ds.PixelRepresentation = 0
    ds.PixelData = pack_bits(masks)
    data = _part10(ds)
    _, parts = pixels.frames(data, [1, 2, 3], ["*"])
    for mask, part in zip(masks, parts, strict=True):
        bits = np.unpackbits(np.frombuffer(part, np.uint8), bitorder="little")
        assert np.array_equal(bits[:9].reshape(3, 3), mask)
    liver = _file("liver.dcm")  # 3 frames of 512 x 512 bits
    _, parts = pixels.frames(liver, [2], [ELE])
    want = _array(liver)[1]
    assert np.array_equal(np.unpackbits(np.frombuffer(parts[0], np.uint8),
                                        bitorder="little").reshape(want.shape), want)


def _with_pixel_data(data: bytes, value: bytes, **attributes: object) -> bytes:
    ds = _read(data)
    ds.PixelData = value
    ds["PixelData"].VR = "OB"
    for key, item in attributes.items():
        setattr(ds, key, item)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "emri_small_RLE.dcm", "JPEG2000.dcm",
                                  "emri_small_jpeg_2k_lossless.dcm", "JPEG-LL.dcm",
                                  "SC_rgb_jpeg_gdcm.dcm", "emri_small_jpeg_ls_lossless.dcm",
                                  "SC_rgb_dcmtk_+eb+cy+np.dcm", "SC_rgb_rle_2frame.dcm"])
def test_encapsulated_frames_as_stored(name: str) -> None:
    """The frames re-encapsulated one fragment each decode to what pydicom decodes of the
    stored object: the frame boundaries are right and nothing is lost."""
    data = _file(name)
    ds = _read(data)
    ts = str(ds.file_meta.TransferSyntaxUID)
    n = int(ds.get("NumberOfFrames") or 1)
    media, parts = pixels.frames(data, list(range(1, n + 1)), ["*"])
    assert media == f"{EXPECTED_MEDIA[ts]}; transfer-syntax={ts}"
    assert len(parts) == n
    rebuilt = _with_pixel_data(data, encapsulate(parts))
    assert np.array_equal(_array(rebuilt), _array(data))
    assert pixels.frames(data, [n], [ts]) == (media, [parts[-1]])


def test_encapsulated_frames_decoded_when_only_uncompressed_is_accepted() -> None:
    for name in ("emri_small_jpeg_2k_lossless.dcm", "SC_rgb_rle_2frame.dcm",
                 "emri_small_jpeg_ls_lossless.dcm", "examples_ybr_color.dcm"):
        data = _file(name)
        ds = _read(data)
        expected = _frames_of(_array(data), ds)
        media, parts = pixels.frames(data, [2, 1], [ELE, IVLE])
        assert media == f"application/octet-stream; transfer-syntax={ELE}", name
        for want, part in zip([expected[1], expected[0]], parts, strict=True):
            assert np.array_equal(np.frombuffer(part, want.dtype).reshape(want.shape), want)


def test_offset_tables_and_fragments() -> None:
    """Basic Offset Table, Extended Offset Table and several fragments per frame, with and
    without a Basic Offset Table, all give the same frames."""
    data = _file("emri_small_jpeg_2k_lossless.dcm")
    _, stored = pixels.frames(data, list(range(1, 11)), ["*"])
    variants = {
        "bot, 3 fragments": _with_pixel_data(data, encapsulate(stored, 3, has_bot=True)),
        "no bot, 2 fragments": _with_pixel_data(data, encapsulate(stored, 2, has_bot=False)),
        "no bot, 1 fragment": _with_pixel_data(data, encapsulate(stored, 1, has_bot=False)),
    }
    value, offsets, lengths = encapsulate_extended(stored)
    variants["extended offset table"] = _with_pixel_data(
        data, value, ExtendedOffsetTable=offsets, ExtendedOffsetTableLengths=lengths)
    want = _array(data)
    for label, variant in variants.items():
        assert pixels.frames(variant, list(range(1, 11)), ["*"])[1] == stored, label
        assert pixels.frames(variant, [7], ["*"])[1] == [stored[6]], label
        _, raw = pixels.frames(variant, [4], [ELE])
        assert np.array_equal(np.frombuffer(raw[0], want.dtype).reshape(64, 64), want[3]), label


def test_frame_errors(ct: bytes) -> None:
    ds = _read(ct)
    for number in (0, 2, -1):
        with pytest.raises(NotFoundError) as caught:
            pixels.frames(ct, [number], ["*"])
        message = str(caught.value)
        assert str(ds.PatientID) not in message and str(ds.SOPInstanceUID) not in message
        assert "1 frame" in message
    with pytest.raises(NotFoundError):
        pixels.frames(_file("emri_small_RLE.dcm"), [11], ["*"])
    with pytest.raises(InvalidInputError) as caught:
        pixels.frames(SR.read_bytes(), [1], ["*"])
    assert caught.value.code == "no_pixel_data"
    with pytest.raises(InvalidInputError):
        pixels.frames(ct, [], ["*"])
    with pytest.raises(InvalidInputError) as caught:
        pixels.frames(b"not dicom at all", [1], ["*"])
    assert caught.value.code == "unreadable"


def test_compressed_frames_in_an_unacceptable_syntax() -> None:
    rle = _file("MR_small_RLE.dcm")
    with pytest.raises(NotAcceptableError):
        pixels.frames(rle, [1], [str(JPEGBaseline8Bit)])
    # 12-bit JPEG Extended: no decoder with a permissive licence is installed.
    lossy = _file("JPEG-lossy.dcm")
    with pytest.raises(NotAcceptableError) as caught:
        pixels.frames(lossy, [1], [ELE])
    assert "1.2.840.10008.1.2.4.51" in str(caught.value)
    media, parts = pixels.frames(lossy, [1], ["*"])
    assert media == "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.51"
    assert parts[0][:2] == b"\xff\xd8"  # a JPEG stream (SOI)


def test_real_ct_frame() -> None:
    data = REAL_CT.read_bytes()
    _, parts = pixels.frames(data, [1], ["*"])
    want = _array(data)
    assert np.array_equal(np.frombuffer(parts[0], want.dtype.newbyteorder("<")).reshape(
        want.shape), want)


# -- bulk data --------------------------------------------------------------------------------


def test_bulkdata_of_pixel_data() -> None:
    native = _file("emri_small.dcm")
    assert pixels.bulkdata(native, 0x7FE00010) == (
        f"application/octet-stream; transfer-syntax={ELE}", _read(native).PixelData)
    big = _file("MR_small_bigendian.dcm")
    assert pixels.bulkdata(big, 0x7FE00010)[1] == _array(big).astype("<i2").tobytes()
    single = _file("JPEG2000.dcm")
    media, value = pixels.bulkdata(single, 0x7FE00010)
    assert media == "image/jp2; transfer-syntax=1.2.840.10008.1.2.4.91"
    assert value == pixels.frames(single, [1], ["*"])[1][0]
    multi = _file("emri_small_RLE.dcm")  # several compressed frames: one native body
    media, value = pixels.bulkdata(multi, 0x7FE00010)
    assert media == f"application/octet-stream; transfer-syntax={ELE}"
    assert value == _array(multi).astype("<u2").tobytes()


def test_bulkdata_of_other_elements(ct: bytes) -> None:
    ds = _read(ct)
    profile = bytes(range(256)) * 20  # long enough to be left in the stored bytes
    ds.ICCProfile = profile
    ds.add_new(0x00091010, "OB", b"\x01\x02\x03\x04")
    ds.add_new(0x00090010, "LO", "IMAGEBANK TEST")
    item = Dataset()
    item.add_new(0x00660023, "OW", b"\x05\x06" * 600)  # Triangle Point Index List
    ds.add_new(0x00660002, "SQ", Sequence([item]))  # Surface Sequence
    data = to_bytes(ds)
    assert pixels.bulkdata(data, 0x00282000) == ("application/octet-stream", profile)
    assert pixels.bulkdata(data, 0x00091010) == ("application/octet-stream",
                                                 b"\x01\x02\x03\x04")
    assert pixels.bulkdata(data, 0x00660023)[1] == b"\x05\x06" * 600
    with pytest.raises(NotFoundError):
        pixels.bulkdata(data, 0x00420011)  # Encapsulated Document: absent
    with pytest.raises(NotFoundError):
        pixels.bulkdata(data, 0x00100010)  # Patient's Name is not bulk data
    with pytest.raises(NotFoundError):
        pixels.bulkdata(SR.read_bytes(), 0x7FE00010)


# -- transcoding ------------------------------------------------------------------------------


def _dciodvfy_errors(data: bytes, folder: Path, name: str) -> set[str]:
    assert DCIODVFY, "dciodvfy is missing: apt-get install dicom3tools"
    path = folder / name
    path.write_bytes(data)
    result = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, check=False)
    return {line.strip() for line in (result.stdout + result.stderr).splitlines()
            if line.startswith("Error")}


@pytest.mark.parametrize(("name", "target"), [
    ("synthetic", IVLE), ("synthetic", ELE), ("MR_small_RLE.dcm", ELE),
    ("emri_small_jpeg_2k_lossless.dcm", IVLE), ("SC_rgb_dcmtk_+eb+cy+np.dcm", ELE),
    ("MR_small_bigendian.dcm", ELE), ("image_dfl.dcm", ELE), ("real", IVLE),
])
def test_transcode(name: str, target: str, ct: bytes, tmp_path: Path) -> None:
    data = {"synthetic": ct, "real": REAL_CT.read_bytes()}.get(name) or _file(name)
    before = _read(data)
    out = pixels.transcode(data, target)
    after = _read(out)
    assert after.file_meta.TransferSyntaxUID == target
    assert after.SOPInstanceUID == before.SOPInstanceUID
    assert after.file_meta.MediaStorageSOPInstanceUID == before.SOPInstanceUID
    assert np.array_equal(after.pixel_array, _array(data))
    if "YBR" in str(before.PhotometricInterpretation) and before.file_meta.TransferSyntaxUID \
            .is_compressed:
        assert after.PhotometricInterpretation == "RGB"
    assert after.PatientName == before.PatientName
    assert after.StudyInstanceUID == before.StudyInstanceUID
    known = _dciodvfy_errors(data, tmp_path, "in.dcm")
    if "Error - Dicom dataset read failed" in known:  # dciodvfy cannot read deflated files
        before.file_meta.TransferSyntaxUID = ELE
        known = _dciodvfy_errors(to_bytes(before), tmp_path, "in.dcm")
    new = _dciodvfy_errors(out, tmp_path, "out.dcm") - known
    assert not new, new


def test_transcode_identity_and_refusals(ct: bytes) -> None:
    assert pixels.transcode(ct, ELE) is ct
    with pytest.raises(NotAcceptableError):
        pixels.transcode(ct, str(JPEG2000Lossless))
    with pytest.raises(NotAcceptableError):
        pixels.transcode(ct, str(ExplicitVRBigEndian))
    with pytest.raises(NotAcceptableError):
        pixels.transcode(_file("JPEG-lossy.dcm"), ELE)
    # An object without pixel data is re-encoded as well.
    sr = SR.read_bytes()
    assert _read(pixels.transcode(sr, IVLE)).file_meta.TransferSyntaxUID == IVLE


# -- rendering --------------------------------------------------------------------------------

STORED = np.array([[0, 44, 45, 50, 69, 70, 71, 75, 95, 200]], dtype=np.int16)
SLOPE, INTERCEPT = 2, -100  # values 2 * stored - 100: -100, -12, -10, 0, 38, 40, 42, 50, 90, 300


def _linear(x: float, c: float, w: float) -> int:
    """PS3.3 C.11.2.1.2.1, output range 0..255."""
    if x <= c - 0.5 - (w - 1) / 2:
        return 0
    if x > c - 0.5 + (w - 1) / 2:
        return 255
    return round(((x - (c - 0.5)) / (w - 1) + 0.5) * 255)


def _linear_exact(x: float, c: float, w: float) -> int:
    """PS3.3 C.11.2.1.3.2."""
    if x <= c - w / 2:
        return 0
    if x > c + w / 2:
        return 255
    return round(((x - c) / w + 0.5) * 255)


def _sigmoid(x: float, c: float, w: float) -> int:
    """PS3.3 C.11.2.1.3.1."""
    return round(255 / (1 + math.exp(-4 * (x - c) / w)))


def _grey(png: bytes) -> list[int]:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.mode == "L"
    return list(np.asarray(image)[0])


def _values() -> list[float]:
    return [SLOPE * float(v) + INTERCEPT for v in STORED[0]]


@pytest.mark.parametrize(("function", "formula"), [("LINEAR", _linear),
                                                   ("LINEAR_EXACT", _linear_exact),
                                                   ("SIGMOID", _sigmoid)])
def test_window_functions(function: str, formula: object) -> None:
    data = _image(STORED, RescaleSlope=SLOPE, RescaleIntercept=INTERCEPT)
    expected = [formula(x, 40, 100) for x in _values()]  # type: ignore[operator]
    assert _grey(rendering.render(data, window=(40, 100, function))) == expected
    if function == "LINEAR":  # hand-checked: (0 - 39.5) / 99 + 0.5 = 0.101 -> 26
        assert expected[:5] == [0, 0, 0, 26, 124] and expected[-2:] == [255, 255]


def test_window_from_the_object_and_full_range() -> None:
    own = _image(STORED, RescaleSlope=SLOPE, RescaleIntercept=INTERCEPT, WindowCenter=[30, 500],
                 WindowWidth=[60, 1000])
    assert _grey(rendering.render(own)) == [_linear(x, 30, 60) for x in _values()]
    assert _grey(rendering.render(own, window=(40, 100, "LINEAR"))) == [
        _linear(x, 40, 100) for x in _values()]
    sigmoid = _image(STORED, RescaleSlope=SLOPE, RescaleIntercept=INTERCEPT, WindowCenter=30,
                     WindowWidth=60, VOILUTFunction="SIGMOID")
    assert _grey(rendering.render(sigmoid)) == [_sigmoid(x, 30, 60) for x in _values()]
    bare = _image(STORED, RescaleSlope=SLOPE, RescaleIntercept=INTERCEPT)
    assert _grey(rendering.render(bare)) == [round((x + 100) / 400 * 255) for x in _values()]


def test_monochrome1_is_inverted() -> None:
    data = _image(STORED, "MONOCHROME1", RescaleSlope=SLOPE, RescaleIntercept=INTERCEPT)
    assert _grey(rendering.render(data, window=(40, 100, "LINEAR"))) == [
        255 - _linear(x, 40, 100) for x in _values()]


def test_per_frame_functional_groups() -> None:
    """Enhanced multi-frame objects: rescale and window of each frame (PS3.3 C.7.6.16)."""
    stored = np.stack([STORED, STORED]).astype(np.int16)
    shared = Dataset()
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept = SLOPE, INTERCEPT
    transform.RescaleType = "US"
    shared.PixelValueTransformationSequence = Sequence([transform])
    per_frame = []
    for center, width in ((40, 100), (0, 30)):
        frame, voi = Dataset(), Dataset()
        voi.WindowCenter, voi.WindowWidth = center, width
        frame.FrameVOILUTSequence = Sequence([voi])
        per_frame.append(frame)
    data = _image(stored, SharedFunctionalGroupsSequence=Sequence([shared]),
                  PerFrameFunctionalGroupsSequence=Sequence(per_frame))
    assert _grey(rendering.render(data, 1)) == [_linear(x, 40, 100) for x in _values()]
    assert _grey(rendering.render(data, 2)) == [_linear(x, 0, 30) for x in _values()]


def test_render_sizes_formats_and_colour(ct: bytes) -> None:
    wide = _image(np.arange(64 * 128, dtype=np.uint16).reshape(64, 128))
    image = Image.open(io.BytesIO(rendering.render(wide, viewport=(100, 100))))
    assert image.size == (100, 50)  # (width, height): the aspect ratio is kept
    image = Image.open(io.BytesIO(rendering.render(wide, viewport=(300, 512))))
    assert image.size == (512, 256)
    low = rendering.render(ct, media_type="image/jpeg", quality=5)
    high = rendering.render(ct, media_type="image/jpeg", quality=95)
    assert Image.open(io.BytesIO(high)).format == "JPEG" and len(low) < len(high)
    assert Image.open(io.BytesIO(high)).size == (64, 64)
    for media, kind in (("image/gif", "GIF"), ("image/jp2", "JPEG2000")):
        assert Image.open(io.BytesIO(rendering.render(ct, media_type=media))).format == kind
    rgb = _file("SC_rgb_rle.dcm")
    decoded = np.asarray(Image.open(io.BytesIO(rendering.render(rgb))))
    assert np.array_equal(decoded, _array(rgb))
    ybr = _file("SC_rgb_dcmtk_+eb+cy+np.dcm")  # JPEG of YBR_FULL_422: shown as RGB
    decoded = np.asarray(Image.open(io.BytesIO(rendering.render(ybr))))
    assert decoded.shape == (100, 100, 3)
    assert np.abs(decoded.astype(int) - _array(ybr).astype(int)).max() <= 1


def test_render_real_and_compressed_images() -> None:
    data = REAL_CT.read_bytes()
    ds = _read(data)
    image = Image.open(io.BytesIO(rendering.render(data)))
    assert image.size == (int(ds.Columns), int(ds.Rows)) and image.mode == "L"
    for name in ("JPEG-LL.dcm", "emri_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm",
                 "JPEG2000.dcm", "liver.dcm"):
        png = rendering.render(_file(name), viewport=(64, 64))
        assert max(Image.open(io.BytesIO(png)).size) == 64, name


def test_thumbnail_is_the_middle_frame() -> None:
    colours = np.zeros((3, 8, 8, 3), dtype=np.uint8)
    colours[0, ..., 0] = colours[1, ..., 1] = colours[2, ..., 2] = 200  # red, green, blue
    data = _image(colours, "RGB")
    thumb = Image.open(io.BytesIO(rendering.thumbnail(data, media_type="image/png", size=4)))
    assert thumb.size == (4, 4)
    assert tuple(np.asarray(thumb)[2, 2]) == (0, 200, 0)
    jpeg = Image.open(io.BytesIO(rendering.thumbnail(_file("emri_small.dcm"), size=32)))
    assert jpeg.format == "JPEG" and jpeg.size == (32, 32)
    # Never enlarged.
    assert Image.open(io.BytesIO(rendering.thumbnail(data, size=128))).size == (8, 8)


def test_render_errors(ct: bytes) -> None:
    with pytest.raises(NotAcceptableError):
        rendering.render(ct, media_type="image/tiff")
    for kwargs in ({"quality": 0}, {"quality": 101}, {"viewport": (0, 10)},
                   {"window": (40, 0.5, "LINEAR")}, {"window": (40, 0, "SIGMOID")},
                   {"window": (40, 100, "CUBIC")}, {"window": (float("nan"), 100, "LINEAR")}):
        with pytest.raises(InvalidInputError):
            rendering.render(ct, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        rendering.render(_file("emri_small.dcm"), 11)
    with pytest.raises(InvalidInputError) as caught:
        rendering.render(SR.read_bytes())
    assert caught.value.code == "no_pixel_data"
    with pytest.raises(InvalidInputError) as caught:
        rendering.render(_file("JPEG-lossy.dcm"))
    assert caught.value.code == "cannot_render"
    with pytest.raises(InvalidInputError) as caught:
        rendering.thumbnail(_file("JPEG-lossy.dcm"))
    assert caught.value.code == "cannot_render"


# -- speed ------------------------------------------------------------------------------------


def test_speed_of_a_512_ct_frame_and_rendering() -> None:
    ds = next(make_study(SyntheticPatient.make(4), series=[SeriesSpec(slices=1)]))
    data = to_bytes(ds)
    assert (ds.Rows, ds.Columns, ds.BitsAllocated) == (512, 512, 16)

    def median_ms(call: object, runs: int = 9) -> float:
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            call()  # type: ignore[operator]
            times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times)

    assert median_ms(lambda: pixels.frames(data, [1], ["*"])) < 5
    assert median_ms(lambda: rendering.render(data)) < 30


def test_no_warning_escapes() -> None:
    data = _file("SC_rgb_small_odd_jpeg.dcm")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pixels.frames(data, [1], [ELE])
        rendering.render(data)
        pixels.transcode(data, ELE)
    assert caught == []


def test_object_without_transfer_syntax_in_its_file_meta(ct: bytes) -> None:
    """Archived with the oddity no_transfer_syntax: the encoding found is used (tolerant)."""
    at = ct.index(b"\x02\x00\x10\x00UI")
    length = int.from_bytes(ct[at + 6 : at + 8], "little")
    stripped = bytearray(ct[:at] + ct[at + 8 + length :])
    group_length = int.from_bytes(stripped[140:144], "little") - 8 - length
    stripped[140:144] = group_length.to_bytes(4, "little")
    data = bytes(stripped)
    assert "TransferSyntaxUID" not in _read(data).file_meta
    assert pixels.frames(data, [1], [ELE]) == pixels.frames(ct, [1], [ELE])
    out = pixels.transcode(data, ELE)
    assert out != data and _read(out).file_meta.TransferSyntaxUID == ELE
    assert np.array_equal(_array(out), _array(ct))


def _pydicom_test_files() -> list[Path]:
    roots = [Path(str(pydicom.data.__file__)).parent / "test_files"]
    store = importlib.util.find_spec("data_store")  # pydicom-data
    if store is not None and store.origin:
        roots.append(Path(store.origin).parent / "data")
    return sorted({p for root in roots for p in root.rglob("*.dcm")
                   if p.stat().st_size <= 300_000}, key=lambda p: p.name)


@pytest.mark.parametrize("path", _pydicom_test_files(), ids=lambda p: p.name)
def test_every_pydicom_test_file_gives_a_result_or_a_clear_error(path: Path) -> None:
    """Odd, damaged and exotic files: a result or an ImagebankError, never anything else."""
    data = path.read_bytes()
    calls = (lambda: pixels.frame_count(data), lambda: pixels.frames(data, [1], ["*"]),
             lambda: pixels.frames(data, [1], [ELE]), lambda: rendering.render(data),
             lambda: rendering.thumbnail(data), lambda: pixels.transcode(data, IVLE),
             lambda: pixels.bulkdata(data, 0x7FE00010))
    for call in calls:
        try:
            call()
        except ImagebankError as exc:
            assert exc.code in {"unreadable", "no_pixel_data", "damaged_pixel_data",
                                "not_acceptable", "cannot_render", "not_found"}, exc.code
            assert "\n" not in str(exc)


def test_float_pixel_data_with_nan_and_infinity() -> None:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map
    ds.SOPInstanceUID = generate_uid()
    ds.Rows = ds.Columns = 2
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 32
    ds.NumberOfFrames = 1
    values = np.array([[np.nan, 1.0], [2.0, np.inf]], dtype="<f4")
    ds.FloatPixelData = values.tobytes()
    data = _part10(ds)
    assert pixels.frames(data, [1], ["*"])[1] == [values.tobytes()]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grey = np.asarray(Image.open(io.BytesIO(rendering.render(data))))
    # The full range of the finite values (1..2); NaN shows as black, +inf as white.
    assert grey.tolist() == [[0, 0], [255, 255]]
