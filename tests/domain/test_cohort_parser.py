"""domain/cohort.py: every production of the cohort language, every error with its position,
and ``describe()`` round trips (hypothesis, generating syntax trees)."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imagebank.domain.cohort import (
    CLINICAL_FIELDS,
    IMAGING_FIELDS,
    MAX_DEPTH,
    MAX_LENGTH,
    OPS,
    SYSTEMS,
    And,
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
    Or,
    Query,
    Related,
    Sex,
    Timing,
    Unit,
    Value,
    all_of,
    any_of,
    parse,
)
from imagebank.domain.errors import InvalidInputError

C34 = Code("ICD10", "C34", CodeMatch.PREFIX)
CT = Filter("modality", Op.EQ, ("CT",))


def event(kind: str, *filters: Filter) -> Event:
    return Event(EventKind(kind), filters)


# -- the examples of the brief -----------------------------------------------------------------
def test_a_condition_within_90_days_before_a_chest_ct() -> None:
    query = parse("condition[ICD10:C34*] within 90 days before imaging[modality = CT, "
                  "body_part = CHEST]")
    assert query == Query(Related(
        event("condition", Filter("code", Op.EQ, (C34,))),
        Timing(Direction.BEFORE, 90, Unit.DAY),
        event("imaging", CT, Filter("body_part", Op.EQ, ("CHEST",)))))
    assert query.root.timing.days == 90  # type: ignore[union-attr]


def test_three_criteria_and_sex() -> None:
    query = parse("condition[ICD10:C34*] within 90 days before imaging[modality=CT] and "
                  "observation[LOINC:718-7, value between 8 and 12] and sex = F")
    assert isinstance(query.root, And) and len(query.root.operands) == 3
    related, observation, sex = query.root.operands
    assert isinstance(related, Related)
    assert observation == Has(event("observation",
                                    Filter("code", Op.EQ, (Code("LOINC", "718-7"),)),
                                    Filter("value", Op.BETWEEN, (8.0, 12.0))))
    assert sex == Sex(Op.EQ, ("F",))


def test_age_field_strength_and_not_descendants() -> None:
    query = parse("imaging[modality = MR, field_strength >= 3, age >= 50] and "
                  "not medication[DMD:<<123]")
    assert query == Query(And((
        Has(event("imaging", Filter("modality", Op.EQ, ("MR",)),
                  Filter("field_strength", Op.GE, (3.0,)), Filter("age", Op.GE, (50.0,)))),
        Not(Has(event("medication", Filter("code", Op.EQ, (
            Code("DMD", "123", CodeMatch.DESCENDANTS),))))))))


# -- every production ------------------------------------------------------------------------
def test_and_binds_tighter_than_or_and_parentheses_group() -> None:
    a, b, c = (Has(event(k)) for k in ("condition", "observation", "procedure"))
    assert parse("condition[] or observation[] and procedure[]").root == Or((a, And((b, c))))
    assert parse("(condition[] or observation[]) and procedure[]").root == And((Or((a, b)), c))
    assert parse("condition[] and observation[] or procedure[]").root == Or((And((a, b)), c))
    # nested groups of the same operator are one operator
    assert parse("(condition[] and observation[]) and procedure[]").root == And((a, b, c))
    assert parse("((condition[]))").root == a
    assert parse("not condition[] and observation[]").root == And((Not(a), b))
    assert parse("not (condition[] and observation[])").root == Not(And((a, b)))
    assert parse("not not condition[]").root == Not(Not(a))


def test_keywords_kinds_fields_units_and_systems_in_any_case() -> None:
    query = parse("CONDITION[icd10:C34*] Within 1 MONTH Before Imaging[MODALITY = CT] "
                  "AND NOT Sex In (m, Female) OR report[]")
    assert query.describe() == ("condition[ICD10:C34*] within 1 month before imaging[modality "
                                "= CT] and not sex in (M, F) or report[]")


@pytest.mark.parametrize(("text", "timing"), [
    ("within 90 days before", Timing(Direction.BEFORE, 90)),
    ("within 1 day after", Timing(Direction.AFTER, 1)),
    ("within 0 days of", Timing(Direction.OF, 0)),
    ("within 2 weeks of", Timing(Direction.OF, 2, Unit.WEEK)),
    ("within 3 months before", Timing(Direction.BEFORE, 3, Unit.MONTH)),
    ("within 1 year after", Timing(Direction.AFTER, 1, Unit.YEAR)),
    ("within 2 years before", Timing(Direction.BEFORE, 2, Unit.YEAR)),
    ("before", Timing(Direction.BEFORE)),
    ("after", Timing(Direction.AFTER)),
])
def test_every_timing(text: str, timing: Timing) -> None:
    query = parse(f"procedure[] {text} encounter[]")
    assert query.root == Related(event("procedure"), timing, event("encounter"))
    assert query.describe() == f"procedure[] {text} encounter[]"


def test_units_in_days() -> None:
    days = [Timing(Direction.OF, 2, u).days for u in Unit]
    assert days == [2, 14, 60, 730]
    assert Timing(Direction.BEFORE).days is None


@pytest.mark.parametrize(("text", "expected"), [
    ("ICD10:C34", Code("ICD10", "C34")),
    ("ICD10:C34.1", Code("ICD10", "C34.1")),
    ("ICD10:C34*", Code("ICD10", "C34", CodeMatch.PREFIX)),
    ("SNOMED:<<73211009", Code("SNOMED", "73211009", CodeMatch.DESCENDANTS)),
    ("snomed : << 73211009", Code("SNOMED", "73211009", CodeMatch.DESCENDANTS)),
    ("LOINC:718-7", Code("LOINC", "718-7")),
    ("UCUM:'mg/dL'", Code("UCUM", "mg/dL")),
    ("UCUM:'mg/'*", Code("UCUM", "mg/", CodeMatch.PREFIX)),
    ("DMD:\"it's\"", Code("DMD", "it's")),
])
def test_every_form_of_code(text: str, expected: Code) -> None:
    assert parse(f"condition[{text}]").root == Has(event(
        "condition", Filter("code", Op.EQ, (expected,))))
    assert parse(f"condition[code = {text}]") == parse(f"condition[{text}]")


@pytest.mark.parametrize(("text", "expected"), [
    ("value = 8", Filter("value", Op.EQ, (8.0,))),
    ("value != -1.5", Filter("value", Op.NE, (-1.5,))),
    ("value < 1e3", Filter("value", Op.LT, (1000.0,))),
    ("value <= .5", Filter("value", Op.LE, (0.5,))),
    ("value > +2", Filter("value", Op.GT, (2.0,))),
    ("value >= 2.", Filter("value", Op.GE, (2.0,))),
    ("value in (1, 2, 3)", Filter("value", Op.IN, (1.0, 2.0, 3.0))),
    ("value between 8 and 12", Filter("value", Op.BETWEEN, (8.0, 12.0))),
    ("value = SNOMED:260385009", Filter("value", Op.EQ, (Code("SNOMED", "260385009"),))),
    ("value in (SNOMED:1, SNOMED:2*)", Filter("value", Op.IN, (
        Code("SNOMED", "1"), Code("SNOMED", "2", CodeMatch.PREFIX)))),
    ("unit = 'mg/dL'", Filter("unit", Op.EQ, ("mg/dL",))),
    ("unit in (g, \"mmol/L\")", Filter("unit", Op.IN, ("g", "mmol/L"))),
    ("date = 2020-01-31", Filter("date", Op.EQ, (date(2020, 1, 31),))),
    ("date between 2020-01-01 and 2020-12-31",
     Filter("date", Op.BETWEEN, (date(2020, 1, 1), date(2020, 12, 31)))),
    ("status != 'entered-in-error'", Filter("status", Op.NE, ("entered-in-error",))),
    ("code != ICD10:C34*", Filter("code", Op.NE, (C34,))),
    ("code in (ICD10:C34, ICD10:C50)", Filter("code", Op.IN, (
        Code("ICD10", "C34"), Code("ICD10", "C50")))),
])
def test_every_clinical_filter(text: str, expected: Filter) -> None:
    assert parse(f"observation[{text}]").root == Has(event("observation", expected))


@pytest.mark.parametrize(("text", "expected"), [
    ("modality = CT", CT),
    ("body_part in (CHEST, 'ABDOMEN')", Filter("body_part", Op.IN, ("CHEST", "ABDOMEN"))),
    ("series_description = '*T1 MPRAGE*'", Filter("series_description", Op.EQ,
                                                  ("*T1 MPRAGE*",))),
    ("study_description != *brain*", Filter("study_description", Op.NE, ("*brain*",))),
    ("protocol = 123", Filter("protocol", Op.EQ, ("123",))),
    ("manufacturer = SIEMENS", Filter("manufacturer", Op.EQ, ("SIEMENS",))),
    ("model = 'Prisma fit'", Filter("model", Op.EQ, ("Prisma fit",))),
    ("field_strength between 1.4 and 1.6", Filter("field_strength", Op.BETWEEN, (1.4, 1.6))),
    ("date >= 2019-06-01", Filter("date", Op.GE, (date(2019, 6, 1),))),
    ("age < 18", Filter("age", Op.LT, (18.0,))),
    ("slice_thickness <= 1.25", Filter("slice_thickness", Op.LE, (1.25,))),
    ("kvp in (100, 120)", Filter("kvp", Op.IN, (100.0, 120.0))),
    ("repetition_time > 2000", Filter("repetition_time", Op.GT, (2000.0,))),
    ("echo_time < 5", Filter("echo_time", Op.LT, (5.0,))),
    ("inversion_time = 900", Filter("inversion_time", Op.EQ, (900.0,))),
    ("flip_angle != 90", Filter("flip_angle", Op.NE, (90.0,))),
    ("convolution_kernel = B30*", Filter("convolution_kernel", Op.EQ, ("B30*",))),
])
def test_every_imaging_filter(text: str, expected: Filter) -> None:
    assert parse(f"imaging[{text}]").root == Has(event("imaging", expected))


def test_every_kind_and_empty_brackets() -> None:
    for kind in EventKind:
        assert parse(f"{kind.value}[]").root == Has(Event(kind))


@pytest.mark.parametrize(("text", "expected"), [
    ("sex = F", Sex(Op.EQ, ("F",))),
    ("sex = female", Sex(Op.EQ, ("F",))),
    ("sex != 'Male'", Sex(Op.NE, ("M",))),
    ("sex in (o, unknown)", Sex(Op.IN, ("O", "U"))),
])
def test_every_subject_test(text: str, expected: Sex) -> None:
    assert parse(text).root == expected


def test_a_string_may_hold_its_quote_doubled_and_any_character() -> None:
    query = parse("imaging[series_description = 'it''s (a) [test], = or and']")
    assert query.root == Has(event("imaging", Filter("series_description", Op.EQ,
                                                     ("it's (a) [test], = or and",))))
    assert query.describe() == "imaging[series_description = 'it''s (a) [test], = or and']"
    # keywords in a value's place are values
    assert parse("condition[status = and]").root == Has(event(
        "condition", Filter("status", Op.EQ, ("and",))))


def test_events_says_which_are_positive() -> None:
    query = parse("imaging[] and not (condition[] or not procedure[] within 1 day of report[])")
    assert [(e.kind.value, positive) for e, positive in query.events()] == [
        ("imaging", True), ("condition", False), ("procedure", True), ("report", True)]


# -- errors: where, and what was expected and found --------------------------------------------
ERRORS = [
    # (query, position, words the message holds)
    ("", 0, ["Expected an event", "found the end of the query"]),
    ("condition", 9, ["Expected '['", "found the end"]),
    ("condition[", 10, ["Expected a field of condition", "found the end"]),
    ("condition[ICD10:C34", 19, ["Expected ',' or ']'", "the end"]),
    ("condition[ICD10:C34] and", 24, ["Expected an event"]),
    ("condition[] or or", 15, ["Expected an event", "'or'"]),
    ("condition[] condition[]", 12, ["Expected 'and', 'or' or the end", "'condition'"]),
    ("condition[])", 11, ["closes no '('"]),
    ("(condition[]", 12, ["Expected ')' to close the '(' at character 0"]),
    ("conditon[]", 0, ["Did you mean 'condition'?"]),
    ("foo", 0, ["Expected an event", "'foo'"]),
    ("'quoted'", 0, ["Expected an event"]),
    ("age > 50", 0, ["'age' (age at scan) exists only inside imaging[...]"]),
    ("imaging[] and age > 50", 14, ["exists only inside imaging"]),
    ("condition[age > 50]", 10, ["'age' (age at scan) is a field of imaging[...] only"]),
    ("modality = CT", 0, ["'modality' is a field of an event", "imaging[modality"]),
    ("condition[modality = CT]", 10, ["'modality' is not a field of condition[...]"]),
    ("imaging[value > 3]", 8, ["'value' is not a field of imaging[...]"]),
    ("imaging[modalty = CT]", 8, ["Unknown field 'modalty'", "Did you mean 'modality'?"]),
    ("imaging[slice_thicknes = 1]", 8, ["Did you mean 'slice_thickness'?"]),
    ("observation[vlaue = 1]", 12, ["Did you mean 'value'?"]),
    ("imaging[zzz = 1]", 8, ["Unknown field 'zzz'", "The fields are modality"]),
    ("imaging[ICD10:C34]", 8, ["imaging[...] has no codes"]),
    ("imaging[(]", 8, ["Expected a field of imaging"]),
    ("imaging[modality CT]", 17, ["Expected an operator", "after 'modality'", "'CT'"]),
    ("imaging[modality < CT]", 17, ["'modality' takes =, != or in, not '<'"]),
    ("observation[unit between a and b]", 17, ["'unit' takes =, != or in"]),
    ("imaging[kvp >= high]", 15, ["'kvp' needs a number", "'high'"]),
    ("imaging[kvp >= 1e999]", 15, ["'kvp' needs a number"]),
    ("imaging[kvp >= ]", 15, ["'kvp' needs a number", "']'"]),
    ("observation[value > abc]", 20, ["'value' needs a number or a code"]),
    ("observation[value > LOINC:1]", 20, ["compares codes with =, != or in only"]),
    ("observation[value between 1 or 2]", 28, ["Expected 'and' in 'value between ...'"]),
    ("observation[value in (1, LOINC:2)]", 25, ["holds numbers or codes, not both"]),
    ("observation[value in 1, 2]", 21, ["Expected '(' after 'value in'"]),
    ("observation[value in (1, 2]", 26, ["Expected ')' to close the list"]),
    ("imaging[date = 2020-02-30]", 15, ["'date' needs a date (YYYY-MM-DD"]),
    ("imaging[date = 20200101]", 15, ["needs a date"]),
    ("imaging[modality = ]", 19, ["'modality' needs a value", "']'"]),
    ("condition[code = C34]", 17, ["'code' needs a code (SYSTEM:CODE"]),
    ("condition[icd1:C34]", 10, ["Unknown code system 'icd1'", "Did you mean 'ICD10'?",
                                 "The systems are"]),
    ("condition[ICD-10:C34]", 10, ["Unknown code system 'ICD-10'", "Did you mean 'ICD10'?"]),
    ("condition[1CD:C34]", 10, ["Unknown code system"]),
    ("condition[ICD10:]", 16, ["Expected a code after 'ICD10:'", "']'"]),
    ("condition[ICD10:C3*4]", 16, ["'*' may only end a code"]),
    ("condition[ICD10:*]", 16, ["Expected a code after 'ICD10:'"]),
    ("condition[ICD10:<<C34*]", 18, ["both '<<'", "and '*'"]),
    ("condition[] within", 18, ["Expected a whole number", "after 'within'"]),
    ("condition[] within 9.5 days before imaging[]", 19, ["Expected a whole number"]),
    ("condition[] within 90 dayz before imaging[]", 22, ["Expected days, weeks, months or "
                                                         "years after 'within 90'", "'dayz'"]),
    ("condition[] within 90 days imaging[]", 27, ["Expected 'before', 'after' or 'of'"]),
    ("condition[] within 1001 years of imaging[]", 19, ["at most 365,000 days"]),
    ("condition[] before", 18, ["Expected an event after 'before'"]),
    ("condition[] within 3 days of sex = F", 29, ["Expected an event after 'within 3 days "
                                                  "of'"]),
    ("condition[] before imaging[] before report[]", 29, ["Expected 'and', 'or'"]),
    ("condition[] of imaging[]", 12, ["Expected 'and', 'or'"]),
    ("sex < F", 4, ["'sex' takes =, != or in", "'<'"]),
    ("sex = X", 6, ["Expected a sex (M, F, O, U"]),
    ("sex in (M, X)", 11, ["Expected a sex"]),
    ("sex in M", 7, ["Expected '(' after 'sex in'"]),
    ("imaging[modality = 'CT]", 19, ["A string that is not closed"]),
    ("imaging[modality = CT] & condition[]", 23, ["Unexpected character '&'"]),
    ("condition[ICD10:C34}", 19, ["Unexpected character '}'"]),
]


@pytest.mark.parametrize(("text", "position", "words"), ERRORS, ids=[e[0] or "(empty)"
                                                                     for e in ERRORS])
def test_every_error_points_at_its_token(text: str, position: int, words: list[str]) -> None:
    with pytest.raises(CohortQueryError) as info:
        parse(text)
    error = info.value
    assert isinstance(error, InvalidInputError) and error.status == 422
    assert error.position == position, (error.position, error.message)
    for word in words:
        assert word in error.message, error.message
    assert "\n" not in error.message
    query, caret = error.pointer().split("\n")
    assert query == text and caret == " " * position + "^"


def test_the_pointer_keeps_the_caret_under_the_token_across_tabs_and_newlines() -> None:
    with pytest.raises(CohortQueryError) as info:
        parse("condition[]\n\tand\tbogus")
    assert info.value.position == 17
    assert info.value.pointer() == "condition[]  and bogus\n" + " " * 17 + "^"


def test_limits_on_length_and_depth() -> None:
    with pytest.raises(CohortQueryError) as info:
        parse("condition[] or " * (MAX_LENGTH // 15) + "condition[]")
    assert info.value.position == MAX_LENGTH and "at most" in info.value.message
    deep = "(" * (MAX_DEPTH + 1) + "condition[]" + ")" * (MAX_DEPTH + 1)
    with pytest.raises(CohortQueryError) as info:
        parse(deep)
    assert info.value.position == MAX_DEPTH and "deeper" in info.value.message
    assert parse("not " * MAX_DEPTH + "condition[]").describe().count("not") == MAX_DEPTH


def test_a_long_token_is_shortened_in_the_message() -> None:
    with pytest.raises(CohortQueryError) as info:
        parse("x" * 500)
    assert len(info.value.message) < 300 and "..." in info.value.message


def test_constructed_trees_are_valid() -> None:
    with pytest.raises(ValueError):
        Timing(Direction.OF)
    with pytest.raises(ValueError):
        Filter("value", Op.BETWEEN, (1.0,))
    with pytest.raises(ValueError):
        And((Has(event("report")),))
    with pytest.raises(ValueError):
        Or((Has(event("report")), Or((Has(event("report")), Has(event("condition"))))))
    with pytest.raises(ValueError):
        Code("NOPE", "1")
    with pytest.raises(ValueError):
        Sex(Op.LT, ("F",))
    assert all_of([Has(event("report"))]) == Has(event("report"))


# -- describe() round trips ------------------------------------------------------------------
_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_CODE_TEXT = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,8}", fullmatch=True) | _TEXT.filter(
    lambda t: t != "")
_CODE = st.builds(Code, st.sampled_from(SYSTEMS), _CODE_TEXT, st.sampled_from(list(CodeMatch)))
_NUMBER = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-10**6, 10**6).map(
    float)
_DATE = st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31))


def _values(field_type: FieldType, op: Op) -> st.SearchStrategy[Value]:
    if field_type is FieldType.CODE:
        return _CODE
    if field_type is FieldType.VALUE:
        return _NUMBER | _CODE if op in (Op.EQ, Op.NE, Op.IN) else _NUMBER
    if field_type is FieldType.NUMBER:
        return _NUMBER
    if field_type is FieldType.DATE:
        return _DATE
    return _TEXT


@st.composite
def _filters(draw: st.DrawFn, kind: EventKind) -> Filter:
    fields = IMAGING_FIELDS if kind is EventKind.IMAGING else CLINICAL_FIELDS
    name = draw(st.sampled_from(sorted(fields)))
    op = draw(st.sampled_from(sorted(OPS[fields[name]])))
    values = _values(fields[name], op)
    if fields[name] is FieldType.VALUE and op is Op.IN:  # numbers or codes, not both
        values = draw(st.sampled_from([_NUMBER, _CODE]))
    count = 2 if op is Op.BETWEEN else draw(st.integers(1, 3)) if op is Op.IN else 1
    return Filter(name, op, tuple(draw(values) for _ in range(count)))


@st.composite
def _events(draw: st.DrawFn) -> Event:
    kind = draw(st.sampled_from(list(EventKind)))
    return Event(kind, tuple(draw(st.lists(_filters(kind), max_size=3))))


_TIMINGS = st.one_of(
    st.builds(Timing, st.sampled_from([Direction.BEFORE, Direction.AFTER])),
    st.builds(Timing, st.sampled_from(list(Direction)), st.integers(0, 100),
              st.sampled_from(list(Unit))),
)
_LEAVES: st.SearchStrategy[Expr] = st.one_of(
    st.builds(Has, _events()),
    st.builds(Related, _events(), _TIMINGS, _events()),
    st.builds(Sex, st.sampled_from([Op.EQ, Op.NE]), st.tuples(st.sampled_from("MFOU"))),
    st.builds(Sex, st.just(Op.IN), st.lists(st.sampled_from("MFOU"), min_size=1,
                                            max_size=4).map(tuple)),
)
_EXPRS: st.SearchStrategy[Expr] = st.recursive(_LEAVES, lambda inner: st.one_of(
    st.builds(Not, inner),
    st.lists(inner, min_size=2, max_size=3).map(all_of),
    st.lists(inner, min_size=2, max_size=3).map(any_of),
), max_leaves=8)


@settings(max_examples=400, deadline=None)
@given(_EXPRS)
def test_describe_parses_back_to_an_equal_tree(root: Expr) -> None:
    query = Query(root)
    text = query.describe()
    assert parse(text) == query, text
    assert parse(text).describe() == text
