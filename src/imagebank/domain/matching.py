"""DICOM attribute matching (PS3.4 C.2.2.2), shared by C-FIND and QIDO-RS.

A query gives, per attribute, a string in DICOM's matching syntax; ``parse_match`` turns it
into a ``Condition`` the index can run, or None for universal matching (an empty value, or
only ``*``: the attribute is returned, not filtered on). Supported, for the indexed attributes:

* single value matching (UIDs, codes, numbers, dates, times, names);
* list of UID matching (``1.2.3\\1.2.4``);
* wildcard matching with ``*`` and ``?`` (not for UIDs, dates, times or numbers);
* range matching of dates and times (``20240101-20241231``, ``-20241231``, ``20240101-``);
* person names: case-insensitive when "fuzzy" (QIDO-RS ``fuzzymatching=true``), as PS3.18
  allows; exact otherwise.

Values that cannot match anything (a malformed date, a UID with a letter) are refused with a
ValueError naming the attribute and the rule, never echoing the value (it may be patient
data).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from imagebank.domain.model import INDEXED_ATTRIBUTES, IndexedAttribute, Level


class MatchKind(StrEnum):
    SINGLE = "single"
    LIST = "list"
    WILDCARD = "wildcard"
    RANGE = "range"


@dataclass(frozen=True, slots=True)
class Condition:
    """One attribute's filter: ``values`` is (value,) for SINGLE, the UIDs for LIST, the
    pattern for WILDCARD, and (low, high) for RANGE, either of which may be ""."""

    keyword: str
    level: Level
    column: str
    kind: MatchKind
    values: tuple[str, ...]
    case_insensitive: bool = False


_BY_KEYWORD = {a.keyword: a for a in INDEXED_ATTRIBUTES}
_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_DATE_RE = re.compile(r"^[0-9]{8}$")
_TIME_RE = re.compile(r"^[0-9]{2}([0-9]{2}([0-9]{2}(\.[0-9]{1,6})?)?)?$")
_INT_RE = re.compile(r"^[+-]?[0-9]+$")
_DECIMAL_RE = re.compile(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$")


def _vr(attribute: IndexedAttribute) -> str:
    keyword = attribute.keyword
    if attribute.kind == "int":
        return "IS"
    if attribute.kind == "float":
        return "DS"
    if keyword.endswith("UID"):
        return "UI"
    if keyword.endswith("Date"):
        return "DA"
    if keyword.endswith("Time"):
        return "TM"
    if keyword.endswith("Name") and keyword not in (
        "InstitutionName",
        "StationName",
        "SequenceName",
        "ProtocolName",
        "ManufacturerModelName",
    ):
        return "PN"
    return "LO"


def matching_keywords() -> frozenset[str]:
    """The attributes a query may match on (the indexed ones)."""
    return frozenset(_BY_KEYWORD)


def parse_match(keyword: str, raw: str, *, fuzzy: bool = False) -> Condition | None:
    """The condition ``raw`` states on ``keyword``; None for universal matching."""
    attribute = _BY_KEYWORD.get(keyword)
    if attribute is None:
        raise ValueError(f"{keyword} is not an attribute that can be matched on")
    vr = _vr(attribute)
    value = raw.strip(" \x00")
    if not value.strip("*"):  # "*" matches any value, empty too: so does "**" (PS3.4 C.2.2.2.4)
        return None

    def make(kind: MatchKind, *values: str, insensitive: bool = False) -> Condition:
        return Condition(
            keyword, attribute.level, attribute.column, kind, tuple(values), insensitive
        )

    if vr == "UI":
        uids = [u.strip(" \x00") for u in value.split("\\")]
        if not all(_UID_RE.fullmatch(u) and len(u) <= 64 for u in uids):
            raise ValueError(
                f"{keyword} takes UIDs (digits and dots), one or a list "
                "separated by backslashes; no wildcards"
            )
        return make(MatchKind.LIST, *uids) if len(uids) > 1 else make(MatchKind.SINGLE, uids[0])
    if vr in ("DA", "TM"):
        pattern = _DATE_RE if vr == "DA" else _TIME_RE
        text = value.replace(":", "") if vr == "TM" else value
        what = "YYYYMMDD" if vr == "DA" else "HHMMSS"
        if "-" in text:
            low, _, high = text.partition("-")
            if (not low and not high) or not all(pattern.fullmatch(v) for v in (low, high) if v):
                raise ValueError(
                    f"{keyword} takes {what} or a range {what}-{what} (either end may be left open)"
                )
            if low and high and low > high:
                raise ValueError(f"{keyword}'s range starts after it ends")
            return make(MatchKind.RANGE, low, high)
        if not pattern.fullmatch(text):
            raise ValueError(f"{keyword} takes {what} or a range {what}-{what}")
        return make(MatchKind.SINGLE, text)
    if vr == "IS":
        if not _INT_RE.fullmatch(value):
            raise ValueError(f"{keyword} takes a whole number")
        return make(MatchKind.SINGLE, value)
    if vr == "DS":
        if not _DECIMAL_RE.fullmatch(value):
            raise ValueError(f"{keyword} takes a decimal number")
        return make(MatchKind.SINGLE, value)
    insensitive = fuzzy and vr == "PN"
    if "*" in value or "?" in value:
        return make(MatchKind.WILDCARD, value, insensitive=insensitive)
    return make(MatchKind.SINGLE, value, insensitive=insensitive)


def like_pattern(wildcard: str) -> str:
    """A DICOM wildcard (``*``, ``?``) as an SQL LIKE pattern with ``\\`` as the escape."""
    out = []
    for char in wildcard:
        if char in "%_\\":
            out.append("\\" + char)
        elif char == "*":
            out.append("%")
        elif char == "?":
            out.append("_")
        else:
            out.append(char)
    return "".join(out)
