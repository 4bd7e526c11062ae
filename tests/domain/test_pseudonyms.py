"""Keyed pseudonyms: stable per key, unrelated across keys, one-to-one UIDs, kept intervals."""

from __future__ import annotations

import re
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imagebank.domain.pseudonyms import (
    MAX_SHIFT_DAYS,
    Pseudonymiser,
    shift_date,
    shift_datetime,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))
UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def test_pseudonyms_are_stable_per_key_and_differ_across_keys() -> None:
    a, b = Pseudonymiser(KEY_A), Pseudonymiser(KEY_B)
    assert a.patient_id("9434765919") == Pseudonymiser(KEY_A).patient_id("9434765919")
    assert a.patient_id("9434765919") != b.patient_id("9434765919")
    assert a.patient_id("9434765919", "NHS") != a.patient_id("9434765919", "RXX")
    assert re.fullmatch(r"IB[A-Z2-7]{16}", a.patient_id("9434765919"))
    assert "9434765919" not in a.patient_id("9434765919")
    assert a.patient_name("9434765919") == "PSEUDONYM^" + a.patient_id("9434765919")


def test_keys_must_be_long_enough() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Pseudonymiser(b"short")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.from_regex(r"1\.2\.[1-9][0-9]{0,20}(\.[0-9]{1,10}){0,5}", fullmatch=True),
                min_size=2, max_size=30, unique=True))
def test_uids_map_one_to_one_to_valid_uids(uids: list[str]) -> None:
    mapped = [Pseudonymiser(KEY_A).uid(u) for u in uids]
    assert len(set(mapped)) == len(uids)
    for new in mapped:
        assert new.startswith("2.25.") and len(new) <= 64 and UID_RE.fullmatch(new)
    assert mapped == [Pseudonymiser(KEY_A).uid(u) for u in uids]  # deterministic


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=20), st.dates(date(1900, 1, 1), date(2090, 1, 1)),
       st.dates(date(1900, 1, 1), date(2090, 1, 1)))
def test_date_shift_keeps_intervals_within_a_patient(patient: str, first: date,
                                                     second: date) -> None:
    days = Pseudonymiser(KEY_A).date_shift_days(patient)
    assert -MAX_SHIFT_DAYS <= days <= -1
    one, two = (shift_date(d.strftime("%Y%m%d"), days) for d in (first, second))

    def parse(value: str) -> date:
        return date(int(value[:4]), int(value[4:6]), int(value[6:]))

    assert parse(two) - parse(one) == second - first
    assert (first - parse(one)).days == -days


def test_date_and_datetime_values() -> None:
    assert shift_date("20240301", -1) == "20240229"
    assert shift_date("20240101-20240131", -10) == "20231222-20240121"
    assert shift_date("-20240131", -1) == "-20240130"
    assert shift_datetime("20240301123000.5+0100", -1) == "20240229123000.5+0100"
    for bad in ("2024", "2024-13-01", "abcdefgh", "20241301"):
        with pytest.raises(ValueError):
            shift_date(bad, 1)
    with pytest.raises(ValueError):
        shift_datetime("202403", 1)
