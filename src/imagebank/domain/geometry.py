"""The order of a series' images for display (issue 7, decision 0029). Pure: no I/O.

An image is one frame of one instance, placed in the patient by the Image Plane module
(PS3.3 C.7.6.2): ImagePositionPatient, the centre of its first pixel in mm, and
ImageOrientationPatient, the direction cosines of its rows and columns. The images of a stack
share one slice normal, n = row × column; each lies at the distance IPP · n along it.

``slice_order`` sorts the images by that distance, ascending (the order of Cornerstone3D's
``sortImageIdsAndGetSpacing``: an axial stack in the usual orientation runs from the feet to
the head). It does so only when every image has a usable position and orientation and all
orientations are parallel (a normal and its reverse count as parallel: one stack). Otherwise
(geometry missing on any image, a localiser in three planes, a mixed series) the images are
in InstanceNumber order, then SOPInstanceUID, then frame number: never in file or arrival
order, which is meaningless (STYLE.md, trap 2). Images at the same distance (echoes, time
points) keep that fallback order among themselves.

``orientation_labels`` names the patient directions at an image's four edges (the viewer's
orientation markers) from its row and column cosines.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Vector = tuple[float, float, float]

#: Two unit normals whose dot product is at least this (in absolute value) are parallel:
#: about 0.8 degrees, well above the rounding of DS values written with 6 decimals.
PARALLEL = 0.9999
#: A normal shorter than this is no normal (row and column cosines parallel or zero).
_DEGENERATE = 1e-6


class OrderedBy(enum.StrEnum):
    """What the order of a series' images rests on."""

    POSITION = "position"
    INSTANCE_NUMBER = "instance_number"


@dataclass(frozen=True, slots=True)
class Image:
    """One image of a series: frame ``frame`` (from 1) of instance ``sop_instance_uid``."""

    sop_instance_uid: str
    frame: int = 1
    instance_number: int | None = None
    #: ImagePositionPatient (x, y, z) in mm.
    position: Vector | None = None
    #: ImageOrientationPatient: the row, then the column direction cosines.
    orientation: tuple[float, float, float, float, float, float] | None = None


@dataclass(frozen=True, slots=True)
class SliceOrder:
    """The images in display order, what the order rests on and, when it is by position, the
    unit normal and each image's distance along it (mm; ``locations[i]`` is ``images[i]``'s).
    """

    images: tuple[Image, ...]
    by: OrderedBy
    normal: Vector | None = None
    locations: tuple[float, ...] | None = None


def decimals(text: str | None, count: int) -> tuple[float, ...] | None:
    """``count`` numbers from a multi-valued DS as the index keeps it (``a\\b\\c``); None
    when it is missing, has another number of values, or any is not a finite number."""
    if not text:
        return None
    parts = text.split("\\")
    if len(parts) != count:
        return None
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        return None
    return values if all(math.isfinite(v) for v in values) else None


def slice_normal(orientation: Sequence[float]) -> Vector | None:
    """The unit normal (row × column) of an ImageOrientationPatient; None when the cosines
    are not six finite numbers or do not span a plane."""
    if len(orientation) != 6 or not all(math.isfinite(v) for v in orientation):
        return None
    rx, ry, rz, cx, cy, cz = orientation
    nx, ny, nz = ry * cz - rz * cy, rz * cx - rx * cz, rx * cy - ry * cx
    length = math.sqrt(nx * nx + ny * ny + nz * nz)
    if length < _DEGENERATE:
        return None
    return nx / length, ny / length, nz / length


def _dot(a: Sequence[float], b: Sequence[float]) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _fallback_key(image: Image) -> tuple[bool, int, str, int]:
    number = image.instance_number
    return number is None, number if number is not None else 0, image.sop_instance_uid, image.frame


def slice_order(images: Iterable[Image]) -> SliceOrder:
    """The images in display order (see the module's docstring)."""
    by_number = sorted(images, key=_fallback_key)
    normals: list[Vector] = []
    for image in by_number:
        normal = slice_normal(image.orientation) if image.orientation else None
        if normal is None or image.position is None:
            return SliceOrder(tuple(by_number), OrderedBy.INSTANCE_NUMBER)
        normals.append(normal)
    if not normals:
        return SliceOrder((), OrderedBy.INSTANCE_NUMBER)
    # The first image in the fallback order gives the stack's normal, so that the result
    # does not depend on the order the images came in.
    reference = normals[0]
    if any(abs(_dot(reference, n)) < PARALLEL for n in normals):
        return SliceOrder(tuple(by_number), OrderedBy.INSTANCE_NUMBER)
    placed = [
        (_dot(image.position or (0.0, 0.0, 0.0), reference), rank, image)
        for rank, image in enumerate(by_number)
    ]
    # Distances equal to a micrometre are the same place (DS values are rounded text).
    placed.sort(key=lambda item: (round(item[0], 3), item[1]))
    return SliceOrder(
        tuple(item[2] for item in placed),
        OrderedBy.POSITION,
        reference,
        tuple(item[0] for item in placed),
    )


#: A direction cosine below this (in absolute value) gives no letter of its own beside the
#: dominant one: about 14.5 degrees of tilt (sin 14.5° = 0.25). Cornerstone3D (after David
#: Clunie) names every component above 0.0001, so a slice tilted by a fraction of a degree
#: reads "RAH"; here it reads "R", and a real oblique "RA".
OBLIQUE = 0.25
#: The patient direction each LPS axis points to: (for a negative, for a positive component).
#: H and F (head, foot), not S and I, as Cornerstone3D, OHIF and dicom3tools write them.
_LETTERS = (("R", "L"), ("A", "P"), ("F", "H"))


def direction_label(vector: Sequence[float]) -> str | None:
    """The patient direction a vector of LPS patient coordinates points to (+x Left, +y
    Posterior, +z Head): the letter of its largest component, then those of the others whose
    share of the vector's length is at least ``OBLIQUE``, largest first ("L", "RA", "PFL");
    None for a vector that is not three finite numbers or has no length."""
    if len(vector) != 3 or not all(math.isfinite(v) for v in vector):
        return None
    length = math.sqrt(_dot(vector, vector))
    if length < _DEGENERATE:
        return None
    ranked = sorted(range(3), key=lambda axis: -abs(vector[axis]))
    return "".join(
        _LETTERS[axis][vector[axis] > 0]
        for rank, axis in enumerate(ranked)
        if rank == 0 or abs(vector[axis]) / length >= OBLIQUE
    )


def orientation_labels(
    orientation: Sequence[float] | None,
) -> tuple[str, str, str, str] | None:
    """The orientation markers of an image's (left, top, right, bottom) edges from its
    ImageOrientationPatient (row cosines, then column cosines): the right edge is where the
    row vector points, the left where its reverse does; the bottom is where the column vector
    points, the top where its reverse does. An axial image as scanners make it gives
    ("R", "A", "L", "P"). None when the orientation is missing or does not span a plane."""
    if orientation is None or slice_normal(orientation) is None:
        return None
    row, column = tuple(orientation[:3]), tuple(orientation[3:])
    labels = (
        direction_label([-v for v in row]),
        direction_label([-v for v in column]),
        direction_label(row),
        direction_label(column),
    )
    left, top, right, bottom = labels
    if left is None or top is None or right is None or bottom is None:
        return None
    return left, top, right, bottom
