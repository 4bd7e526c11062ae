"""``domain.clinical_mapping``: what a mapping must say, and how one row becomes a fact."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from imagebank.domain.clinical import FactKind, PatientRef
from imagebank.domain.clinical_mapping import (
    MappingError,
    RowError,
    TableMapping,
    mapping_problems,
)

NHS = "9434765919"  # the NHS Data Dictionary's example number (check digit 9)
COLUMNS = {"patient": "id", "code": "code", "value": "result", "unit": "units",
           "date": "when"}
FIXED = {"issuer": "NHS", "kind": "observation", "system": "LOINC"}


def _mapping(**changes: object) -> TableMapping:
    args: dict[str, object] = {"columns": COLUMNS, "fixed": FIXED}
    args.update(changes)
    return TableMapping(**args)  # type: ignore[arg-type]


def test_a_minimal_mapping_reads_a_row() -> None:
    row = _mapping().map_row({"patient": NHS, "code": "4548-4", "value": " 5.4 ",
                              "unit": "%", "date": "2020-02-03"})
    assert row.patient == PatientRef("NHS", NHS)
    fact = row.fact
    assert (fact.kind, fact.system, fact.code, fact.value_number, fact.value_text, fact.unit) == (
        FactKind.OBSERVATION, "LOINC", "4548-4", 5.4, "", "%")
    assert fact.start == datetime(2020, 2, 3, tzinfo=UTC) and fact.end is None
    assert fact.source_id.startswith("table:sha256:") and len(fact.source_id) == 13 + 64
    assert row.birth_date == "" and row.sex == ""


@pytest.mark.parametrize(("cell", "number", "text"), [
    ("5", 5.0, ""), ("-1.5e3", -1500.0, ""), (".5", 0.5, ""), ("high", None, "high"),
    ("5,4", None, "5,4"), ("nan", None, "nan"), (7, 7.0, ""), (Decimal("2.50"), 2.5, ""),
    (True, None, "true"), (float("nan"), None, ""), ("", None, ""),
])
def test_a_value_is_a_number_when_it_reads_as_one(cell: object, number: float | None,
                                                   text: str) -> None:
    fact = _mapping().map_row({"patient": NHS, "code": "c", "value": cell, "unit": "",
                               "date": ""}).fact  # type: ignore[dict-item]
    assert (fact.value_number, fact.value_text) == (number, text)


@pytest.mark.parametrize(("cell", "expected"), [
    ("2020-02-03T10:20:30", datetime(2020, 2, 3, 10, 20, 30, tzinfo=UTC)),
    ("2020-02-03 10:20", datetime(2020, 2, 3, 10, 20, tzinfo=UTC)),
    ("2020-02-03T10:20:30+01:00", datetime(2020, 2, 3, 9, 20, 30, tzinfo=UTC)),
    ("2020-02-03T10:20:30Z", datetime(2020, 2, 3, 10, 20, 30, tzinfo=UTC)),
    ("20200203", datetime(2020, 2, 3, tzinfo=UTC)),
    ("2020-05", datetime(2020, 5, 1, tzinfo=UTC)),
    ("2020", datetime(2020, 1, 1, tzinfo=UTC)),
    (date(2020, 2, 3), datetime(2020, 2, 3, tzinfo=UTC)),
    (datetime(2020, 2, 3, 4, 5), datetime(2020, 2, 3, 4, 5, tzinfo=UTC)),
])
def test_iso_dates_by_default(cell: object, expected: datetime) -> None:
    fact = _mapping().map_row({"patient": NHS, "code": "c", "value": "", "unit": "",
                               "date": cell}).fact  # type: ignore[dict-item]
    assert fact.start == expected


@pytest.mark.parametrize("cell", ["03/02/2020", "2020-02-30", "2020-13", "yesterday", "202"])
def test_a_date_that_is_not_iso_is_a_bad_date_naming_the_column_not_the_value(cell: str
                                                                            ) -> None:
    with pytest.raises(RowError) as caught:
        _mapping().map_row({"patient": NHS, "code": "c", "value": "", "unit": "",
                            "date": cell})
    assert caught.value.reason == "bad_date"
    assert "column when" in caught.value.message and "date_formats.date" in caught.value.message
    assert cell not in caught.value.message


def test_a_strptime_format_reads_dates_and_birth_dates() -> None:
    mapping = _mapping(columns={**COLUMNS, "end_date": "until", "birth_date": "dob",
                                "sex": "sex"},
                       date_formats={"date": "%d/%m/%Y %H:%M", "birth_date": "%d/%m/%Y"})
    row = mapping.map_row({"patient": NHS, "code": "c", "value": "", "unit": "",
                           "date": "03/02/2020 10:20", "end_date": "2020-02-04",
                           "birth_date": "01/12/1950", "sex": "female"})
    assert row.fact.start == datetime(2020, 2, 3, 10, 20, tzinfo=UTC)
    assert row.fact.end == datetime(2020, 2, 4, tzinfo=UTC)
    assert (row.birth_date, row.sex) == ("1950-12-01", "F")
    with pytest.raises(RowError, match="column dob is not a date as %d/%m/%Y"):
        mapping.map_row({"patient": NHS, "code": "c", "date": "03/02/2020 10:20",
                         "birth_date": "1950-12-01"})


def test_issuers_nhs_numbers_and_local_identifiers() -> None:
    by_column = _mapping(columns={**COLUMNS, "issuer": "system"},
                         fixed={"kind": "condition", "system": "ICD10"})
    cells = {"code": "C34", "date": "2020-01-01"}
    assert by_column.map_row({**cells, "patient": "943 476 5919", "issuer": "nhs"}
                             ).patient == PatientRef("NHS", NHS)
    assert by_column.map_row({**cells, "patient": NHS,
                              "issuer": "https://fhir.nhs.uk/Id/nhs-number"}
                             ).patient == PatientRef("NHS", NHS)
    assert by_column.map_row({**cells, "patient": "MRN1", "issuer": "RR8"}
                             ).patient == PatientRef("RR8", "MRN1")
    # A Parquet column of whole numbers holds the NHS number as a number.
    assert by_column.map_row({**cells, "patient": int(NHS), "issuer": "NHS"}
                             ).patient == PatientRef("NHS", NHS)
    for bad in ("9434765918", "943476591", "94347659190"):
        with pytest.raises(RowError) as caught:
            by_column.map_row({**cells, "patient": bad, "issuer": "NHS"})
        assert caught.value.reason == "bad_nhs_number" and bad not in caught.value.message
    with pytest.raises(RowError) as caught:
        by_column.map_row({**cells, "patient": "MRN1", "issuer": ""})
    assert (caught.value.reason, caught.value.message) == (
        "missing", "column system is empty; expected the identifier's issuer")


def test_kind_code_and_system_from_columns() -> None:
    mapping = _mapping(columns={**COLUMNS, "kind": "type", "system": "scheme",
                                "display": "term", "status": "state"},
                       fixed={"issuer": "NHS"})
    cells = {"patient": NHS, "code": "254637007", "date": "2020-01-01", "display": "NSCLC",
             "status": "active"}
    fact = mapping.map_row({**cells, "kind": "Condition", "system": "snomed"}).fact
    assert (fact.kind, fact.system, fact.display, fact.status) == (
        FactKind.CONDITION, "SNOMED", "NSCLC", "active")
    assert mapping.map_row({**cells, "kind": "condition", "system": "http://snomed.info/sct/"}
                           ).fact.system == "SNOMED"
    assert mapping.map_row({**cells, "kind": "condition", "system": "urn:oid:1.2.3"}
                           ).fact.system == "urn:oid:1.2.3"
    with pytest.raises(RowError, match="column type is not a fact kind") as caught:
        mapping.map_row({**cells, "kind": "diagnosis", "system": "SNOMED"})
    assert caught.value.reason == "invalid"
    with pytest.raises(RowError, match="column code is empty; expected a code") as caught:
        mapping.map_row({**cells, "kind": "condition", "system": "SNOMED", "code": " "})
    assert caught.value.reason == "missing"


def test_source_ids_row_id_or_a_hash_of_every_value() -> None:
    with_id = _mapping(columns={**COLUMNS, "row_id": "rid"}, source="gp-labs")
    cells = {"patient": NHS, "code": "c", "value": "1", "unit": "", "date": "2020-01-01"}
    assert with_id.map_row({**cells, "row_id": "r-17"}).fact.source_id == "table:gp-labs/r-17"
    plain = _mapping()
    first = plain.map_row(cells).fact.source_id
    assert plain.map_row(dict(cells)).fact.source_id == first  # the same statement: one fact
    for field, other in (("value", "2"), ("code", "d"), ("date", "2020-01-02"),
                         ("unit", "mg")):
        assert plain.map_row({**cells, field: other}).fact.source_id != first, field
    # A row ID cell left empty falls back to the hash.
    assert with_id.map_row({**cells, "row_id": ""}).fact.source_id == first


def test_empty_values_mean_no_value() -> None:
    mapping = _mapping(empty_values=frozenset({"", "NULL", "NA"}))
    fact = mapping.map_row({"patient": NHS, "code": "c", "value": "NA", "unit": "NULL",
                            "date": "NULL"}).fact
    assert (fact.value_number, fact.value_text, fact.unit, fact.start) == (None, "", "", None)


def test_sex_values() -> None:
    mapping = _mapping(columns={**COLUMNS, "sex": "sex"})
    cells = {"patient": NHS, "code": "c", "date": ""}
    got = [mapping.map_row({**cells, "sex": s}).sex for s in ("M", "male", "f", "O", "U",
                                                              "unknown", "")]
    assert got == ["M", "M", "F", "O", "", "", ""]
    with pytest.raises(RowError, match="column sex is not M, F, O, U"):
        mapping.map_row({**cells, "sex": "X"})


def test_every_problem_of_a_mapping_at_once() -> None:
    problems = dict(mapping_problems(
        {"patient": "id", "cod": "code", "unit": " "},
        {"patient": "x", "unit": "mg", "kind": "diagnosis", "system": "FOO", "issuer": "NHS"},
        {"end_date": "%d", "date": "no directive"},
        delimiter=";;",
    ))
    assert set(problems) == {"columns.cod", "columns.unit", "fixed.patient", "fixed.unit",
                             "fixed.kind", "fixed.system", "columns.code", "columns.date",
                             "date_formats.end_date", "date_formats.date", "delimiter"}
    assert problems["fixed.patient"].startswith("cannot be a fixed value")
    assert problems["columns.code"] == "missing; expected it under columns or fixed"
    with pytest.raises(MappingError) as caught:
        TableMapping({"patient": "id"}, {"kind": "nothing"})
    assert caught.value.problems == (
        "fixed.kind: not a fact kind; expected one of: condition, observation, procedure, "
        "medication, encounter, report, imaging_study",
        "columns.issuer: missing; expected it under columns or fixed",
        "columns.code: missing; expected it under columns or fixed",
        "columns.system: missing; expected it under columns or fixed",
        "columns.date: missing; expected it under columns")
    assert str(caught.value).splitlines() == list(caught.value.problems)


def test_a_date_format_must_read_back() -> None:
    assert not mapping_problems({**COLUMNS, **{"issuer": "i", "kind": "k", "system": "s"}},
                                {}, {"date": "%Y-%m-%dT%H:%M:%S%z"})
    [(path, what)] = mapping_problems({**COLUMNS, **{"issuer": "i", "kind": "k",
                                                     "system": "s"}}, {}, {"date": "%Q"})
    assert path == "date_formats.date" and "strptime" in what
