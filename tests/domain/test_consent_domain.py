"""Which consent decision holds, and who a release leaves out (``domain.consent``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagebank.domain.clinical import PatientRef
from imagebank.domain.consent import (
    ConsentDecision,
    ConsentStatus,
    Exclusion,
    exclusion,
    holding,
    person_of,
)

G, R, W = ConsentStatus.GRANTED, ConsentStatus.REFUSED, ConsentStatus.WITHDRAWN


def test_the_latest_decision_holds_and_the_projects_own_wins_a_tie() -> None:
    general_withdrawal = ConsentDecision(W, "2026-01-01")
    later_grant = ConsentDecision(G, "2026-02-01", "lab")
    assert holding([general_withdrawal, later_grant], "lab") == later_grant
    assert holding([general_withdrawal, later_grant], "other") == general_withdrawal
    assert holding([general_withdrawal, later_grant], "") == general_withdrawal
    same_day = ConsentDecision(G, "2026-01-01", "lab")
    assert holding([general_withdrawal, same_day], "lab") == same_day
    assert holding([ConsentDecision(G, "2026-03-01", "other")], "lab") is None


@given(st.permutations([ConsentDecision(G, "2026-05-05"), ConsentDecision(R, "2026-05-05"),
                        ConsentDecision(W, "2026-05-05")]))
def test_on_one_day_the_most_restrictive_decision_holds_in_any_order(
        decisions: list[ConsentDecision]) -> None:
    found = holding(decisions, "lab")
    assert found is not None and found.status is W


@pytest.mark.parametrize(("decision", "opted_out", "applies", "expected"), [
    (None, False, True, None),
    (None, True, True, Exclusion.OPTED_OUT),
    (None, True, False, None),
    (ConsentDecision(W, "2026-01-01", "lab"), False, False, Exclusion.WITHDRAWN),
    (ConsentDecision(R, "2026-01-01"), False, False, Exclusion.REFUSED),
    (ConsentDecision(G, "2026-01-01", "lab"), True, True, None),  # explicit consent
    (ConsentDecision(G, "2026-01-01"), True, True, Exclusion.OPTED_OUT),  # not to this project
    (ConsentDecision(W, "2026-01-01"), True, True, Exclusion.WITHDRAWN),
])
def test_who_is_left_out(decision: ConsentDecision | None, opted_out: bool, applies: bool,
                         expected: Exclusion | None) -> None:
    assert exclusion(decision, opted_out, applies) is expected


def test_a_subject_names_a_person_by_nhs_number_when_it_is_one() -> None:
    assert person_of("943 476 5919") == PatientRef("NHS", "9434765919")
    assert person_of("9434765919", "NHS") == PatientRef("NHS", "9434765919")
    assert person_of("9434765919", "RR8-PAS") == PatientRef("RR8-PAS", "9434765919")
    assert person_of("4857773456", "NHS") == PatientRef("NHS", "4857773456")  # fails the check
    assert person_of(" MRN123 ", "") == PatientRef("", "MRN123")
