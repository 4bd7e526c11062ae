"""Masking of burned-in text: blank rectangles of an image's pixel data, as RSNA CTP's pixel
anonymizer does, and mark the object as cleaned (PS3.15 E.3.1, Clean Pixel Data Option).
No I/O.

``mask_pixels(ds, rectangles)`` changes ``ds`` in place. Its Pixel Data (7FE0,0010) is read in
the transfer syntax of ``ds.file_meta`` with pydicom's decoders (its own for native and RLE
data; GDCM, Pillow and pylibjpeg-openjpeg for JPEG, JPEG-LS and JPEG 2000: the same set as
``dicom.pixels``). Every rectangle is blanked in every frame and every sample, and the pixel
data is written back native, for Explicit VR Little Endian:

* the Transfer Syntax UID of the file meta becomes Explicit VR Little Endian, and the
  encapsulation attributes (Extended Offset Table and its lengths, Encapsulated Pixel Data
  Value Total Length) are removed;
* colour in YCbCr (YBR_FULL, YBR_FULL_422, YBR_ICT, YBR_RCT, compressed or not) is converted
  to RGB by the decoder, so Photometric Interpretation becomes RGB, with Planar
  Configuration 0 (pixel by pixel); the Image Pixel attributes are set to what the decoder
  says the values are;
* a lossy transfer syntax (JPEG baseline, lossy JPEG 2000 ...) leaves Lossy Image
  Compression "01" and its method (PS3.3 C.7.6.1.1.5: once lossy, always flagged);
* Smallest/Largest Image Pixel Value (and In Series) are widened to the blank when given.

The blank is the value that shows black: the smallest value Bits Stored and Pixel
Representation allow (0 unsigned, -2^(Bits Stored - 1) signed) for MONOCHROME2, RGB and
PALETTE COLOR (palette entry 0: one uniform colour), the largest for MONOCHROME1. Pixel
values outside the rectangles are the decoded values, unchanged. Bits above Bits Stored (old
overlays kept in unused high bits) are not carried over.

``mark_cleaned(ds)`` sets Burned In Annotation to NO and adds the Clean Pixel Data Option
(113101, DCM) to the De-identification Method Code Sequence and to the method's text.

Errors are ``MaskingError`` (a ``ValueError``): a rectangle outside the image, no pixel data,
no decoder for the transfer syntax, damaged pixel data. Messages name rectangles, image sizes
and transfer syntaxes, never a value of the header.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import pack_bits
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

from imagebank.domain.policy import Rectangle

#: CID 7050 code of the Clean Pixel Data Option (PS3.15 E.3.1), scheme DCM.
CLEAN_PIXEL_DATA_CODE = ("113101", "Clean Pixel Data Option")
#: The value added to De-identification Method (0012,0063) (LO, at most 64 characters).
METHOD_TEXT = "Clean Pixel Data Option: policy masking rectangles blanked"

PIXEL_DATA = 0x7FE00010
_FLOAT_PIXEL_DATA = (0x7FE00008, 0x7FE00009)
#: Extended Offset Table, its Lengths, Encapsulated Pixel Data Value Total Length.
_ENCAPSULATION_TAGS = (0x7FE00001, 0x7FE00002, 0x7FE00003)
#: Lossy transfer syntaxes → Lossy Image Compression Method (PS3.3 C.7.6.1.1.5.1).
_LOSSY_METHODS = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",
    "1.2.840.10008.1.2.4.93": "ISO_15444_2",
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",
    "1.2.840.10008.1.2.4.112": "ISO_18181_1",
}
_EXTREMES = (("SmallestImagePixelValue", min), ("LargestImagePixelValue", max),
             ("SmallestPixelValueInSeries", min), ("LargestPixelValueInSeries", max))


class MaskingError(ValueError):
    """The rectangles cannot be applied; the message names no value of the header."""


def mask_pixels(ds: Dataset, rectangles: Iterable[Rectangle]) -> int:
    """Blank ``rectangles`` in every frame of ``ds``'s pixel data, in place; the pixel data is
    then native, for Explicit VR Little Endian (see the module's text). Returns the number of
    frames masked (0, and nothing changed, for no rectangles)."""
    rects = sorted(set(rectangles))
    if not rects:
        return 0
    if PIXEL_DATA not in ds:
        if any(tag in ds for tag in _FLOAT_PIXEL_DATA):
            raise MaskingError("The object's pixel data is floating point (Float or Double "
                               "Float Pixel Data); masking applies to Pixel Data only.")
        raise MaskingError("The object has no Pixel Data (7FE0,0010) to mask.")
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        raise MaskingError("The object has no valid Rows and Columns: its pixel data "
                           "cannot be masked.") from None
    for r in rects:
        if r.x + r.width > columns or r.y + r.height > rows:
            raise MaskingError(
                f"The masking rectangle x={r.x} y={r.y} width={r.width} height={r.height} lies "
                f"outside the image ({columns} columns, {rows} rows); the policy's rule for "
                "this device needs fixing, or rows and columns to limit it to one size.")
    meta = getattr(ds, "file_meta", None)
    syntax_text = str(meta.get("TransferSyntaxUID", "") or "") if meta is not None else ""
    if not syntax_text:
        raise MaskingError("The object has no Transfer Syntax UID: its pixel data cannot be "
                           "read.")
    syntax = UID(syntax_text)
    frames, properties = _masked_frames(ds, syntax, rects)
    _write_back(ds, frames, properties, syntax)
    return len(frames)


def _masked_frames(ds: Dataset, syntax: UID, rects: list[Rectangle]
                   ) -> tuple[list[np.ndarray], dict[str, Any]]:
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise MaskingError(f"The pixel data is stored as {syntax.name}, which this archive "
                           "cannot decode, so it cannot be masked.") from None
    if not decoder.is_available:
        raise MaskingError(f"No decoder for {syntax.name} is installed, so the pixel data "
                           "cannot be masked.")
    frames: list[np.ndarray] = []
    properties: dict[str, Any] = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's warnings may quote header values
            for array, props in decoder.iter_array(ds, raw=False):
                if not frames:
                    properties = dict(props)
                    blank = _blank(properties)
                # Native frames may be views of the element's value (a bytearray is the
                # input's own buffer): always a copy there, never a write through.
                native = not syntax.is_encapsulated
                frame = array.copy() if native or not array.flags.writeable else array
                for r in rects:
                    frame[r.y:r.y + r.height, r.x:r.x + r.width] = blank
                frames.append(frame)
    except MaskingError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "cannot decode"
        raise MaskingError(f"The pixel data ({syntax.name}) cannot be decoded "
                           f"({type(exc).__name__}), so it cannot be masked.") from None
    if not frames:
        raise MaskingError("The pixel data holds no frame to mask.")
    return frames, properties


def _blank(properties: dict[str, Any]) -> Any:
    """The value that shows black, for the decoded frames (see the module's text)."""
    photometric = str(getattr(properties.get("photometric_interpretation"), "value",
                              properties.get("photometric_interpretation", "")))
    bits = int(properties.get("bits_stored") or properties.get("bits_allocated") or 8)
    signed = int(properties.get("pixel_representation") or 0) == 1
    smallest = -(1 << (bits - 1)) if signed else 0
    largest = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    if photometric == "MONOCHROME1":
        return largest
    if photometric in ("MONOCHROME2", "RGB", "PALETTE COLOR"):
        return smallest
    if photometric == "YBR_FULL":  # not left by the decoders (they convert to RGB): kept safe
        return np.array([0, 1 << (bits - 1), 1 << (bits - 1)])
    shown = photometric or "an unknown photometric interpretation"
    raise MaskingError(f"Pixel data decoded as {shown} cannot be blanked.")


def _write_back(ds: Dataset, frames: list[np.ndarray], properties: dict[str, Any],
                syntax: UID) -> None:
    bits_allocated = int(properties.get("bits_allocated") or ds.BitsAllocated)
    if bits_allocated == 1:
        value = pack_bits(np.concatenate([f.ravel() for f in frames]), pad=False)
    else:
        kind = "i" if frames[0].dtype.kind == "i" else "u"
        dtype = np.dtype(f"<{kind}{max(bits_allocated // 8, 1)}")
        value = b"".join(f.astype(dtype, copy=False).tobytes() for f in frames)
    if len(value) % 2:
        value += b"\x00"
    for tag in _ENCAPSULATION_TAGS:
        if tag in ds:
            del ds[tag]
    ds[PIXEL_DATA] = DataElement(PIXEL_DATA, "OB" if bits_allocated <= 8 else "OW", value)
    photometric = properties.get("photometric_interpretation")
    if photometric:
        ds.PhotometricInterpretation = str(getattr(photometric, "value", photometric))
    samples = int(properties.get("samples_per_pixel") or ds.get("SamplesPerPixel") or 1)
    ds.SamplesPerPixel = samples
    if samples > 1:
        ds.PlanarConfiguration = int(properties.get("planar_configuration") or 0)
    bits_stored = int(properties.get("bits_stored") or ds.get("BitsStored") or bits_allocated)
    if int(ds.get("BitsAllocated") or 0) != bits_allocated:
        ds.BitsAllocated = bits_allocated
    if int(ds.get("BitsStored") or 0) != bits_stored:
        ds.BitsStored = bits_stored
        ds.HighBit = bits_stored - 1
    if "pixel_representation" in properties:
        ds.PixelRepresentation = int(properties["pixel_representation"])
    if "NumberOfFrames" in ds or len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    blank = _blank(properties)
    if np.ndim(blank) == 0:
        for keyword, pick in _EXTREMES:
            if keyword in ds and ds[keyword].value is not None:
                try:
                    ds[keyword].value = pick(int(ds[keyword].value), int(blank))
                except (TypeError, ValueError):
                    del ds[keyword]
    method = _LOSSY_METHODS.get(str(syntax))
    if method is not None and str(ds.get("LossyImageCompression", "") or "") != "01":
        ds.LossyImageCompression = "01"
        if not ds.get("LossyImageCompressionMethod"):
            ds.LossyImageCompressionMethod = method
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


def mark_cleaned(ds: Dataset) -> None:
    """Mark ``ds`` as masked: Burned In Annotation NO, and the Clean Pixel Data Option in the
    De-identification Method Code Sequence (after the profile's own code) and the method's
    text (one more value). Marking twice changes nothing more."""
    ds.BurnedInAnnotation = "NO"
    value, meaning = CLEAN_PIXEL_DATA_CODE
    codes = Sequence(list(ds.get("DeidentificationMethodCodeSequence") or []))
    if not any(str(item.get("CodeValue", "")) == value
               and str(item.get("CodingSchemeDesignator", "")) == "DCM" for item in codes):
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        at = next((i + 1 for i, c in enumerate(codes)
                   if str(c.get("CodeValue", "")) == "113100"), 0)
        codes.insert(at, item)
    ds.DeidentificationMethodCodeSequence = codes
    current = ds.get("DeidentificationMethod")
    texts = ([str(v) for v in current] if isinstance(current, MultiValue | list | tuple)
             else [str(current)] if current else [])
    if METHOD_TEXT not in texts:
        texts.append(METHOD_TEXT)
    ds.DeidentificationMethod = texts if len(texts) > 1 else texts[0]
