"""PS3.4 C.2.2.2 matching syntax, parsed into conditions the index can run."""

from __future__ import annotations

import pytest

from imagebank.domain.matching import (
    Condition,
    MatchKind,
    like_pattern,
    matching_keywords,
    parse_match,
)
from imagebank.domain.model import Level


def _kind(keyword: str, raw: str, **kw: bool) -> tuple[MatchKind, tuple[str, ...]]:
    condition = parse_match(keyword, raw, **kw)
    assert isinstance(condition, Condition)
    return condition.kind, condition.values


@pytest.mark.parametrize("raw", ["", "*", "   ", "\x00", "**", "***"])
def test_universal_matching_is_no_condition(raw: str) -> None:
    assert parse_match("PatientName", raw) is None
    assert parse_match("StudyDate", raw) is None


def test_single_value_and_uid_lists() -> None:
    assert _kind("PatientID", "12345 ") == (MatchKind.SINGLE, ("12345",))
    assert _kind("StudyInstanceUID", "1.2.3") == (MatchKind.SINGLE, ("1.2.3",))
    assert _kind("SeriesInstanceUID", "1.2.3\\1.2.4") == (MatchKind.LIST, ("1.2.3", "1.2.4"))
    condition = parse_match("StudyInstanceUID", "1.2.3")
    assert condition is not None
    assert (condition.level, condition.column) == (Level.STUDY, "study_instance_uid")


@pytest.mark.parametrize("raw", ["1.2.*", "1.2.x", "1..2", "1.2\\", "." + "1" * 70])
def test_uids_take_no_wildcards_and_must_be_uids(raw: str) -> None:
    with pytest.raises(ValueError, match="StudyInstanceUID takes UIDs") as caught:
        parse_match("StudyInstanceUID", raw)
    assert raw not in str(caught.value)


def test_wildcards_and_person_names() -> None:
    assert _kind("PatientName", "SMITH^J*") == (MatchKind.WILDCARD, ("SMITH^J*",))
    assert _kind("AccessionNumber", "A?C") == (MatchKind.WILDCARD, ("A?C",))
    exact = parse_match("PatientName", "smith^john")
    fuzzy = parse_match("PatientName", "smith^john", fuzzy=True)
    assert exact is not None and not exact.case_insensitive
    assert fuzzy is not None and fuzzy.case_insensitive
    coded = parse_match("Modality", "ct", fuzzy=True)
    assert coded is not None and not coded.case_insensitive  # fuzzy is for names only


def test_date_and_time_ranges() -> None:
    assert _kind("StudyDate", "20240101") == (MatchKind.SINGLE, ("20240101",))
    assert _kind("StudyDate", "20240101-20241231") == (
        MatchKind.RANGE, ("20240101", "20241231"))
    assert _kind("StudyDate", "-20241231") == (MatchKind.RANGE, ("", "20241231"))
    assert _kind("StudyDate", "20240101-") == (MatchKind.RANGE, ("20240101", ""))
    assert _kind("StudyTime", "10:15-12") == (MatchKind.RANGE, ("1015", "12"))
    assert _kind("StudyTime", "101500.123") == (MatchKind.SINGLE, ("101500.123",))


@pytest.mark.parametrize(("keyword", "raw"), [
    ("StudyDate", "2024-01-01"), ("StudyDate", "202401"), ("StudyDate", "-"),
    ("StudyDate", "20241231-20240101"), ("StudyDate", "2024010*"), ("StudyTime", "25:61x"),
    ("SeriesNumber", "one"), ("SeriesNumber", "1*"), ("SliceThickness", "thin"),
])
def test_values_that_cannot_match_are_refused_without_echo(keyword: str, raw: str) -> None:
    with pytest.raises(ValueError, match=keyword) as caught:
        parse_match(keyword, raw)
    assert raw not in str(caught.value) or raw == "-"


def test_numbers() -> None:
    assert _kind("SeriesNumber", "3") == (MatchKind.SINGLE, ("3",))
    assert _kind("SliceThickness", "1.25") == (MatchKind.SINGLE, ("1.25",))
    assert _kind("SliceThickness", "2.5e-1") == (MatchKind.SINGLE, ("2.5e-1",))


def test_only_indexed_attributes_can_be_matched() -> None:
    assert {"PatientID", "StudyDate", "Modality", "SOPInstanceUID"} <= matching_keywords()
    with pytest.raises(ValueError, match="not an attribute"):
        parse_match("PixelData", "x")


@pytest.mark.parametrize(("wildcard", "like"), [
    ("SMITH*", "SMITH%"), ("A?C", "A_C"), ("50%_off\\", "50\\%\\_off\\\\"), ("*", "%"),
])
def test_like_patterns_escape_sql_wildcards(wildcard: str, like: str) -> None:
    assert like_pattern(wildcard) == like
