"""The display order of a series' images: by position along the slice normal, else by
InstanceNumber, SOPInstanceUID and frame (decision 0029)."""

from __future__ import annotations

import math
import random

import pytest

from imagebank.domain.geometry import (
    Image,
    OrderedBy,
    decimals,
    direction_label,
    orientation_labels,
    slice_normal,
    slice_order,
)

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _uids(images: tuple[Image, ...]) -> list[str]:
    return [i.sop_instance_uid for i in images]


def _axial(n: int, z: float, number: int | None = None) -> Image:
    return Image(f"1.2.3.{n}", instance_number=number, position=(-100.0, -80.0, z),
                 orientation=AXIAL)


def test_decimals_reads_the_index_text_and_refuses_anything_else() -> None:
    assert decimals("1\\0\\0\\0\\1\\0", 6) == AXIAL
    assert decimals("-125.5\\ 3e1\\7", 3) == (-125.5, 30.0, 7.0)
    assert decimals(None, 3) is None
    assert decimals("", 3) is None
    assert decimals("1\\2", 3) is None
    assert decimals("1\\x\\3", 3) is None
    assert decimals("1\\nan\\3", 3) is None
    assert decimals("1\\inf\\3", 3) is None


def test_the_normal_is_row_cross_column_of_unit_length() -> None:
    assert slice_normal(AXIAL) == (0.0, 0.0, 1.0)
    # sagittal: rows along +y, columns along -z -> normal -x
    assert slice_normal((0, 1, 0, 0, 0, -1)) == (-1.0, 0.0, 0.0)
    # coronal: rows along +x, columns along -z -> normal +y
    assert slice_normal((1, 0, 0, 0, 0, -1)) == (0.0, 1.0, 0.0)
    oblique = slice_normal((2, 0, 0, 0, math.cos(0.3) * 2, math.sin(0.3) * 2))
    assert oblique is not None
    assert math.isclose(math.hypot(*oblique), 1.0)
    assert slice_normal((1, 0, 0, 1, 0, 0)) is None  # rows and columns parallel
    assert slice_normal((0, 0, 0, 0, 0, 0)) is None
    assert slice_normal((1, 0, 0)) is None


def test_shuffled_images_are_ordered_by_position_whatever_their_numbers() -> None:
    # Instance numbers that disagree with the positions, given in a random order.
    images = [_axial(k, z=2.5 * k, number=(7 * k) % 11 + 1) for k in range(10)]
    expected = [f"1.2.3.{k}" for k in range(10)]
    for seed in range(5):
        shuffled = images[:]
        random.Random(seed).shuffle(shuffled)
        order = slice_order(shuffled)
        assert order.by is OrderedBy.POSITION
        assert _uids(order.images) == expected
        assert order.normal == (0.0, 0.0, 1.0)
        assert order.locations == tuple(2.5 * k for k in range(10))


def test_an_oblique_stack_is_ordered_along_its_own_normal() -> None:
    # Tilted 30 degrees about x: the normal is (0, -sin 30, cos 30).
    angle = math.radians(30)
    orientation = (1.0, 0.0, 0.0, 0.0, math.cos(angle), math.sin(angle))
    normal = (0.0, -math.sin(angle), math.cos(angle))
    # Slices 3 mm apart along the normal, each shifted within its plane as scanners do;
    # z alone would put them in another order (the in-plane shift moves z the other way).
    images = []
    for k in range(6):
        in_plane = -40.0 * k
        position = tuple(10.0 + 3.0 * k * n + in_plane * c
                         for n, c in zip(normal, orientation[3:], strict=True))
        images.append(Image(f"1.9.{k}", instance_number=6 - k,
                            position=(position[0], position[1], position[2]),
                            orientation=orientation))
    assert sorted(images, key=lambda i: i.position[2] if i.position else 0) != images
    order = slice_order(reversed(images))
    assert order.by is OrderedBy.POSITION
    assert _uids(order.images) == [f"1.9.{k}" for k in range(6)]
    assert order.locations is not None
    steps = [b - a for a, b in zip(order.locations, order.locations[1:], strict=False)]
    assert all(math.isclose(s, 3.0) for s in steps)


def test_a_reversed_normal_reverses_the_order() -> None:
    # Columns along -y: the normal is -z, so the slice with the highest z comes first.
    flipped = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
    images = [Image(f"1.5.{k}", instance_number=k + 1, position=(0.0, 0.0, float(k)),
                    orientation=flipped) for k in range(5)]
    order = slice_order(images)
    assert order.by is OrderedBy.POSITION
    assert order.normal == (0.0, 0.0, -1.0)
    assert _uids(order.images) == [f"1.5.{k}" for k in (4, 3, 2, 1, 0)]


def test_parallel_and_antiparallel_orientations_are_one_stack() -> None:
    flipped = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
    images = [Image(f"1.6.{k}", instance_number=k + 1, position=(0.0, 0.0, float(k)),
                    orientation=AXIAL if k % 2 else flipped) for k in range(4)]
    for seed in range(4):
        shuffled = images[:]
        random.Random(seed).shuffle(shuffled)
        order = slice_order(shuffled)
        # The normal is that of instance 1 (flipped: -z), whatever the input order.
        assert order.normal == (0.0, 0.0, -1.0)
        assert _uids(order.images) == ["1.6.3", "1.6.2", "1.6.1", "1.6.0"]


@pytest.mark.parametrize("broken", [
    Image("1.2.3.5", instance_number=1, position=None, orientation=AXIAL),
    Image("1.2.3.5", instance_number=1, position=(0.0, 0.0, 99.0), orientation=None),
    Image("1.2.3.5", instance_number=1, position=(0.0, 0.0, 99.0),
          orientation=(1.0, 0.0, 0.0, 1.0, 0.0, 0.0)),
    # a localiser in another plane: a mixed series
    Image("1.2.3.5", instance_number=1, position=(0.0, 0.0, 99.0),
          orientation=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0)),
], ids=["no position", "no orientation", "degenerate orientation", "mixed planes"])
def test_missing_or_mixed_geometry_falls_back_to_instance_number(broken: Image) -> None:
    images = [_axial(k, z=-float(k), number=k + 2) for k in range(4)] + [broken]
    random.Random(3).shuffle(images)
    order = slice_order(images)
    assert order.by is OrderedBy.INSTANCE_NUMBER
    assert order.normal is None and order.locations is None
    assert _uids(order.images) == ["1.2.3.5", "1.2.3.0", "1.2.3.1", "1.2.3.2", "1.2.3.3"]


def test_the_fallback_is_instance_number_then_uid_then_frame_with_no_number_last() -> None:
    images = [Image("1.4.9", instance_number=None), Image("1.4.2", instance_number=3),
              Image("1.4.1", instance_number=3), Image("1.4.5", instance_number=1),
              Image("1.4.0", instance_number=None)]
    order = slice_order(images)
    assert order.by is OrderedBy.INSTANCE_NUMBER
    assert _uids(order.images) == ["1.4.5", "1.4.1", "1.4.2", "1.4.0", "1.4.9"]


def test_multiframe_instances_are_listed_per_frame() -> None:
    # Two enhanced instances whose frames interleave in space: frame positions decide.
    images = [Image("1.7.1", frame=f, instance_number=1, position=(0.0, 0.0, 2.0 * f),
                    orientation=AXIAL) for f in (3, 1, 2)]
    images += [Image("1.7.2", frame=f, instance_number=2, position=(0.0, 0.0, 2.0 * f + 1),
                     orientation=AXIAL) for f in (2, 1)]
    order = slice_order(images)
    assert order.by is OrderedBy.POSITION
    assert [(i.sop_instance_uid, i.frame) for i in order.images] == [
        ("1.7.1", 1), ("1.7.2", 1), ("1.7.1", 2), ("1.7.2", 2), ("1.7.1", 3)]
    # Without positions, frames follow their instance, in frame order.
    bare = [Image(i.sop_instance_uid, frame=i.frame, instance_number=i.instance_number)
            for i in images]
    assert [(i.sop_instance_uid, i.frame) for i in slice_order(bare).images] == [
        ("1.7.1", 1), ("1.7.1", 2), ("1.7.1", 3), ("1.7.2", 1), ("1.7.2", 2)]


def test_images_at_one_place_keep_the_fallback_order() -> None:
    # Two echoes per position: same place, told apart by instance number.
    images = [Image(f"1.8.{k}", instance_number=10 - k,
                    position=(0.0, 0.0, float(k // 2) + (1e-7 if k % 2 else 0.0)),
                    orientation=AXIAL) for k in range(6)]
    order = slice_order(images)
    assert _uids(order.images) == ["1.8.1", "1.8.0", "1.8.3", "1.8.2", "1.8.5", "1.8.4"]


def test_no_images_is_an_empty_order() -> None:
    order = slice_order([])
    assert order.images == () and order.by is OrderedBy.INSTANCE_NUMBER


# -- orientation markers ----------------------------------------------------------------------
@pytest.mark.parametrize(("orientation", "expected"), [
    # axial as scanners make it (rows to the patient's left, columns to the back)
    (AXIAL, ("R", "A", "L", "P")),
    # coronal: rows to the left, columns to the feet
    ((1.0, 0.0, 0.0, 0.0, 0.0, -1.0), ("R", "H", "L", "F")),
    # sagittal: rows to the back, columns to the feet
    ((0.0, 1.0, 0.0, 0.0, 0.0, -1.0), ("A", "H", "P", "F")),
    # axial flipped left-right and up-down (rows to the right, columns to the front)
    ((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0), ("L", "P", "R", "A")),
    # axial seen from below, as some scanners store feet-first images
    ((-1.0, 0.0, 0.0, 0.0, 1.0, 0.0), ("L", "A", "R", "P")),
    # cosines not of unit length (rounded DS text, or careless writers): the same labels
    ((2.0, 0.0, 0.0, 0.0, 0.0, -3.0), ("R", "H", "L", "F")),
], ids=["axial", "coronal", "sagittal", "flipped", "feet first", "not unit"])
def test_orientation_labels_of_the_standard_planes(
        orientation: tuple[float, ...], expected: tuple[str, str, str, str]) -> None:
    assert orientation_labels(orientation) == expected


def test_an_oblique_vector_gets_a_second_letter_only_past_the_threshold() -> None:
    # Axial tilted 30 degrees about z: rows to the left and back, columns back and right.
    angle = math.radians(30)
    c, s = math.cos(angle), math.sin(angle)
    assert orientation_labels((c, s, 0.0, -s, c, 0.0)) == ("RA", "AL", "LP", "PR")
    # 10 degrees (sin 10 = 0.17 < 0.25): the dominant letter alone
    angle = math.radians(10)
    c, s = math.cos(angle), math.sin(angle)
    assert orientation_labels((c, s, 0.0, -s, c, 0.0)) == ("R", "A", "L", "P")
    # just past the threshold, and a double oblique: letters by decreasing size
    assert direction_label((0.96, 0.26, 0.0)) == "LP"
    assert direction_label((0.96, 0.24, 0.0)) == "L"
    assert direction_label((-0.3, 0.5, -0.8)) == "FPR"
    assert direction_label((0.0, 0.0, 1.0)) == "H"
    assert direction_label((0.0, -1.0, 0.0)) == "A"


@pytest.mark.parametrize("orientation", [
    None,
    (),
    (1.0, 0.0, 0.0, 0.0, 1.0),
    (1.0, 0.0, 0.0, 1.0, 0.0, 0.0),  # rows and columns parallel
    (0.0, 0.0, 0.0, 0.0, 1.0, 0.0),  # no row direction
    (1.0, 0.0, float("nan"), 0.0, 1.0, 0.0),
], ids=["missing", "empty", "five values", "parallel", "zero row", "nan"])
def test_no_markers_without_a_usable_orientation(orientation: tuple[float, ...] | None
                                                 ) -> None:
    assert orientation_labels(orientation) is None


def test_direction_label_refuses_what_is_not_a_direction() -> None:
    assert direction_label((0.0, 0.0, 0.0)) is None
    assert direction_label((1.0, 0.0)) is None
    assert direction_label((float("inf"), 0.0, 0.0)) is None
