"""The cohort query language's tokenizer and recursive-descent parser (decision 0022): text
to the syntax tree of ``domain.cohort``, or a ``CohortQueryError`` with the position of the
token it is about and a message naming what was expected and what was found. Pure."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import NoReturn

from imagebank.domain.cohort import (
    CLINICAL_FIELDS,
    IMAGING_FIELDS,
    MAX_DAYS,
    MAX_DEPTH,
    MAX_LENGTH,
    OPS,
    SEXES,
    SYSTEMS,
    UNIT_DAYS,
    WORD_CHARS,
    Code,
    CodeMatch,
    CohortQueryError,
    Direction,
    Event,
    EventKind,
    Expr,
    FieldType,
    Filter,
    Has,
    Not,
    Op,
    Query,
    Related,
    Sex,
    Timing,
    Unit,
    Value,
    all_of,
    any_of,
    fields_of,
)

# -- tokens -------------------------------------------------------------------------------
_TOKEN = re.compile(
    r"(?P<space>\s+)"
    r"|(?P<string>'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\")"
    r"|(?P<punct><<|<=|>=|!=|[()\[\],:=<>])"
    rf"|(?P<word>{WORD_CHARS})"
)
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INT = re.compile(r"[0-9]+")
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_SYSTEM = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_COMPARISONS = ("=", "!=", "<", "<=", ">", ">=")
_UNITS = {**{u.value: u for u in Unit}, **{f"{u.value}s": u for u in Unit}}
_KINDS = {k.value: k for k in EventKind}
_EVENT_LIST = ", ".join(f"{k.value}[...]" for k in EventKind)


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # word, string, punct, end
    text: str
    pos: int
    #: A string's text without its quotes; otherwise the token's text.
    value: str

    @property
    def end(self) -> int:
        return self.pos + len(self.text)


def _tokens(text: str) -> list[_Token]:
    tokens = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            char = text[pos]
            if char in "'\"":
                message = f"A string that is not closed: add the closing {char}."
            else:
                message = f"Unexpected character {char!r}."
            raise CohortQueryError(message, position=pos, query=text)
        kind = match.lastgroup or "space"
        raw = match.group()
        if kind != "space":
            value = raw[1:-1].replace(raw[0] * 2, raw[0]) if kind == "string" else raw
            tokens.append(_Token(kind, raw, pos, value))
        pos = match.end()
    tokens.append(_Token("end", "", len(text), ""))
    return tokens


def _shown(token: _Token) -> str:
    if token.kind == "end":
        return "the end of the query"
    text = token.text if len(token.text) <= 40 else token.text[:37] + "..."
    return f"'{text}'" if token.kind != "string" else text


def _either(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _suggest(word: str, choices: Sequence[str]) -> str:
    """`` Did you mean 'x'?`` for the nearest of ``choices`` (compared in lowercase)."""
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return f" Did you mean '{lowered[close[0]]}'?" if close else ""


# -- the parser ---------------------------------------------------------------------------
def parse_query(text: str) -> Query:
    """The query ``text`` as a syntax tree; CohortQueryError says where it goes wrong."""
    if len(text) > MAX_LENGTH:
        raise CohortQueryError(
            f"A query is at most {MAX_LENGTH:,} characters.", position=MAX_LENGTH, query=text
        )
    parser = _Parser(text)
    root = parser.expr()
    token = parser.peek()
    if token.kind != "end":
        unopened = " (it closes no '(')" if parser.is_punct(token, ")") else ""
        parser.fail(
            token, f"Expected 'and', 'or' or the end of the query, found {_shown(token)}{unopened}."
        )
    return Query(root)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.index = 0
        self.depth = 0

    # -- token helpers
    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        token = self.peek()
        self.index = min(self.index + 1, len(self.tokens) - 1)
        return token

    def fail(self, token: _Token, message: str) -> NoReturn:
        raise CohortQueryError(message, position=token.pos, query=self.text)

    def is_keyword(self, token: _Token, *words: str) -> bool:
        return token.kind == "word" and token.text.lower() in words

    def is_punct(self, token: _Token, *marks: str) -> bool:
        return token.kind == "punct" and token.text in marks

    def expect_punct(self, mark: str, what: str) -> _Token:
        token = self.peek()
        if not self.is_punct(token, mark):
            self.fail(token, f"Expected '{mark}' {what}, found {_shown(token)}.")
        return self.advance()

    def nest(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(token, f"The query nests 'not' and parentheses deeper than {MAX_DEPTH}.")

    # -- expressions
    def expr(self) -> Expr:
        operands = [self.term()]
        while self.is_keyword(self.peek(), "or"):
            self.advance()
            operands.append(self.term())
        return any_of(operands)

    def term(self) -> Expr:
        operands = [self.factor()]
        while self.is_keyword(self.peek(), "and"):
            self.advance()
            operands.append(self.factor())
        return all_of(operands)

    def factor(self) -> Expr:
        token = self.peek()
        if self.is_keyword(token, "not"):
            self.advance()
            self.nest(token)
            operand = self.factor()
            self.depth -= 1
            return Not(operand)
        if self.is_punct(token, "("):
            self.advance()
            self.nest(token)
            inner = self.expr()
            self.expect_punct(")", f"to close the '(' at character {token.pos}")
            self.depth -= 1
            return inner
        word = token.text.lower() if token.kind == "word" else ""
        if word == "sex":
            return self.sex()
        if word in _KINDS:
            first = self.event()
            timing = self.timing()
            if timing is None:
                return Has(first)
            after = self.peek()
            if not (after.kind == "word" and after.text.lower() in _KINDS):
                self.fail(
                    after,
                    f"Expected an event after '{timing.describe()}' ({_EVENT_LIST}), "
                    f"found {_shown(after)}.",
                )
            return Related(first, timing, self.event())
        if word == "age":
            self.fail(
                token,
                "'age' (age at scan) exists only inside imaging[...]: write imaging[age >= 50].",
            )
        if word in IMAGING_FIELDS or word in CLINICAL_FIELDS:
            kind = "imaging" if word in IMAGING_FIELDS else "condition"
            self.fail(
                token,
                f"'{word}' is a field of an event: write it inside the brackets, "
                f"as in {kind}[{word} ...].",
            )
        hint = _suggest(word, [*_KINDS, "sex", "not"]) if word else ""
        self.fail(
            token,
            f"Expected an event ({_EVENT_LIST}), 'sex', 'not' or '(', found {_shown(token)}.{hint}",
        )

    def timing(self) -> Timing | None:
        token = self.peek()
        if self.is_keyword(token, "before", "after"):
            self.advance()
            return Timing(Direction(token.text.lower()))
        if not self.is_keyword(token, "within"):
            return None
        self.advance()
        number = self.peek()
        if number.kind != "word" or not _INT.fullmatch(number.text):
            self.fail(
                number,
                "Expected a whole number of days, weeks, months or years after 'within', "
                f"found {_shown(number)}.",
            )
        self.advance()
        unit_token = self.peek()
        unit = _UNITS.get(unit_token.text.lower()) if unit_token.kind == "word" else None
        if unit is None:
            self.fail(
                unit_token,
                f"Expected days, weeks, months or years after 'within {number.text}', "
                f"found {_shown(unit_token)}.",
            )
        amount = int(number.text)
        if amount * UNIT_DAYS[unit] > MAX_DAYS:
            self.fail(number, f"A time relation spans at most {MAX_DAYS:,} days.")
        self.advance()
        direction = self.peek()
        if not self.is_keyword(direction, "before", "after", "of"):
            self.fail(
                direction,
                f"Expected 'before', 'after' or 'of' after 'within {number.text} "
                f"{unit_token.text}', found {_shown(direction)}.",
            )
        self.advance()
        return Timing(Direction(direction.text.lower()), amount, unit)

    # -- events
    def event(self) -> Event:
        kind = EventKind(self.advance().text.lower())
        self.expect_punct("[", f"after '{kind.value}' (its filters, or [] for any)")
        filters: list[Filter] = []
        if self.is_punct(self.peek(), "]"):
            self.advance()
            return Event(kind, ())
        while True:
            filters.append(self.filter(kind))
            token = self.peek()
            if self.is_punct(token, ","):
                self.advance()
                continue
            if self.is_punct(token, "]"):
                self.advance()
                return Event(kind, tuple(filters))
            self.fail(token, f"Expected ',' or ']' after a filter, found {_shown(token)}.")

    def filter(self, kind: EventKind) -> Filter:
        token = self.peek()
        fields = fields_of(kind)
        if token.kind == "word" and self.is_punct(self.peek(1), ":"):
            if kind is EventKind.IMAGING:
                self.fail(
                    token,
                    "imaging[...] has no codes: filter on "
                    f"{', '.join(list(IMAGING_FIELDS)[:4])} and the like.",
                )
            return Filter("code", Op.EQ, (self.code(),))
        names = ", ".join(fields)
        if token.kind != "word":
            self.fail(
                token,
                f"Expected a field of {kind.value}[...] ({names}) or a code, "
                f"found {_shown(token)}.",
            )
        name = token.text.lower()
        if name not in fields:
            if name == "age":
                self.fail(token, "'age' (age at scan) is a field of imaging[...] only.")
            if name in IMAGING_FIELDS or name in CLINICAL_FIELDS:
                self.fail(
                    token, f"'{name}' is not a field of {kind.value}[...]; its fields are {names}."
                )
            self.fail(
                token,
                f"Unknown field {_shown(token)} in {kind.value}[...].{_suggest(name, list(fields))}"
                f" The fields are {names}.",
            )
        self.advance()
        field_type = fields[name]
        op_token = self.peek()
        op = self.op()
        if op is None:
            self.fail(
                op_token,
                "Expected an operator (=, !=, <, <=, >, >=, in, between) after "
                f"'{name}', found {_shown(op_token)}.",
            )
        if op not in OPS[field_type]:
            allowed = [o.value for o in Op if o in OPS[field_type]]
            self.fail(op_token, f"'{name}' takes {_either(allowed)}, not '{op.value}'.")
        if op is Op.IN:
            return Filter(name, op, self.value_list(name, field_type, op))
        first = self.value(name, field_type, op)
        if op is not Op.BETWEEN:
            return Filter(name, op, (first,))
        word = self.peek()
        if not self.is_keyword(word, "and"):
            self.fail(word, f"Expected 'and' in '{name} between ...', found {_shown(word)}.")
        self.advance()
        return Filter(name, op, (first, self.value(name, field_type, op)))

    def op(self) -> Op | None:
        token = self.peek()
        if token.kind == "punct" and token.text in _COMPARISONS:
            self.advance()
            return Op(token.text)
        if self.is_keyword(token, "in", "between"):
            self.advance()
            return Op(token.text.lower())
        return None

    def value_list(self, name: str, field_type: FieldType, op: Op) -> tuple[Value, ...]:
        self.expect_punct("(", f"after '{name} in'")
        values = [self.value(name, field_type, op)]
        while self.is_punct(self.peek(), ","):
            self.advance()
            token = self.peek()
            values.append(self.value(name, field_type, op))
            if isinstance(values[-1], Code) != isinstance(values[0], Code):
                self.fail(token, f"'{name} in (...)' holds numbers or codes, not both.")
        self.expect_punct(")", f"to close the list of '{name} in (...)'")
        return tuple(values)

    def value(self, name: str, field_type: FieldType, op: Op) -> Value:
        token = self.peek()
        looks_like_code = token.kind == "word" and self.is_punct(self.peek(1), ":")
        if field_type is FieldType.CODE or (field_type is FieldType.VALUE and looks_like_code):
            if not looks_like_code:
                self.fail(
                    token,
                    f"'{name}' needs a code (SYSTEM:CODE, as in ICD10:C34), found {_shown(token)}.",
                )
            if op not in (Op.EQ, Op.NE, Op.IN):
                self.fail(token, f"'{name}' compares codes with =, != or in only.")
            return self.code()
        if field_type in (FieldType.NUMBER, FieldType.VALUE):
            number = _NUMBER.fullmatch(token.text) if token.kind == "word" else None
            value = float(token.text) if number else math.nan
            if not math.isfinite(value):
                what = (
                    "a number or a code (SYSTEM:CODE)"
                    if field_type is FieldType.VALUE
                    else ("a number")
                )
                self.fail(token, f"'{name}' needs {what}, found {_shown(token)}.")
            self.advance()
            return value
        if field_type is FieldType.DATE:
            found = _DATE.fullmatch(token.text) if token.kind == "word" else None
            day = _date(found) if found else None
            if day is None:
                self.fail(
                    token,
                    f"'{name}' needs a date (YYYY-MM-DD, a day that exists), "
                    f"found {_shown(token)}.",
                )
            self.advance()
            return day
        if token.kind not in ("word", "string"):
            self.fail(token, f"'{name}' needs a value, found {_shown(token)}.")
        self.advance()
        return token.value

    def code(self) -> Code:
        token = self.peek()
        if token.kind != "word" or not self.is_punct(self.peek(1), ":"):
            self.fail(
                token, f"Expected a code (SYSTEM:CODE, as in ICD10:C34), found {_shown(token)}."
            )
        system = token.text.upper()
        if not _SYSTEM.fullmatch(token.text) or system not in SYSTEMS:
            self.fail(
                token,
                f"Unknown code system {_shown(token)}.{_suggest(token.text, SYSTEMS)} "
                f"The systems are {', '.join(SYSTEMS)}.",
            )
        self.advance()
        self.advance()  # the colon
        match = CodeMatch.EXACT
        if self.is_punct(self.peek(), "<<"):
            self.advance()
            match = CodeMatch.DESCENDANTS
        code_token = self.peek()
        if code_token.kind not in ("word", "string"):
            self.fail(
                code_token, f"Expected a code after '{token.text}:', found {_shown(code_token)}."
            )
        self.advance()
        text = code_token.value
        star = code_token.kind == "word" and text.endswith("*")
        if code_token.kind == "string":
            after = self.peek()
            if after.kind == "word" and after.text == "*" and after.pos == code_token.end:
                self.advance()
                star = True
        if star:
            if match is CodeMatch.DESCENDANTS:
                self.fail(
                    code_token,
                    "A code cannot be both '<<' (with its descendants) and '*' (a prefix).",
                )
            match = CodeMatch.PREFIX
            if code_token.kind == "word":
                text = text[:-1]
        if code_token.kind == "word" and "*" in text:
            self.fail(code_token, "'*' may only end a code (a prefix, as in ICD10:C34*).")
        if not text:
            self.fail(
                code_token, f"Expected a code after '{token.text}:', found {_shown(code_token)}."
            )
        return Code(system, text, match)

    # -- the subject
    def sex(self) -> Sex:
        self.advance()
        op_token = self.peek()
        op = self.op()
        if op not in (Op.EQ, Op.NE, Op.IN):
            self.fail(op_token, f"'sex' takes =, != or in, found {_shown(op_token)}.")
        if op is Op.IN:
            self.expect_punct("(", "after 'sex in'")
            values = [self.sex_value()]
            while self.is_punct(self.peek(), ","):
                self.advance()
                values.append(self.sex_value())
            self.expect_punct(")", "to close the list of 'sex in (...)'")
            return Sex(op, tuple(values))
        return Sex(op, (self.sex_value(),))

    def sex_value(self) -> str:
        token = self.peek()
        value = SEXES.get(token.value.lower()) if token.kind in ("word", "string") else None
        if value is None:
            self.fail(
                token,
                f"Expected a sex (M, F, O, U; or male, female, other, unknown), found "
                f"{_shown(token)}.",
            )
        self.advance()
        return value


def _date(match: re.Match[str]) -> date | None:
    try:
        return date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    except ValueError:
        return None
