"""Rendered frames and thumbnails for WADO-RS (PS3.18 10.4, 8.3.5.1): the grayscale pipeline
of PS3.3 C.11 (Modality LUT, VOI LUT or window with the LINEAR, LINEAR_EXACT and SIGMOID
functions, MONOCHROME1 inverted), colour as RGB, viewport and quality, encoded by Pillow.

Frames are read and decoded by ``dicom.pixels``; errors are as there: one line, never a value
of the header (``cannot_render`` when no decoder is available for the syntax).
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.processing import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    convert_color_space,
)

from imagebank.dicom.pixels import (
    _MAX_VIEWPORT,
    RENDERED_FORMATS,
    VOI_FUNCTIONS,
    _decode,
    _indices,
    _open,
    _Pixels,
    _pixels,
    _quiet,
    _Undecodable,
)
from imagebank.domain.errors import InvalidInputError, NotAcceptableError


def render(data: bytes, frame: int = 1, *, media_type: str = "image/png",
           window: tuple[float, float, str] | None = None,
           viewport: tuple[int, int] | None = None, quality: int | None = None) -> bytes:
    """Frame ``frame`` (1-based) as an 8-bit image for display (PS3.18 10.4, 8.3.5.1).

    Grayscale: Modality LUT (PS3.3 C.11.1), then the VOI: ``window=(center, width,
    function)`` (function LINEAR, LINEAR_EXACT or SIGMOID, PS3.3 C.11.2.1.2), else the
    object's own VOI LUT or first window, else the full range of the values; MONOCHROME1 is
    inverted. Colour is sent as RGB. ``viewport=(rows, columns)`` scales the image to fit,
    keeping its aspect ratio; ``quality`` (1-100) applies to JPEG.
    """
    _check_rendering(media_type, window, viewport, quality)
    ds = _open(data)
    return _render_pixels(_pixels(ds, data), frame, media_type=media_type, window=window,
                          viewport=viewport, quality=quality, enlarge=True)


def thumbnail(data: bytes, *, media_type: str = "image/jpeg", size: int = 128) -> bytes:
    """The middle frame rendered to fit in ``size`` × ``size`` (never enlarged)."""
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= _MAX_VIEWPORT:
        raise InvalidInputError(f"The thumbnail size must be from 1 to {_MAX_VIEWPORT}.",
                                code="invalid_viewport")
    _check_rendering(media_type, None, None, None)
    ds = _open(data)
    px = _pixels(ds, data)
    return _render_pixels(px, px.frames // 2 + 1, media_type=media_type, window=None,
                          viewport=(size, size), quality=None, enlarge=False)


def _check_rendering(media_type: str, window: tuple[float, float, str] | None,
                     viewport: tuple[int, int] | None, quality: int | None) -> None:
    if _base_type(media_type) not in RENDERED_FORMATS:
        raise NotAcceptableError(
            f"Rendered images are available as {', '.join(RENDERED_FORMATS)}.")
    if quality is not None and (isinstance(quality, bool) or not isinstance(quality, int)
                                or not 1 <= quality <= 100):
        raise InvalidInputError("The quality must be a whole number from 1 to 100.",
                                code="invalid_quality")
    if viewport is not None:
        if len(viewport) != 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= _MAX_VIEWPORT
            for v in viewport
        ):
            raise InvalidInputError(
                f"The viewport is two whole numbers (rows, columns) from 1 to {_MAX_VIEWPORT}.",
                code="invalid_viewport")
    if window is not None:
        if len(window) not in (2, 3):
            raise InvalidInputError("The window is (center, width) or (center, width, "
                                    "function).", code="invalid_window")
        _check_window(*window)


def _check_window(center: float, width: float, function: str = "LINEAR") -> None:
    name = str(function).upper()
    if name not in VOI_FUNCTIONS:
        raise InvalidInputError(
            f"The VOI LUT function must be one of {', '.join(VOI_FUNCTIONS)}.",
            code="invalid_window")
    try:
        c, w = float(center), float(width)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError("The window center and width must be numbers.",
                                code="invalid_window") from exc
    if not (math.isfinite(c) and math.isfinite(w)):
        raise InvalidInputError("The window center and width must be finite numbers.",
                                code="invalid_window")
    if (name == "LINEAR" and w < 1) or w <= 0:
        raise InvalidInputError(
            "The window width must be at least 1 (LINEAR) or above 0 (LINEAR_EXACT, SIGMOID); "
            "PS3.3 C.11.2.1.2.", code="invalid_window")


def _base_type(media_type: str) -> str:
    return media_type.split(";", 1)[0].strip().lower()


def _render_pixels(px: _Pixels, frame: int, *, media_type: str,
                   window: tuple[float, float, str] | None, viewport: tuple[int, int] | None,
                   quality: int | None, enlarge: bool) -> bytes:
    (index,) = _indices([frame], px.frames)
    try:
        array, properties = next(_decode(px, [index]))
    except _Undecodable as exc:
        raise InvalidInputError(
            f"This archive cannot decode pixel data stored as {px.ts.name}, so it cannot "
            "render it; retrieve the instance or its frames instead.",
            code="cannot_render") from exc
    try:
        pixels = _display(px.ds, array, properties, index, window)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        raise InvalidInputError(
            f"The frame cannot be rendered: its image attributes are inconsistent "
            f"({type(exc).__name__}).", code="cannot_render") from exc
    image = Image.fromarray(pixels)
    if viewport is not None:
        image = _fit(image, viewport, enlarge=enlarge)
    return _encode(image, RENDERED_FORMATS[_base_type(media_type)], quality)


def _fit(image: Image.Image, viewport: tuple[int, int], *, enlarge: bool) -> Image.Image:
    rows, columns = viewport
    scale = min(rows / image.height, columns / image.width)
    if scale == 1 or (scale > 1 and not enlarge):
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC
    return image.resize(size, resample, reducing_gap=3.0 if scale < 0.5 else None)


def _encode(image: Image.Image, fmt: str, quality: int | None) -> bytes:
    out = io.BytesIO()
    if fmt == "JPEG":
        image.save(out, "JPEG", quality=quality or 90)
    elif fmt == "PNG":
        image.save(out, "PNG", compress_level=3)
    else:
        image.save(out, fmt)
    return out.getvalue()


def _display(ds: Dataset, array: np.ndarray, properties: dict[str, Any], index: int,
             window: tuple[float, float, str] | None) -> np.ndarray:
    """8-bit grey (rows, columns) or RGB (rows, columns, 3) pixels for display."""
    photometric = str(properties.get("photometric_interpretation")
                      or ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR":
        with _quiet():
            rgb = np.asarray(apply_color_lut(array, ds))
        return _to_8_bits(rgb, 8 * rgb.dtype.itemsize)
    if array.ndim == 3:
        if photometric.startswith("YBR_FULL"):
            array = convert_color_space(array, photometric, "RGB")
        return _to_8_bits(array, int(properties.get("bits_stored") or ds.get("BitsStored") or 8))
    values = _modality(ds, array, index)
    grey = _voi(ds, values, index, window)
    if photometric == "MONOCHROME1":
        grey = 255 - grey
    return grey


def _to_8_bits(array: np.ndarray, bits: int) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    top = float(2**bits - 1) if bits < 64 else float(array.max() or 1)
    scaled = np.clip(array.astype(np.float64) * (255.0 / top), 0, 255)
    return np.rint(scaled).astype(np.uint8)


def _functional(ds: Dataset, index: int, group: str, keyword: str) -> Any:
    """An attribute of frame ``index`` from the Per-frame, then Shared Functional Groups
    (PS3.3 C.7.6.16), then the top level."""
    for sequence, item in (("PerFrameFunctionalGroupsSequence", index),
                           ("SharedFunctionalGroupsSequence", 0)):
        groups = ds.get(sequence)
        if groups and len(groups) > item:
            macro = groups[item].get(group)
            if macro and keyword in macro[0]:
                return macro[0].get(keyword)
    return ds.get(keyword)


def _first(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, list | tuple | MultiValue):
        value = value[0] if len(value) else None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _modality(ds: Dataset, array: np.ndarray, index: int) -> np.ndarray:
    """Modality LUT (PS3.3 C.11.1): the LUT, or Rescale Slope and Intercept."""
    if array.dtype.kind == "f":
        return array.astype(np.float64, copy=False)
    if "ModalityLUTSequence" in ds:
        with _quiet():
            return np.asarray(apply_modality_lut(array, ds), dtype=np.float64)
    group = "PixelValueTransformationSequence"
    slope = _first(_functional(ds, index, group, "RescaleSlope"))
    intercept = _first(_functional(ds, index, group, "RescaleIntercept"))
    values = array.astype(np.float64)
    if slope is not None and slope != 1:
        values *= slope
    if intercept:
        values += intercept
    return values


def _voi(ds: Dataset, values: np.ndarray, index: int,
         window: tuple[float, float, str] | None) -> np.ndarray:
    if window is not None:
        center, width, *rest = window
        return voi_window(values, float(center), float(width),
                          str(rest[0] if rest else "LINEAR").upper())
    group = "FrameVOILUTSequence"
    own_center = _first(_functional(ds, index, group, "WindowCenter"))
    own_width = _first(_functional(ds, index, group, "WindowWidth"))
    function = str(_functional(ds, index, group, "VOILUTFunction") or "LINEAR").upper()
    if function not in VOI_FUNCTIONS:
        function = "LINEAR"
    if own_center is not None and own_width is not None and (
        own_width >= 1 if function == "LINEAR" else own_width > 0
    ):
        return voi_window(values, own_center, own_width, function)
    if "VOILUTSequence" in ds:
        lut = _voi_lut(ds, values)
        if lut is not None:
            return lut
    finite = values[np.isfinite(values)]  # float pixel data may hold NaN or infinities
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    return voi_window(values, (low + high) / 2, high - low, "LINEAR_EXACT")


def _voi_lut(ds: Dataset, values: np.ndarray) -> np.ndarray | None:
    """The object's first VOI LUT (PS3.3 C.11.2.1.1), scaled to 8 bits."""
    try:
        with _quiet():
            item = ds.VOILUTSequence[0]
            bits = int(item.LUTDescriptor[2])
            out = apply_voi(np.rint(values).astype(np.int64), ds, index=0)
    except Exception:  # noqa: BLE001 - a damaged LUT falls back to the full range
        return None
    return _to_8_bits(np.asarray(out), bits)


def voi_window(values: np.ndarray, center: float, width: float, function: str = "LINEAR"
               ) -> np.ndarray:
    """A VOI window to 8-bit grey levels (PS3.3 C.11.2.1.2 with y in [0, 255], rounded)."""
    x = np.asarray(values, dtype=np.float64)
    if function == "SIGMOID":  # C.11.2.1.3.1
        y = 255.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    elif function == "LINEAR_EXACT":  # C.11.2.1.3.2
        y = ((x - center) / width + 0.5) * 255.0
    elif width <= 1:  # C.11.2.1.2.1 with w = 1: a threshold at c - 0.5
        return np.where(x <= center - 0.5, 0, 255).astype(np.uint8)
    else:  # C.11.2.1.2.1
        y = ((x - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    y = np.nan_to_num(y, nan=0.0, posinf=255.0, neginf=0.0)
    return np.rint(np.clip(y, 0.0, 255.0)).astype(np.uint8)

