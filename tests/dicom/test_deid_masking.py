"""Burned-in text: masking rules blank their rectangles in real pixel data (every frame, every
sample, any depth, compressed or not), the output is marked and still valid for dciodvfy,
and an object without a rule for its device and size is refused."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from deidkit import dciodvfy_errors
from imagebank.dicom.deid import DeidConfig, Refused, deidentify, needs_pixels
from imagebank.dicom.masking import (
    CLEAN_PIXEL_DATA_CODE,
    METHOD_TEXT,
    MaskingError,
    mark_cleaned,
    mask_pixels,
)
from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study
from imagebank.domain.confidentiality import Profile
from imagebank.domain.policy import MaskingRule, Rectangle
from imagebank.domain.pseudonyms import Pseudonymiser
from imagebank.services.policies import load_policy
from testkit import REPO

KEY = bytes(range(32))
NAME, PATIENT, BIRTH = "SMITHSON^ALEXANDRA", "9434765919", "19611203"
MAKER, MODEL = "ACME Ultrasound", "Sonic 9"
ROWS, COLUMNS = 40, 48
#: A banner across the top (where the name and ID are) and a box that overlaps it.
RECTS = frozenset({Rectangle(0, 0, COLUMNS, 4), Rectangle(5, 2, 7, 6)})
RULE = MaskingRule(MAKER, MODEL, RECTS)
ROOT = "1.2.826.0.1.3680043.10.1370.55."

US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
SC_IMAGE = "1.2.840.10008.5.1.4.1.1.7"
SC_WORD = "1.2.840.10008.5.1.4.1.1.7.3"


def _config(*rules: MaskingRule) -> DeidConfig:
    return DeidConfig(Profile(), Pseudonymiser(KEY), masking=frozenset(rules))


def _meta(ds: Dataset) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta


def _patient(ds: Dataset) -> None:
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, PATIENT, BIRTH
    ds.PatientSex = "F"
    ds.AccessionNumber = "RR99887766"
    ds.ReferringPhysicianName = "FOSTERCARE^JONATHAN"
    ds.InstitutionName = "Leeds Teaching Hospitals"
    ds.StudyDescription = f"Echo for {PATIENT}"


def _image(sop_class: str, modality: str, pixels: np.ndarray, *, photometric: str,
           bits_stored: int | None = None, frames: int | None = None,
           planar: int = 0) -> Dataset:
    """An ultrasound or secondary capture object around ``pixels`` (frames, rows, columns,
    samples as numpy lays them out), with identifying values in its header."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid(ROOT)
    ds.StudyInstanceUID = generate_uid(ROOT)
    ds.SeriesInstanceUID = generate_uid(ROOT)
    ds.StudyDate, ds.StudyTime, ds.ContentDate, ds.ContentTime = (
        "20240102", "101500", "20240102", "101600")
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, 1
    ds.Modality = modality
    ds.Manufacturer, ds.ManufacturerModelName = MAKER, MODEL
    _patient(ds)
    if sop_class.startswith(SC_IMAGE):
        ds.ConversionType = "WSD"
    if sop_class.startswith("1.2.840.10008.5.1.4.1.1.6") or sop_class == US_MULTIFRAME:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL", "0001"]
    samples = 3 if photometric == "RGB" else 1
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = ROWS, COLUMNS
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits_stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    if samples > 1:
        ds.PlanarConfiguration = planar
    if frames is not None:
        ds.NumberOfFrames = frames
        if sop_class == US_MULTIFRAME:
            ds.FrameTime = 33.3
            ds.FrameIncrementPointer = 0x00181063
    if sop_class == SC_WORD:
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
        ds.BurnedInAnnotation = "YES"
    if planar == 1:
        pixels = np.moveaxis(pixels, -1, -3)  # (samples, rows, columns) per frame
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    _meta(ds)
    return ds


def _random(shape: tuple[int, ...], dtype: str, low: int, high: int) -> np.ndarray:
    """Pixels that are never the blank, so a blanked pixel cannot pass by chance."""
    return np.random.default_rng(7).integers(low, high, size=shape).astype(dtype)


_TEST_FILES = {
    "sc-jpeg-baseline": "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, YBR_FULL: lossy
    "sc-ybr422-native": "SC_ybr_full_422_uncompressed.dcm",  # chroma subsampled, native
    "us-j2k-ybr-rct": "US1_J2KR.dcm",  # a real ultrasound, JPEG 2000 lossless, YBR_RCT
}


def _object(kind: str) -> Dataset:
    if kind == "us-mono8":
        return _image(US_IMAGE, "US", _random((ROWS, COLUMNS), "u1", 1, 256),
                      photometric="MONOCHROME2")
    if kind in ("us-rgb", "us-rgb-rle"):
        ds = _image(US_IMAGE, "US", _random((ROWS, COLUMNS, 3), "u1", 1, 256),
                    photometric="RGB")
        if kind == "us-rgb-rle":
            ds.compress(RLELossless, generate_instance_uid=False)
        return ds
    if kind == "us-multiframe":
        return _image(US_MULTIFRAME, "US", _random((3, ROWS, COLUMNS), "u1", 1, 256),
                      photometric="MONOCHROME2", frames=3)
    if kind == "sc-rgb-planar1":
        return _image(SC_IMAGE, "OT", _random((ROWS, COLUMNS, 3), "u1", 1, 256),
                      photometric="RGB", planar=1)
    if kind in ("sc-word16", "sc-word16-j2k"):
        ds = _image(SC_WORD, "OT", _random((2, ROWS, COLUMNS), "u2", 1, 4096),
                    photometric="MONOCHROME2", bits_stored=12, frames=2)
        if kind == "sc-word16-j2k":
            ds.compress(JPEG2000Lossless, generate_instance_uid=False)
        return ds
    if kind == "ct-signed16":
        ds = next(make_study(SyntheticPatient.make(4), series=[
            SeriesSpec(slices=1, rows=ROWS, columns=COLUMNS, manufacturer=MAKER, model=MODEL)]))
        _patient(ds)
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 15, 1
        ds.PixelData = _random((ROWS, COLUMNS), "<i2", -2000, 3000).tobytes()
        ds.SmallestImagePixelValue, ds.LargestImagePixelValue = -2000, 3000
        ds.BurnedInAnnotation = "YES"
        return ds
    if kind in _TEST_FILES:  # pydicom's own test files (local, never downloaded)
        ds = pydicom.dcmread(get_testdata_file(_TEST_FILES[kind]))
        ds.Manufacturer, ds.ManufacturerModelName = MAKER, MODEL
        _patient(ds)
        return ds
    raise AssertionError(kind)


#: Each kind and the blank it must show (signed 16 bits: the smallest value).
BLANKS = {"us-mono8": 0, "us-rgb": 0, "us-rgb-rle": 0, "us-multiframe": 0,
          "sc-rgb-planar1": 0, "sc-word16": 0, "sc-word16-j2k": 0, "ct-signed16": -32768,
          "sc-jpeg-baseline": 0, "sc-ybr422-native": 0, "us-j2k-ybr-rct": 0}


def _region(rectangles: frozenset[Rectangle], rows: int, columns: int) -> np.ndarray:
    region = np.zeros((rows, columns), bool)
    for r in rectangles:
        region[r.y:r.y + r.height, r.x:r.x + r.width] = True
    return region


def _assert_masked(after: np.ndarray, before: np.ndarray, frames: int, blank: int,
                   rectangles: frozenset[Rectangle] = RECTS) -> None:
    assert after.shape == before.shape
    if frames == 1:
        after, before = after[None], before[None]
    region = _region(rectangles, after.shape[1], after.shape[2])
    for got, was in zip(after, before, strict=True):
        assert (got[region] == blank).all()  # every sample of every pixel inside
        assert (got[~region] == was[~region]).all()  # every pixel outside, unchanged




def _write(ds: Dataset, path: Path) -> Path:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    path.write_bytes(buffer.getvalue())
    return path


def _codes(ds: Dataset) -> list[str]:
    return [str(item.CodeValue) for item in ds.DeidentificationMethodCodeSequence]


@pytest.mark.parametrize("kind", list(BLANKS))
def test_the_rule_blanks_its_rectangles_and_nothing_else(tmp_path: Path, kind: str) -> None:
    ds = _object(kind)
    source = _write(ds, tmp_path / "in.dcm")
    before = copy.deepcopy(ds)
    pixels = ds.pixel_array.copy()  # YCbCr as RGB, as the masked output will be
    frames = int(ds.get("NumberOfFrames") or 1)
    config = _config(RULE)
    assert needs_pixels(pydicom.dcmread(source, stop_before_pixels=True), config)

    result = deidentify(ds, config)
    assert ds == before  # the input is untouched
    written = _write(result.dataset, tmp_path / "out.dcm")
    out = pydicom.dcmread(written)

    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert "ExtendedOffsetTable" not in out
    _assert_masked(out.pixel_array, pixels, frames, BLANKS[kind])
    assert out.PhotometricInterpretation == ("RGB" if pixels.ndim - (frames > 1) == 3
                                             else ds.PhotometricInterpretation)
    assert out.get("PlanarConfiguration", 0) == 0
    assert out.BurnedInAnnotation == "NO"
    assert _codes(out)[:2] == ["113100", CLEAN_PIXEL_DATA_CODE[0]]
    assert list(out.DeidentificationMethod)[-1] == METHOD_TEXT
    assert result.actions["masked_rectangles"] == len(RECTS)
    assert PATIENT not in str(out) and "SMITHSON" not in str(out)
    if kind == "sc-jpeg-baseline":
        assert out.LossyImageCompression == "01"  # once lossy, always flagged
    if kind == "ct-signed16":
        assert out.SmallestImagePixelValue == -32768 and out.LargestImagePixelValue == 3000
    new = dciodvfy_errors(written) - dciodvfy_errors(source)
    assert not new, sorted(new)[:5]


@pytest.mark.parametrize("rules", [
    (),
    (MaskingRule(MAKER, "Sonic 10", RECTS),),  # another model
    (MaskingRule("Other Medical", MODEL, RECTS),),  # another manufacturer
    (MaskingRule(MAKER, MODEL, RECTS, rows=ROWS + 8, columns=COLUMNS),),  # another size
    (MaskingRule(MAKER, MODEL, RECTS, rows=ROWS, columns=COLUMNS + 8),),
], ids=["no-rule", "other-model", "other-maker", "other-rows", "other-columns"])
def test_without_a_rule_for_its_device_and_size_it_is_refused(rules: tuple[MaskingRule, ...]
                                                              ) -> None:
    ds = _object("us-mono8")
    config = _config(*rules)
    assert not needs_pixels(ds, config)
    with pytest.raises(Refused) as caught:
        deidentify(ds, config)
    message = str(caught.value)
    assert caught.value.reason == "burned_in"
    assert "masking rule" in message and f'"{MAKER}"' in message and f'"{MODEL}"' in message
    assert f"rows {ROWS}, columns {COLUMNS}" in message
    for value in (PATIENT, "SMITHSON", "ALEXANDRA", BIRTH, "RR99887766"):
        assert value not in message


def test_rules_match_the_device_ignoring_case_and_spacing_and_sized_rules_add_up() -> None:
    ds = _object("us-mono8")
    pixels = ds.pixel_array.copy()
    banner = MaskingRule("acme   ULTRASOUND", " sonic 9 ", frozenset({Rectangle(0, 0, 10, 2)}))
    sized = MaskingRule(MAKER, MODEL, frozenset({Rectangle(20, 30, 4, 4)}), ROWS, COLUMNS)
    out = deidentify(ds, _config(banner, sized)).dataset
    _assert_masked(out.pixel_array, pixels, 1, 0, banner.rectangles | sized.rectangles)


@pytest.mark.parametrize("kind", ["us-rgb", "us-rgb-rle", "ct-signed16"])
def test_pixels_of_objects_without_burned_in_text_are_kept_byte_for_byte(kind: str) -> None:
    ds = _object(kind)
    ds.BurnedInAnnotation = "NO"  # trusted: no masking, even with a rule for the device
    syntax = ds.file_meta.TransferSyntaxUID
    config = _config(RULE)
    assert not needs_pixels(ds, config)
    result = deidentify(ds, config)
    out = result.dataset
    assert out.PixelData == ds.PixelData
    assert out.file_meta.TransferSyntaxUID == syntax
    assert CLEAN_PIXEL_DATA_CODE[0] not in _codes(out)
    assert "masked_rectangles" not in result.actions


def test_a_header_parsed_without_pixels_needs_them_and_alone_is_refused(tmp_path: Path
                                                                        ) -> None:
    path = _write(_object("us-rgb"), tmp_path / "us.dcm")
    header = pydicom.dcmread(path, stop_before_pixels=True)
    assert needs_pixels(header, _config(RULE))
    assert not needs_pixels(header, _config())  # refused anyway: no pixels needed for that
    with pytest.raises(Refused) as caught:  # never an output whose pixels were not masked
        deidentify(header, _config(RULE))
    assert caught.value.reason == "burned_in" and "needs_pixels" in str(caught.value)
    full = pydicom.dcmread(path)
    assert deidentify(full, _config(RULE)).dataset.BurnedInAnnotation == "NO"


def test_a_rectangle_outside_the_image_refuses_the_object_with_a_clear_message() -> None:
    ds = _object("us-mono8")
    wide = MaskingRule(MAKER, MODEL, frozenset({Rectangle(40, 0, COLUMNS, 4)}))  # any size
    with pytest.raises(Refused) as caught:
        deidentify(ds, _config(wide))
    message = str(caught.value)
    assert caught.value.reason == "burned_in"
    assert "x=40 y=0 width=48 height=4" in message and "outside the image" in message
    assert f"{COLUMNS} columns, {ROWS} rows" in message
    assert PATIENT not in message and "SMITHSON" not in message


def test_pixel_data_no_installed_decoder_reads_is_refused() -> None:
    # 12-bit lossy JPEG (Process 4): no decoder with a permissive licence (dicom.pixels).
    ds = pydicom.dcmread(get_testdata_file("JPEG-lossy.dcm"))
    ds.BurnedInAnnotation = "YES"
    _patient(ds)
    rule = MaskingRule(str(ds.Manufacturer), str(ds.ManufacturerModelName),
                       frozenset({Rectangle(0, 0, 8, 8)}))
    with pytest.raises(Refused) as caught:
        deidentify(ds, _config(rule))
    assert "cannot be decoded" in str(caught.value) and PATIENT not in str(caught.value)


def test_the_example_policy_masks_its_ultrasound_banner() -> None:
    """docs/policies/leeds.yaml as it is: Policy.masking goes straight to DeidConfig."""
    policy = load_policy(REPO / "docs" / "policies" / "leeds.yaml")
    ds = _image(US_IMAGE, "US", _random((ROWS, COLUMNS), "u1", 1, 256),
                photometric="MONOCHROME2")
    ds.Manufacturer, ds.ManufacturerModelName = "Philips", "EPIQ 7G"  # any size, 800 x 50
    config = DeidConfig(Profile(), Pseudonymiser(KEY), masking=policy.masking)
    with pytest.raises(Refused, match="outside the image"):  # 800 columns on a 48-wide image
        deidentify(ds, config)
    ds.Manufacturer, ds.ManufacturerModelName = "GE Healthcare", "LOGIQ E9"
    ds.Rows, ds.Columns = 768, 1024
    ds.PixelData = _random((768, 1024), "u1", 1, 256).tobytes()
    pixels = ds.pixel_array.copy()
    out = deidentify(ds, config).dataset
    banner = frozenset({Rectangle(0, 0, 1024, 60)})
    _assert_masked(out.pixel_array, pixels, 1, 0, banner)


# -- dicom.masking on its own ----------------------------------------------------------------
def _tiny(photometric: str, pixels: np.ndarray, bits_allocated: int, bits_stored: int,
          frames: int = 1) -> Dataset:
    ds = Dataset()
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits_allocated, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PixelData = pixels.tobytes()
    return ds


def test_monochrome1_is_blanked_with_its_largest_value() -> None:
    pixels = _random((6, 9), "<u2", 0, 1000)
    ds = _tiny("MONOCHROME1", pixels, 16, 10)
    assert mask_pixels(ds, {Rectangle(1, 1, 3, 2)}) == 1
    _assert_masked(ds.pixel_array, pixels, 1, 1023, frozenset({Rectangle(1, 1, 3, 2)}))


def test_bit_packed_frames_are_masked_and_packed_again() -> None:
    # 5 x 5 frames: 25 bits each, so the second frame starts inside a byte.
    frames = np.ones((2, 5, 5), np.uint8)
    frames[1, 4, 4] = 0
    packed = np.packbits(frames.ravel(), bitorder="little").tobytes()
    ds = _tiny("MONOCHROME2", frames, 1, 1, frames=2)
    ds.PixelData = packed + b"\x00" * (len(packed) % 2)
    assert mask_pixels(ds, [Rectangle(0, 0, 2, 1)]) == 2
    _assert_masked(ds.pixel_array, frames, 2, 0, frozenset({Rectangle(0, 0, 2, 1)}))


def test_no_rectangles_change_nothing() -> None:
    pixels = _random((4, 4), "u1", 1, 256)
    ds = _tiny("MONOCHROME2", pixels, 8, 8)
    before = copy.deepcopy(ds)
    assert mask_pixels(ds, []) == 0
    assert ds == before and ds.file_meta == before.file_meta


def test_masking_errors_name_no_header_value() -> None:
    ds = _tiny("MONOCHROME2", _random((4, 4), "u1", 1, 256), 8, 8)
    with pytest.raises(MaskingError, match="outside the image"):
        mask_pixels(ds, [Rectangle(3, 3, 2, 1)])
    del ds.PixelData
    with pytest.raises(MaskingError, match="no Pixel Data"):
        mask_pixels(ds, [Rectangle(0, 0, 1, 1)])


def test_marking_twice_adds_the_clean_pixel_data_option_once() -> None:
    ds = Dataset()
    ds.BurnedInAnnotation = "YES"
    ds.DeidentificationMethod = "engine"
    mark_cleaned(ds)
    mark_cleaned(ds)
    assert ds.BurnedInAnnotation == "NO"
    assert _codes(ds) == [CLEAN_PIXEL_DATA_CODE[0]]
    assert ds.DeidentificationMethodCodeSequence[0].CodeMeaning == CLEAN_PIXEL_DATA_CODE[1]
    assert list(ds.DeidentificationMethod) == ["engine", METHOD_TEXT]
