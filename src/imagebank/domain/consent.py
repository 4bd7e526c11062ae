"""Consent and the National Data Opt-out (issue 6, decision 0023). Pure: no I/O.

A patient's consent decisions are records for one research project or for all research
(``target`` ""), each with a status and a date. The decision that holds is the latest; on one
day a withdrawal outranks a refusal, which outranks a grant. A project-specific decision
outranks a general one of the same date or earlier.

Who is released (``exclusion``):

* a patient who withdrew or refused is never released, whatever the legal basis;
* a patient on the National Data Opt-out list is not released where the project's policy
  applies the opt-out (its legal basis is not consent: section 251 support, for one), unless
  they consented to this project explicitly (the opt-out does not apply to data shared with
  the patient's consent, NHS England's operational policy guidance, section 5);
* everyone else is released.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from imagebank.domain.clinical import NHS_NUMBER_ISSUER, PatientRef, is_valid_nhs_number

#: The scope of a consent when a source gives none.
DEFAULT_SCOPE = "research"


class ConsentStatus(enum.StrEnum):
    GRANTED = "granted"
    REFUSED = "refused"
    WITHDRAWN = "withdrawn"


#: Same-day precedence: the most restrictive decision holds.
_RANK = {ConsentStatus.GRANTED: 0, ConsentStatus.REFUSED: 1, ConsentStatus.WITHDRAWN: 2}


class Exclusion(enum.StrEnum):
    """Why a patient is kept out of a release (the manifest counts them by this)."""

    WITHDRAWN = "withdrawn"
    REFUSED = "refused"
    OPTED_OUT = "national_data_opt_out"


@dataclass(frozen=True, slots=True)
class ConsentDecision:
    """One consent record (``decided_on`` is an ISO date, YYYY-MM-DD)."""

    status: ConsentStatus
    decided_on: str
    target: str = ""
    scope: str = DEFAULT_SCOPE


def person_of(patient_id: str, issuer: str = "") -> PatientRef:
    """The person a subject's PatientID and issuer name: an NHS number when the issuer is
    NHS or empty and the value passes the check digit, else the value with its issuer."""
    value = patient_id.strip()
    issuer = issuer.strip()
    if issuer in ("", NHS_NUMBER_ISSUER) and is_valid_nhs_number(value):
        return PatientRef.nhs_number(value)
    return PatientRef(issuer, value)


def holding(decisions: Iterable[ConsentDecision], target: str) -> ConsentDecision | None:
    """The decision that holds for release to ``target`` (a research project, or "" for a
    release that is not to one of ours): the latest that applies to it; on one date the
    project's own, then the most restrictive."""
    applicable = [d for d in decisions if d.target in ("", target)]
    if not applicable:
        return None
    return max(applicable, key=lambda d: (d.decided_on, d.target == target, _RANK[d.status]))


def exclusion(
    decision: ConsentDecision | None, opted_out: bool, opt_out_applies: bool
) -> Exclusion | None:
    """Why a patient is not released, or None (see the module's docstring)."""
    if decision is not None and decision.status is ConsentStatus.WITHDRAWN:
        return Exclusion.WITHDRAWN
    if decision is not None and decision.status is ConsentStatus.REFUSED:
        return Exclusion.REFUSED
    if opted_out and opt_out_applies:
        if decision is not None and decision.status is ConsentStatus.GRANTED and decision.target:
            return None
        return Exclusion.OPTED_OUT
    return None
