"""The cohort query language (issue 6, decision 0022): one language for the command line
(``imagebank cohort QUERY``), the API and the UI, over imaging and clinical criteria and the
time between them. Pure: ``parse`` turns text into a frozen syntax tree, ``Query.describe``
turns the tree back into normalised text that parses to an equal tree.

    condition[ICD10:C34*] within 90 days before imaging[modality = CT, body_part = CHEST]

Grammar (keywords in any case; ``and`` binds tighter than ``or``; parentheses group)::

    query     := expr
    expr      := term ("or" term)*
    term      := factor ("and" factor)*
    factor    := "not" factor | "(" expr ")" | subject_test | event [timing event]
    timing    := "within" INT unit ("before" | "after" | "of") | "before" | "after"
    unit      := day(s) | week(s) | month(s) (30 days) | year(s) (365 days)
    event     := KIND "[" [filter ("," filter)*] "]"
    filter    := FIELD OP value | FIELD "in" "(" value ("," value)* ")"
                 | FIELD "between" value "and" value | code     (a bare code: code = it)
    code      := SYSTEM ":" CODE | SYSTEM ":" CODE "*" | SYSTEM ":" "<<" CODE
    subject_test := "sex" ("=" | "!=") value | "sex" "in" "(" value ("," value)* ")"

What each part means (which subjects match) is the index's business (``index.cohort``);
what is written here is only what a query says. A parse error is a ``CohortQueryError``
with the 0-based ``position`` of the token it is about and a message naming what was expected
and what was found.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date

from imagebank.domain.clinical import CODE_SYSTEMS
from imagebank.domain.errors import InvalidInputError

#: The longest query accepted, and the deepest nesting of "not" and parentheses.
MAX_LENGTH = 10_000
MAX_DEPTH = 50
#: The longest time relation, in days (a thousand years).
MAX_DAYS = 365_000


class CohortQueryError(InvalidInputError):
    """A query that does not parse: ``position`` is the 0-based character offset of the
    token the message is about (the query's length when the query ended too soon)."""

    code = "cohort_query"
    status = 422

    def __init__(self, message: str, *, position: int, query: str) -> None:
        super().__init__(message)
        self.position = position
        self.query = query

    def pointer(self) -> str:
        """Two lines: the query (whitespace made spaces) and a caret under the position."""
        line = re.sub(r"\s", " ", self.query)
        return f"{line}\n{' ' * self.position}^"


class EventKind(enum.StrEnum):
    """What an event is: a clinical fact of a kind (``domain.clinical.FactKind``) or a
    series with its study (``imaging``)."""

    CONDITION = "condition"
    OBSERVATION = "observation"
    PROCEDURE = "procedure"
    MEDICATION = "medication"
    ENCOUNTER = "encounter"
    REPORT = "report"
    IMAGING = "imaging"


class Op(enum.StrEnum):
    EQ = "="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    IN = "in"
    BETWEEN = "between"


class CodeMatch(enum.StrEnum):
    EXACT = "exact"
    #: The code and every code that starts with it (``ICD10:C34*``: C34, C34.1, C341).
    PREFIX = "prefix"
    #: The code and its descendants by the is-a relations of its system (``SNOMED:<<123``).
    DESCENDANTS = "descendants"


class Direction(enum.StrEnum):
    BEFORE = "before"
    AFTER = "after"
    #: Either way (``within 30 days of``).
    OF = "of"


class Unit(enum.StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    YEAR = "year"


UNIT_DAYS = {Unit.DAY: 1, Unit.WEEK: 7, Unit.MONTH: 30, Unit.YEAR: 365}


class FieldType(enum.StrEnum):
    #: Text compared case-insensitively; ``*`` is a wildcard.
    TEXT = "text"
    #: Text compared exactly (a unit: mg/dL is not MG/DL).
    EXACT = "exact"
    NUMBER = "number"
    DATE = "date"
    CODE = "code"
    #: A clinical value: a number, or a code for a coded result.
    VALUE = "value"


CLINICAL_FIELDS: dict[str, FieldType] = {
    "code": FieldType.CODE,
    "value": FieldType.VALUE,
    "unit": FieldType.EXACT,
    "date": FieldType.DATE,
    "status": FieldType.TEXT,
}
IMAGING_FIELDS: dict[str, FieldType] = {
    "modality": FieldType.TEXT,
    "body_part": FieldType.TEXT,
    "study_description": FieldType.TEXT,
    "series_description": FieldType.TEXT,
    "protocol": FieldType.TEXT,
    "manufacturer": FieldType.TEXT,
    "model": FieldType.TEXT,
    "field_strength": FieldType.NUMBER,
    "date": FieldType.DATE,
    "age": FieldType.NUMBER,
    "slice_thickness": FieldType.NUMBER,
    "kvp": FieldType.NUMBER,
    "repetition_time": FieldType.NUMBER,
    "echo_time": FieldType.NUMBER,
    "inversion_time": FieldType.NUMBER,
    "flip_angle": FieldType.NUMBER,
    "convolution_kernel": FieldType.TEXT,
}
#: Imaging fields read from a series' instances: a series matches when any one of its
#: instances satisfies all of the event's filters on them.
INSTANCE_FIELDS = frozenset(
    {
        "slice_thickness",
        "kvp",
        "repetition_time",
        "echo_time",
        "inversion_time",
        "flip_angle",
        "convolution_kernel",
    }
)
_ALL_OPS = frozenset(Op)
OPS: dict[FieldType, frozenset[Op]] = {
    FieldType.TEXT: frozenset({Op.EQ, Op.NE, Op.IN}),
    FieldType.EXACT: frozenset({Op.EQ, Op.NE, Op.IN}),
    FieldType.CODE: frozenset({Op.EQ, Op.NE, Op.IN}),
    FieldType.NUMBER: _ALL_OPS,
    FieldType.DATE: _ALL_OPS,
    FieldType.VALUE: _ALL_OPS,
}
#: The code systems a query may name (short names, as facts store them).
SYSTEMS: tuple[str, ...] = tuple(sorted(set(CODE_SYSTEMS.values())))
#: Sex as DICOM writes it (PatientSex: M, F, O), or as FHIR does; U is unknown.
SEXES = {
    "m": "M",
    "male": "M",
    "f": "F",
    "female": "F",
    "o": "O",
    "other": "O",
    "u": "U",
    "unknown": "U",
}


def fields_of(kind: EventKind) -> dict[str, FieldType]:
    return IMAGING_FIELDS if kind is EventKind.IMAGING else CLINICAL_FIELDS


# -- the syntax tree ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Code:
    system: str
    code: str
    match: CodeMatch = CodeMatch.EXACT

    def __post_init__(self) -> None:
        if not self.code or self.system not in SYSTEMS:
            raise ValueError("a code needs a known system and a code")

    def describe(self) -> str:
        arrows = "<<" if self.match is CodeMatch.DESCENDANTS else ""
        star = "*" if self.match is CodeMatch.PREFIX else ""
        code = self.code if _WORD.fullmatch(self.code) and "*" not in self.code else None
        return f"{self.system}:{arrows}{code or _quote(self.code)}{star}"


Value = float | str | date | Code


@dataclass(frozen=True, slots=True)
class Filter:
    """``field op value``; ``values`` holds one value, two for ``between``, one or more for
    ``in``."""

    field: str
    op: Op
    values: tuple[Value, ...]

    def __post_init__(self) -> None:
        count = len(self.values)
        if (self.op is Op.BETWEEN and count != 2) or (self.op is Op.IN and count < 1):
            raise ValueError("wrong number of values for the operator")
        if self.op not in (Op.IN, Op.BETWEEN) and count != 1:
            raise ValueError("one value expected")

    def describe(self) -> str:
        shown = [_describe_value(v) for v in self.values]
        if self.field == "code" and self.op is Op.EQ:
            return shown[0]
        if self.op is Op.IN:
            return f"{self.field} in ({', '.join(shown)})"
        if self.op is Op.BETWEEN:
            return f"{self.field} between {shown[0]} and {shown[1]}"
        return f"{self.field} {self.op.value} {shown[0]}"


@dataclass(frozen=True, slots=True)
class Event:
    """A clinical fact of a kind, or a series with its study (``imaging``), with filters."""

    kind: EventKind
    filters: tuple[Filter, ...] = ()

    def describe(self) -> str:
        return f"{self.kind.value}[{', '.join(f.describe() for f in self.filters)}]"


@dataclass(frozen=True, slots=True)
class Timing:
    """``within N unit before|after|of``, or a bare ``before``/``after`` (``amount`` None):
    strictly earlier or later, any distance."""

    direction: Direction
    amount: int | None = None
    unit: Unit = Unit.DAY

    def __post_init__(self) -> None:
        if self.amount is None and self.direction is Direction.OF:
            raise ValueError("'of' needs a distance (within N days of)")
        if self.amount is not None and not 0 <= self.amount * UNIT_DAYS[self.unit] <= MAX_DAYS:
            raise ValueError("the distance is out of range")

    @property
    def days(self) -> int | None:
        return None if self.amount is None else self.amount * UNIT_DAYS[self.unit]

    def describe(self) -> str:
        if self.amount is None:
            return self.direction.value
        plural = "" if self.amount == 1 else "s"
        return f"within {self.amount} {self.unit.value}{plural} {self.direction.value}"


@dataclass(frozen=True, slots=True)
class Has:
    """The subject has at least one such event."""

    event: Event


@dataclass(frozen=True, slots=True)
class Related:
    """The subject has a ``first`` and a ``second`` event whose days are as ``timing``
    says: ``first within 90 days before second`` is 0 <= day(second) - day(first) <= 90."""

    first: Event
    timing: Timing
    second: Event


@dataclass(frozen=True, slots=True)
class Sex:
    """A test of the subject's sex (canonical values M, F, O, U)."""

    op: Op
    values: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.op not in (Op.EQ, Op.NE, Op.IN) or not self.values:
            raise ValueError("sex takes =, != or in")
        if self.op is not Op.IN and len(self.values) != 1:
            raise ValueError("one value expected")


@dataclass(frozen=True, slots=True)
class Not:
    """The subject does not satisfy ``operand`` (for an event: has none)."""

    operand: Expr


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[Expr, ...]

    def __post_init__(self) -> None:
        if len(self.operands) < 2 or any(isinstance(o, And) for o in self.operands):
            raise ValueError("use all_of(): two or more operands, none an And")


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[Expr, ...]

    def __post_init__(self) -> None:
        if len(self.operands) < 2 or any(isinstance(o, Or) for o in self.operands):
            raise ValueError("use any_of(): two or more operands, none an Or")


Expr = Has | Related | Sex | Not | And | Or


def all_of(operands: Sequence[Expr]) -> Expr:
    """``a and b and ...``, flattened (an And inside an And is one And)."""
    flat: list[Expr] = []
    for operand in operands:
        flat.extend(operand.operands if isinstance(operand, And) else (operand,))
    return flat[0] if len(flat) == 1 else And(tuple(flat))


def any_of(operands: Sequence[Expr]) -> Expr:
    """``a or b or ...``, flattened."""
    flat: list[Expr] = []
    for operand in operands:
        flat.extend(operand.operands if isinstance(operand, Or) else (operand,))
    return flat[0] if len(flat) == 1 else Or(tuple(flat))


@dataclass(frozen=True, slots=True)
class Query:
    root: Expr

    def describe(self) -> str:
        """The query as normalised text (``parse(q.describe()) == q``)."""
        return _describe(self.root)

    def events(self) -> Iterator[tuple[Event, bool]]:
        """Every event with whether it is positive (under an even number of ``not``)."""
        yield from _events(self.root, True)


def _events(expr: Expr, positive: bool) -> Iterator[tuple[Event, bool]]:
    if isinstance(expr, Has):
        yield expr.event, positive
    elif isinstance(expr, Related):
        yield expr.first, positive
        yield expr.second, positive
    elif isinstance(expr, Not):
        yield from _events(expr.operand, not positive)
    elif isinstance(expr, And | Or):
        for operand in expr.operands:
            yield from _events(operand, positive)


def _describe(expr: Expr, inside: str = "") -> str:
    if isinstance(expr, Has):
        return expr.event.describe()
    if isinstance(expr, Related):
        timing = expr.timing.describe()
        return f"{expr.first.describe()} {timing} {expr.second.describe()}"
    if isinstance(expr, Sex):
        if expr.op is Op.IN:
            return f"sex in ({', '.join(expr.values)})"
        return f"sex {expr.op.value} {expr.values[0]}"
    if isinstance(expr, Not):
        return f"not {_describe(expr.operand, 'not')}"
    if isinstance(expr, And):
        text = " and ".join(_describe(o, "and") for o in expr.operands)
        return f"({text})" if inside == "not" else text
    text = " or ".join(_describe(o, "or") for o in expr.operands)
    return f"({text})" if inside in ("and", "not") else text


def _number(value: float) -> str:
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _describe_value(value: Value) -> str:
    if isinstance(value, Code):
        return value.describe()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return value if _WORD.fullmatch(value) else _quote(value)
    return _number(value)


#: A bare word of a query (a value, a code, a keyword): what ``describe`` need not quote.
WORD_CHARS = r"[\w.*+\-]+"
_WORD = re.compile(WORD_CHARS)


def parse(text: str) -> Query:
    """The query ``text`` as a syntax tree; CohortQueryError says where it goes wrong
    (``domain.cohort_parser``)."""
    from imagebank.domain.cohort_parser import parse_query

    return parse_query(text)
