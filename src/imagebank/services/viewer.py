"""What the series viewer needs of a series (issue 7, decision 0029), from the index alone.

One read of the series' instance rows with their stored headers (DICOM JSON, PS3.18 Annex F):
no object is opened. Each image (an instance's frame) is placed by its Image Plane
attributes, taken from the index's columns for a single-frame instance and from the
Per-frame and Shared Functional Groups (PS3.3 C.7.6.16) of a multi-frame one, and ordered by
``domain.geometry.slice_order``. For each instance the viewer gets what it needs to turn
stored values into grey levels itself (PS3.3 C.7.6.3 Image Pixel, C.11.1 Modality LUT, C.11.2
VOI): rows and columns, bits, signedness, photometric interpretation, rescale slope and
intercept, the first window; and for the header panel, the keywords of the tags present.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from pydicom.datadict import keyword_for_tag

from imagebank.domain.geometry import Image, decimals, orientation_labels, slice_order
from imagebank.services.archive import Archive

# Tags of DICOM JSON (PS3.18 F.2): 8 upper-case hex digits.
SHARED_GROUPS = "52009229"
PER_FRAME_GROUPS = "52009230"
PLANE_POSITION = "00209113"
PLANE_ORIENTATION = "00209116"
PIXEL_VALUE_TRANSFORMATION = "00289145"
FRAME_VOI_LUT = "00289132"
IMAGE_POSITION = "00200032"
IMAGE_ORIENTATION = "00200037"
WINDOW_CENTER, WINDOW_WIDTH = "00281050", "00281051"
RESCALE_INTERCEPT, RESCALE_SLOPE = "00281052", "00281053"
BITS_STORED, PIXEL_REPRESENTATION = "00280101", "00280103"
SAMPLES_PER_PIXEL, PLANAR_CONFIGURATION = "00280002", "00280006"


def series_view(archive: Archive, project: str, series_id: str) -> dict[str, Any]:
    """The series (``series``), its study (``study``) and what viewer.js reads (``view``):
    the DICOMweb address of the series, its instances' pixel descriptions, the images in
    display order as [instance index, frame, location along the normal in mm or None], what
    the order rests on, the keywords of the tags in the instances' headers, and the
    orientation markers of the images' edges."""
    series = archive.in_project("series", series_id, project)
    study = archive.get("study", series["study_id"])
    rows = [r for r in archive.instances(series_id, with_metadata=True) if r.get("rows")]
    instances: list[dict[str, Any]] = []
    images: list[Image] = []
    tags: set[str] = {"7FE00010"}  # WADO-RS metadata adds Pixel Data's BulkDataURI
    where: dict[str, int] = {}
    for row in rows:
        header = _header(row)
        tags.update(_tags(header))
        where[row["sop_instance_uid"]] = len(instances)
        instances.append(_pixels(row, header))
        images.extend(_images(row, header))
    order = slice_order(images)
    locations = order.locations or (None,) * len(order.images)
    markers = [orientation_labels(i.orientation) for i in order.images]
    constant = len(set(markers)) <= 1
    return {
        "series": series,
        "study": study,
        "view": {
            "base": _dicomweb_base(project, study["study_instance_uid"],
                                   series["series_instance_uid"]),
            "modality": series.get("modality") or "",
            "orderedBy": order.by.value,
            "instances": instances,
            "images": [[where[i.sop_instance_uid], i.frame,
                        None if loc is None else round(loc, 3)]
                       for i, loc in zip(order.images, locations, strict=True)],
            "keywords": {t: k for t in sorted(tags) if (k := keyword_for_tag(int(t, 16)))},
            # The orientation markers (left, top, right, bottom): one for the series when
            # every image has the same, else one per image (None: no markers).
            "markers": markers[0] if constant and markers else None,
            "markersPerImage": None if constant else markers,
        },
    }


def _dicomweb_base(project: str, study_uid: str, series_uid: str) -> str:
    """The series' DICOMweb address (PS3.18 10.4.1), each path segment percent-encoded: a
    UID is digits and dots by the standard, but what ingest tolerates may hold others."""
    segments = ("projects", project, "dicomweb", "studies", study_uid, "series", series_uid)
    return "".join(f"/{quote(str(segment), safe='')}" for segment in segments)



def _header(row: dict[str, Any]) -> dict[str, Any]:
    try:
        header = json.loads(row.get("metadata_json") or "{}")
    except ValueError:
        return {}
    return header if isinstance(header, dict) else {}


def _tags(header: dict[str, Any]) -> Iterator[str]:
    """Every tag of the header, sequences' items included (each item's tags once)."""
    for tag, element in header.items():
        yield tag
        if isinstance(element, dict) and element.get("vr") == "SQ":
            for item in element.get("Value") or ():
                if isinstance(item, dict):
                    yield from _tags(item)


def _value(dataset: Any, tag: str) -> Any:
    """The first value of ``tag`` in a DICOM JSON dataset, or None."""
    if not isinstance(dataset, dict):
        return None
    element = dataset.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return values[0] if isinstance(values, list) and values else None


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _vector(dataset: Any, tag: str, count: int) -> tuple[float, ...] | None:
    element = dataset.get(tag) if isinstance(dataset, dict) else None
    values = element.get("Value") if isinstance(element, dict) else None
    if not isinstance(values, list) or len(values) != count:
        return None
    numbers = [_number(v) for v in values]
    return None if any(n is None for n in numbers) else tuple(n or 0.0 for n in numbers)


def _frame_groups(header: dict[str, Any]) -> tuple[Any, list[Any]]:
    shared = _value(header, SHARED_GROUPS)
    element = header.get(PER_FRAME_GROUPS)
    per_frame = element.get("Value") if isinstance(element, dict) else None
    return shared, per_frame if isinstance(per_frame, list) else []


def _from_groups(header: dict[str, Any], macro: str, tag: str) -> Any:
    """``tag`` of the functional group ``macro``: shared, else the first frame's."""
    shared, per_frame = _frame_groups(header)
    for groups in (shared, per_frame[0] if per_frame else None):
        value = _value(_value(groups, macro), tag)
        if value is not None:
            return value
    return None


def _attribute(header: dict[str, Any], tag: str, macro: str) -> Any:
    value = _value(header, tag)
    return value if value is not None else _from_groups(header, macro, tag)


def _pixels(row: dict[str, Any], header: dict[str, Any]) -> dict[str, Any]:
    """How to turn one instance's stored values into grey levels (viewer.js)."""
    bits = int(row.get("bits_allocated") or 16)
    slope = _number(_attribute(header, RESCALE_SLOPE, PIXEL_VALUE_TRANSFORMATION))
    intercept = _number(_attribute(header, RESCALE_INTERCEPT, PIXEL_VALUE_TRANSFORMATION))
    return {
        "uid": row["sop_instance_uid"],
        "number": row.get("instance_number"),
        "frames": int(row.get("number_of_frames") or 1),
        "rows": int(row["rows"]),
        "columns": int(row.get("columns") or 0),
        "bitsAllocated": bits,
        "bitsStored": int(_number(_value(header, BITS_STORED)) or bits),
        "signed": _value(header, PIXEL_REPRESENTATION) == 1,
        "samples": int(_number(_value(header, SAMPLES_PER_PIXEL)) or 1),
        "planar": int(_number(_value(header, PLANAR_CONFIGURATION)) or 0),
        "photometric": row.get("photometric_interpretation") or "MONOCHROME2",
        "slope": slope if slope else 1.0,
        "intercept": intercept or 0.0,
        "center": _number(_attribute(header, WINDOW_CENTER, FRAME_VOI_LUT)),
        "width": _number(_attribute(header, WINDOW_WIDTH, FRAME_VOI_LUT)),
    }


def _images(row: dict[str, Any], header: dict[str, Any]) -> Iterator[Image]:
    """The instance's images: one per frame, placed by the index's columns (single frame)
    or by the functional groups (multi-frame)."""
    uid, number = row["sop_instance_uid"], row.get("instance_number")
    frames = int(row.get("number_of_frames") or 1)
    position = decimals(row.get("image_position_patient"), 3)
    orientation = decimals(row.get("image_orientation_patient"), 6)
    if frames == 1:
        yield Image(uid, 1, number, _xyz(position), _cosines(orientation))
        return
    shared, per_frame = _frame_groups(header)
    shared_orientation = _vector(_value(shared, PLANE_ORIENTATION), IMAGE_ORIENTATION, 6)
    for index in range(frames):
        groups = per_frame[index] if index < len(per_frame) else None
        frame_position = _vector(_value(groups, PLANE_POSITION), IMAGE_POSITION, 3)
        frame_orientation = (_vector(_value(groups, PLANE_ORIENTATION), IMAGE_ORIENTATION, 6)
                             or shared_orientation or orientation)
        yield Image(uid, index + 1, number, _xyz(frame_position), _cosines(frame_orientation))


def _xyz(values: tuple[float, ...] | None) -> tuple[float, float, float] | None:
    return (values[0], values[1], values[2]) if values else None


def _cosines(values: tuple[float, ...] | None
             ) -> tuple[float, float, float, float, float, float] | None:
    return (values[0], values[1], values[2], values[3], values[4], values[5]) if values else None
