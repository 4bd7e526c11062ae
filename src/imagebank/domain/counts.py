"""Counts shown outside the site (issue 6; DESIGN.md "small-number suppression"): a count of
people from 1 to the policy's ``smallest_count`` − 1 is shown as ``< N``, never as itself;
counts are rounded to the nearest multiple of the policy's ``count_rounding``; and a count
that rounds to 0 while people were found is suppressed too, never shown as 0. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ShownCount:
    """A count as it may be shown: ``value`` None when suppressed; ``text`` for people."""

    value: int | None
    text: str

    @property
    def suppressed(self) -> bool:
        return self.value is None


def round_count(count: int, rounding: int) -> int:
    """``count`` to the nearest multiple of ``rounding`` (halves up: 5 to 10 by tens)."""
    return (count + rounding // 2) // rounding * rounding


def show_count(count: int, smallest_count: int = 10, rounding: int = 1) -> ShownCount:
    """What may be shown of ``count`` outside the site under a policy's ``smallest_count``
    and ``count_rounding``. Every suppressed count reads the same ``< N``: N is the
    smallest count, or, when the rounding is coarser, the least count that rounds above 0."""
    if count < 0 or smallest_count < 1 or rounding < 1:
        raise ValueError("counts, the smallest count and the rounding are not negative")
    if count == 0:
        return ShownCount(0, "0")
    threshold = max(smallest_count, (rounding + 1) // 2)
    rounded = round_count(count, rounding)
    if count < smallest_count or rounded == 0:
        return ShownCount(None, f"< {threshold}")
    return ShownCount(rounded, str(rounded))


def exact_count(count: int) -> ShownCount:
    """A count shown as it is (inside the site, to those who may see it)."""
    return ShownCount(count, str(count))
