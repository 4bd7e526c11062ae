"""Clinical tables in (issue 6, decision 0024): the mapping that says which column of a CSV or
Parquet table holds the patient's identifier, the code, the value, the unit and the date, and
how one row becomes a ``Fact``. Pure: the YAML is read by ``services.clinical_mapping``, the
files by ``ingest.tabular``.

A mapping names, for each field of a fact, either the **column** it is read from
(``columns``) or a **fixed** value for every row (``fixed``):

========== ======= ===== ======== ===================================================
field      column  fixed required what
========== ======= ===== ======== ===================================================
patient    yes     no    yes      the patient's identifier
issuer     yes     yes   yes      ``NHS`` (an NHS number, its check digit verified) or
                                  the local identifier's issuer
kind       yes     yes   yes      a ``FactKind``: condition, observation, ...
code       yes     yes   yes      the code
system     yes     yes   yes      its code system: SNOMED, ICD10, LOINC, DMD ... or a URI
display    yes     yes   no       the code's term
value      yes     no    no       a number when it reads as one, else text
unit       yes     yes   no       the value's unit
date       yes     no    yes      when (``start``); ISO 8601, or ``date_formats.date``
end_date   yes     no    no       until when (``end``)
status     yes     yes   no       the statement's status
row_id     yes     no    no       the row's own ID (the fact's ``source_id``)
birth_date yes     no    no       the patient's birth date
sex        yes     no    no       M, F, O (or male, female, other); U/unknown is empty
========== ======= ===== ======== ===================================================

A fact's ``source_id`` makes a re-import add nothing: ``table:<source>/<row_id>`` with a row ID
column, else ``table:sha256:<hex>`` of every mapped value of the row (the same statement
twice is one fact; a corrected value is a new fact).
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import NamedTuple

from imagebank.domain.clinical import (
    CODE_SYSTEMS,
    NHS_NUMBER_ISSUER,
    NHS_NUMBER_SYSTEM,
    Fact,
    FactKind,
    PatientRef,
    code_system_name,
)
from imagebank.domain.errors import InvalidInputError

__all__ = [
    "FIELDS",
    "MAPPING_VERSION",
    "MappedRow",
    "MappingError",
    "RowError",
    "TableMapping",
    "mapping_problems",
]

MAPPING_VERSION = 1
#: The short names of the code systems (``SNOMED``, ``ICD10`` ...), as facts keep them.
SYSTEM_NAMES = frozenset(CODE_SYSTEMS.values())
_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_YEAR_MONTH = re.compile(r"[0-9]{4}(-(0[1-9]|1[0-2]))?")
_SEX = {
    "m": "M",
    "male": "M",
    "f": "F",
    "female": "F",
    "o": "O",
    "other": "O",
    "u": "",
    "unknown": "",
}
_DATE_FIELDS = ("date", "end_date", "birth_date")


class Rule(NamedTuple):
    column: bool
    fixed: bool
    required: bool


#: Each field: whether it may be a column, a fixed value, and whether the mapping must give it.
FIELDS: dict[str, Rule] = {
    "patient": Rule(True, False, True),
    "issuer": Rule(True, True, True),
    "kind": Rule(True, True, True),
    "code": Rule(True, True, True),
    "system": Rule(True, True, True),
    "display": Rule(True, True, False),
    "value": Rule(True, False, False),
    "unit": Rule(True, True, False),
    "date": Rule(True, False, True),
    "end_date": Rule(True, False, False),
    "status": Rule(True, True, False),
    "row_id": Rule(True, False, False),
    "birth_date": Rule(True, False, False),
    "sex": Rule(True, False, False),
}


class MappingError(InvalidInputError):
    """A mapping file is not valid: ``problems`` holds one line per problem (where, which
    field, what is wrong and what was expected); the message is those lines."""

    code = "invalid_mapping"

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


class RowError(ValueError):
    """A row that gives no fact: ``reason`` (``missing``, ``bad_nhs_number``, ``bad_date``,
    ``invalid``) and a message naming the column, never the cell's value."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason, message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class MappedRow:
    """What one row says: who (the identifier, and demographics when mapped) and the fact."""

    patient: PatientRef
    birth_date: str
    sex: str
    fact: Fact


def _is_nhs_issuer(text: str) -> bool:
    return text.upper() == NHS_NUMBER_ISSUER or text.rstrip("/") == NHS_NUMBER_SYSTEM


def system_name(text: str) -> str:
    """A code system as facts keep it: a short name (any case) or a URI mapped to one, else as
    given."""
    upper = text.upper()
    return upper if upper in SYSTEM_NAMES else code_system_name(text)


def _format_works(fmt: str) -> bool:
    """Whether a ``strptime`` format reads back what it writes (and has a directive)."""
    if "%" not in fmt:
        return False
    sample = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)
    try:
        datetime.strptime(sample.strftime(fmt), fmt)
    except ValueError:
        return False
    return True


def mapping_problems(
    columns: Mapping[str, str],
    fixed: Mapping[str, str],
    date_formats: Mapping[str, str],
    delimiter: str | None = None,
) -> list[tuple[str, str]]:
    """Every problem of a mapping, as (field path, what is wrong; what was expected)."""
    problems: list[tuple[str, str]] = []
    for name in columns:
        if name not in FIELDS:
            problems.append(
                (f"columns.{name}", "unknown field; expected one of: " + ", ".join(FIELDS))
            )
        elif not columns[name].strip():
            problems.append((f"columns.{name}", "empty; expected a column name"))
    for name, value in fixed.items():
        rule = FIELDS.get(name)
        if rule is None:
            problems.append(
                (
                    f"fixed.{name}",
                    "unknown field; expected one of: "
                    + ", ".join(f for f, r in FIELDS.items() if r.fixed),
                )
            )
        elif not rule.fixed:
            problems.append((f"fixed.{name}", "cannot be a fixed value; expected it under columns"))
        elif name in columns:
            problems.append(
                (
                    f"fixed.{name}",
                    f"also given as columns.{name}; expected a column or a fixed value, not both",
                )
            )
        elif not value.strip():
            problems.append((f"fixed.{name}", "empty; expected a value"))
        elif name == "kind" and value.strip().lower() not in {k.value for k in FactKind}:
            problems.append(
                (
                    f"fixed.{name}",
                    "not a fact kind; expected one of: " + ", ".join(k.value for k in FactKind),
                )
            )
        elif name == "system" and system_name(value) not in SYSTEM_NAMES and ":" not in value:
            problems.append(
                (
                    f"fixed.{name}",
                    "not a known code system; expected one of "
                    + ", ".join(sorted(SYSTEM_NAMES))
                    + ", or a URI",
                )
            )
    for name, rule in FIELDS.items():
        if rule.required and name not in columns and name not in fixed:
            where = "columns or fixed" if rule.fixed else "columns"
            problems.append((f"columns.{name}", f"missing; expected it under {where}"))
    for name, fmt in date_formats.items():
        if name not in _DATE_FIELDS:
            problems.append(
                (
                    f"date_formats.{name}",
                    "unknown field; expected one of: " + ", ".join(_DATE_FIELDS),
                )
            )
        elif name not in columns:
            problems.append(
                (
                    f"date_formats.{name}",
                    f"a format for columns.{name}, which is "
                    "not given; expected a format only for a mapped date column",
                )
            )
        elif not _format_works(fmt):
            problems.append(
                (
                    f"date_formats.{name}",
                    "not a date format that reads back what "
                    "it writes; expected strptime directives, e.g. %d/%m/%Y %H:%M",
                )
            )
    if delimiter is not None and (len(delimiter) != 1 or delimiter in '"\r\n'):
        problems.append(
            (
                "delimiter",
                "not one character other than a quote or a line break; "
                'expected e.g. "," or ";" or "\\t"',
            )
        )
    return problems


Cell = str | int | float | Decimal | bool | datetime | date | None


@dataclass(frozen=True, slots=True)
class TableMapping:
    """Which column (or fixed value) gives each field of a fact; see the module's docstring.
    ``source`` names the extract (row IDs are unique within it); ``empty_values`` are the
    cell texts that mean no value."""

    columns: Mapping[str, str]
    fixed: Mapping[str, str] = field(default_factory=dict)
    date_formats: Mapping[str, str] = field(default_factory=dict)
    source: str = "table"
    delimiter: str | None = None
    empty_values: frozenset[str] = frozenset({""})

    def __post_init__(self) -> None:
        problems = mapping_problems(self.columns, self.fixed, self.date_formats, self.delimiter)
        if problems:
            raise MappingError([f"{path}: {what}" for path, what in problems])

    # -- rows
    def map_row(self, cells: Mapping[str, Cell]) -> MappedRow:
        """The fact of one row. ``cells`` holds the mapped columns' cells by field (text from
        a CSV; typed values from Parquet). Raises ``RowError``."""
        row: dict[str, Cell] = {name: value.strip() for name, value in self.fixed.items()}
        empty = self.empty_values
        for name, value in cells.items():
            if isinstance(value, str):
                text = value.strip()
                row[name] = None if text in empty else text
            elif isinstance(value, float) and math.isnan(value):
                row[name] = None
            else:
                row[name] = value
        get = row.get
        ref = self._patient(_text(get("patient")), _text(get("issuer")))
        kind_text = _text(get("kind"))
        try:
            kind = FactKind(kind_text.lower())
        except ValueError:
            raise self._error(
                "invalid" if kind_text else "missing",
                "kind",
                "a fact kind (" + ", ".join(k.value for k in FactKind) + ")",
            ) from None
        code = _text(get("code"))
        if not code:
            raise self._error("missing", "code", "a code")
        number, text = _value(get("value"))
        start = self._time(get("date"), "date")
        end = self._time(get("end_date"), "end_date")
        birth = self._time(get("birth_date"), "birth_date")
        sex = _text(get("sex"))
        if sex:
            try:
                sex = _SEX[sex.lower()]
            except KeyError:
                raise self._error(
                    "invalid", "sex", "M, F, O, U (or male, female, other, unknown)"
                ) from None
        system = system_name(_text(get("system")))
        display = _text(get("display"))
        unit = _text(get("unit"))
        status = _text(get("status"))
        row_id = _text(get("row_id"))
        if row_id:
            source_id = f"table:{self.source}/{row_id}"
        else:
            values = (
                ref.issuer,
                ref.value,
                kind.value,
                system,
                code,
                display,
                "" if number is None else repr(number),
                text,
                unit,
                start.isoformat() if start else "",
                end.isoformat() if end else "",
                status,
            )
            digest = hashlib.sha256("\x1f".join(values).encode()).hexdigest()
            source_id = f"table:sha256:{digest}"
        fact = Fact(
            kind,
            source_id,
            system,
            code,
            display,
            value_number=number,
            value_text=text,
            unit=unit,
            start=start,
            end=end,
            status=status,
        )
        return MappedRow(ref, birth.date().isoformat() if birth else "", sex, fact)

    def _error(self, reason: str, name: str, expected: str) -> RowError:
        where = f"column {self.columns[name]}" if name in self.columns else f"fixed {name}"
        if reason == "missing":
            return RowError(reason, f"{where} is empty; expected {expected}")
        return RowError(reason, f"{where} is not {expected}")

    def _patient(self, value: str, issuer: str) -> PatientRef:
        if not value:
            raise self._error("missing", "patient", "a patient identifier")
        if not issuer:
            raise self._error("missing", "issuer", "the identifier's issuer")
        if _is_nhs_issuer(issuer):
            ref = _nhs_number(value)
            if ref is None:
                raise self._error(
                    "bad_nhs_number",
                    "patient",
                    "an NHS number (ten digits with a valid check digit)",
                )
            return ref
        return PatientRef(issuer, value)

    def _time(self, value: Cell, name: str) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            moment = value
        elif isinstance(value, date):
            moment = datetime(value.year, value.month, value.day, tzinfo=UTC)
        else:
            fmt = self.date_formats.get(name)
            try:
                moment = _parse_time(value if isinstance(value, str) else str(value), fmt)
            except ValueError:
                raise self._error(
                    "bad_date",
                    name,
                    f"a date as {fmt}"
                    if fmt
                    else "an ISO 8601 date (YYYY-MM-DD[THH:MM:SS]); set "
                    f"date_formats.{name} for another",
                ) from None
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)


def _text(value: Cell) -> str:
    """A cleaned cell as text ("" for none); a whole float without its ".0"."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _value(value: Cell) -> tuple[float | None, str]:
    """A cleaned cell as a fact's value: a number when it is or reads as one, else text."""
    if value is None:
        return None, ""
    if isinstance(value, bool):
        return None, "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return float(value), ""
    text = _text(value)
    if _NUMBER.fullmatch(text):
        return float(text), ""
    return None, text


@functools.lru_cache(maxsize=65_536)
def _nhs_number(value: str) -> PatientRef | None:
    """``PatientRef.nhs_number``, or None (remembered: a patient has many rows)."""
    try:
        return PatientRef.nhs_number(value)
    except ValueError:
        return None


def _parse_time(text: str, fmt: str | None) -> datetime:
    """A date or time: by ``strptime`` format, else ISO 8601 (a year or year-month is the
    start of its period)."""
    if fmt is not None:
        return datetime.strptime(text, fmt)
    if _YEAR_MONTH.fullmatch(text):
        return datetime(int(text[:4]), int(text[5:7] or 1), 1, tzinfo=UTC)
    if len(text) < 8:  # fromisoformat reads "2019" as nothing; "20190101" is ISO basic
        raise ValueError(text)
    return datetime.fromisoformat(text)
