"""The DICOM Basic Application Level Confidentiality Profile (PS3.15 Annex E) and its options:
which action applies to an attribute.

The rows are ``confidentiality_table`` (generated from the standard's Table E.1-1, edition
recorded there). For a tag and a set of options, ``Profile.action`` gives one of:

* ``KEEP`` (K): retained as is — the attribute is not in the table, or an option retains it;
* ``REMOVE`` (X), ``EMPTY`` (Z, a zero-length value), ``DUMMY`` (D, a non-identifying value
  of its VR), ``REPLACE_UID`` (U, remapped consistently within the set);
* ``CLEAN`` (C): keep the meaning, remove what identifies (an option's action).

Decided here (docs/decisions/0014):

* **Composite actions** of the basic profile depend on the attribute's Type in the IOD of the
  object at hand (PS3.15 E.1.1: "X/Z: X unless Z is required to maintain IOD conformance").
  Without the IOD they resolve to the action that keeps every IOD conformant, never to one
  that keeps identifying content: X/Z → Z, X/D and Z/D and X/Z/D → D, X/Z/U* → U (the
  sequence kept, its UIDs replaced, everything else in it handled by these same rules).
* **Options**: a row's option action applies when that option is in force. Two options in
  force on one row that disagree (none do in this edition) resolve to CLEAN, the more
  protective. Retain Longitudinal Temporal Information has two exclusive forms (full dates,
  modified dates): asking for both is an error.
* **Private attributes** (odd groups) follow the table's private row: removed, or cleaned
  (kept when on the safe-private allow-list, which the engine applies) with Retain Safe
  Private. Repeating groups (50xx curves, 60xx overlays) match their pattern rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from imagebank.domain.confidentiality_table import EDITION, ROWS


class Action(StrEnum):
    KEEP = "K"
    REMOVE = "X"
    EMPTY = "Z"
    DUMMY = "D"
    REPLACE_UID = "U"
    CLEAN = "C"


class Option(StrEnum):
    """The profile's options (PS3.15 E.3), named as in the policy files."""

    RETAIN_LONG_FULL_DATES = "retain_long_full_dates"
    RETAIN_LONG_MODIFIED_DATES = "retain_long_modified_dates"
    CLEAN_DESCRIPTORS = "clean_descriptors"
    RETAIN_UIDS = "retain_uids"
    RETAIN_DEVICE_IDENTITY = "retain_device_identity"
    RETAIN_PATIENT_CHARACTERISTICS = "retain_patient_characteristics"
    RETAIN_INSTITUTION_IDENTITY = "retain_institution_identity"
    CLEAN_GRAPHICS = "clean_graphics"
    CLEAN_STRUCTURED_CONTENT = "clean_structured_content"
    RETAIN_SAFE_PRIVATE = "retain_safe_private"


#: CID 7050 De-identification Method codes (DCM), for De-identification Method Code Sequence.
PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")
OPTION_CODES: dict[Option, tuple[str, str]] = {
    Option.CLEAN_GRAPHICS: ("113103", "Clean Graphics Option"),
    Option.CLEAN_STRUCTURED_CONTENT: ("113104", "Clean Structured Content Option"),
    Option.CLEAN_DESCRIPTORS: ("113105", "Clean Descriptors Option"),
    Option.RETAIN_LONG_FULL_DATES: (
        "113106",
        "Retain Longitudinal Temporal Information Full Dates Option",
    ),
    Option.RETAIN_LONG_MODIFIED_DATES: (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    Option.RETAIN_PATIENT_CHARACTERISTICS: ("113108", "Retain Patient Characteristics Option"),
    Option.RETAIN_DEVICE_IDENTITY: ("113109", "Retain Device Identity Option"),
    Option.RETAIN_UIDS: ("113110", "Retain UIDs Option"),
    Option.RETAIN_SAFE_PRIVATE: ("113111", "Retain Safe Private Option"),
    Option.RETAIN_INSTITUTION_IDENTITY: ("113112", "Retain Institution Identity Option"),
}

_COMPOSITE = {
    "X/Z": Action.EMPTY,
    "X/D": Action.DUMMY,
    "Z/D": Action.DUMMY,
    "X/Z/D": Action.DUMMY,
    "X/Z/U*": Action.REPLACE_UID,
}


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of Table E.1-1."""

    pattern: str
    name: str
    in_composite_iod: bool
    basic: str
    options: tuple[tuple[Option, Action], ...]


def _rules() -> tuple[dict[int, Rule], list[tuple[int, int, Rule]], Rule]:
    exact: dict[int, Rule] = {}
    masked: list[tuple[int, int, Rule]] = []
    private: Rule | None = None
    for pattern, name, composite, basic, options in ROWS:
        rule = Rule(
            pattern, name, composite, basic, tuple((Option(o), Action(a)) for o, a in options)
        )
        if pattern == "private":
            private = rule
        elif "x" in pattern:
            mask = int("".join("0" if c == "x" else "f" for c in pattern), 16)
            value = int(pattern.replace("x", "0"), 16)
            masked.append((mask, value, rule))
        else:
            exact[int(pattern, 16)] = rule
    if private is None:  # pragma: no cover - the generator checks the table has it
        raise RuntimeError("the confidentiality table has no row for private attributes")
    return exact, masked, private


_EXACT, _MASKED, _PRIVATE = _rules()


def rule_for(tag: int) -> Rule | None:
    """The table's row for ``tag`` (exact, a repeating-group pattern, or the private row);
    None when the profile does not list the attribute."""
    found = _EXACT.get(tag)
    if found is not None:
        return found
    if (tag >> 16) % 2 == 1:  # odd groups are private (repeating groups are even)
        return _PRIVATE
    for mask, value, rule in _MASKED:
        if tag & mask == value:
            return rule
    return None


@dataclass(frozen=True)
class Profile:
    """The basic profile with a set of options."""

    options: frozenset[Option] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if {Option.RETAIN_LONG_FULL_DATES, Option.RETAIN_LONG_MODIFIED_DATES} <= self.options:
            raise ValueError(
                "retain_long_full_dates and retain_long_modified_dates exclude "
                "each other: choose one"
            )

    @classmethod
    def of(cls, options: Iterable[str | Option] = ()) -> Profile:
        """A profile from option names; an unknown name is a ValueError naming the valid."""
        chosen = set()
        for name in options:
            try:
                chosen.add(Option(name))
            except ValueError:
                valid = ", ".join(o.value for o in Option)
                raise ValueError(f"unknown option {str(name)[:64]!r}; valid: {valid}") from None
        return cls(frozenset(chosen))

    @property
    def edition(self) -> str:
        return EDITION

    def action(self, tag: int) -> Action:
        """What the profile does to the attribute ``tag`` (in any dataset or sequence)."""
        rule = rule_for(tag)
        if rule is None:
            return Action.KEEP
        chosen = {action for option, action in rule.options if option in self.options}
        if chosen:
            return Action.CLEAN if Action.CLEAN in chosen else chosen.pop()
        return _COMPOSITE.get(rule.basic) or Action(rule.basic)

    def method_codes(self) -> list[tuple[str, str]]:
        """CID 7050 (DCM) codes of the profile and its options, for the output's marking."""
        return [PROFILE_CODE, *(OPTION_CODES[o] for o in Option if o in self.options)]
