"""``ingest.tabular``: CSV and Parquet tables read through a mapping, streamed, with problems
labelled by file and line (or row) and never by value. Synthetic data only."""

from __future__ import annotations

import csv
import itertools
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from imagebank.domain.clinical import ClinicalRecord, FactKind, PatientRef
from imagebank.domain.clinical_mapping import TableMapping
from imagebank.ingest.clinical_items import ClinicalItem, ImportProblem, PatientFact
from imagebank.ingest.tabular import TabularReader
from testkit import nhs_numbers

HEADER = ["result_id", "nhs_number", "test", "result", "units", "taken", "dob", "sex"]
LABS = TableMapping(
    columns={"row_id": "result_id", "patient": "nhs_number", "code": "test", "value": "result",
             "unit": "units", "date": "taken", "birth_date": "dob", "sex": "sex"},
    fixed={"issuer": "NHS", "kind": "observation", "system": "http://loinc.org"},
    source="labs",
)


def _rows(count: int, patients: list[str]) -> list[list[str]]:
    """Synthetic lab results, patients interleaved (not grouped)."""
    return [[f"r{i}", patients[i % len(patients)], "4548-4" if i % 2 else "2345-7",
             f"{5 + (i % 30) / 10:.1f}" if i % 5 else "see report", "%" if i % 2 else "mmol/L",
             f"2020-{1 + i % 12:02d}-{1 + i % 28:02d}T10:{i % 60:02d}:00", "1950-06-01",
             "F" if patients.index(patients[i % len(patients)]) % 2 else "M"]
            for i in range(count)]


def _write_csv(path: Path, rows: list[list[str]], *, delimiter: str = ",",
               encoding: str = "utf-8") -> Path:
    with path.open("w", encoding=encoding, newline="") as out:
        writer = csv.writer(out, delimiter=delimiter)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return path


def _write_parquet(path: Path, rows: list[list[str]], *, row_group_size: int = 1000) -> Path:
    """The same rows as typed columns: numbers, UTC timestamps, dates, nulls for text."""
    def number(text: str) -> float | None:
        try:
            return float(text)
        except ValueError:
            return None

    table = pa.table({
        "result_id": [r[0] for r in rows],
        "nhs_number": pa.array([int(r[1]) for r in rows], pa.int64()),
        "test": [r[2] for r in rows],
        "result": [r[3] for r in rows],
        "units": [r[4] for r in rows],
        "taken": pa.array([datetime.fromisoformat(r[5]).replace(tzinfo=UTC) for r in rows],
                          pa.timestamp("s", tz="UTC")),
        "dob": pa.array([datetime.fromisoformat(r[6]).date() for r in rows], pa.date32()),
        "sex": [r[7] for r in rows],
        "ignored": [number(r[3]) for r in rows],
    })
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def _facts(items: list[ClinicalItem]) -> list[PatientFact]:
    return [i for i in items if isinstance(i, PatientFact)]


def test_csv_and_parquet_give_the_same_records_and_facts(tmp_path: Path) -> None:
    patients = nhs_numbers(7)
    rows = _rows(300, patients)
    from_csv = list(TabularReader(LABS).read([_write_csv(tmp_path / "labs.csv", rows)]))
    reader = TabularReader(LABS)
    from_parquet = list(reader.read([_write_parquet(tmp_path / "labs.parquet", rows)]))
    assert from_csv == from_parquet
    assert reader.resources == {"row": 300} and reader.facts == {"observation": 300}
    assert not reader.problems
    records = [i for i in from_csv if isinstance(i, ClinicalRecord)]
    assert [r.identifiers for r in records] == [(PatientRef("NHS", p),) for p in patients]
    assert {r.birth_date for r in records} == {"1950-06-01"}
    assert [r.sex for r in records] == ["M", "F", "M", "F", "M", "F", "M"]
    # Each patient's record comes before that patient's first fact, once.
    seen: set[str] = set()
    for item in from_csv:
        if isinstance(item, ClinicalRecord):
            assert item.source_id not in seen
            seen.add(item.source_id)
        else:
            assert isinstance(item, PatientFact) and item.patient in seen
    facts = _facts(from_csv)
    first = facts[0].fact
    assert (first.kind, first.system, first.code, first.value_number, first.unit) == (
        FactKind.OBSERVATION, "LOINC", "2345-7", None, "mmol/L")
    assert first.value_text == "see report" and first.source_id == "table:labs/r0"
    assert facts[1].fact.value_number == 5.1 and facts[1].fact.start == datetime(
        2020, 2, 2, 10, 1, tzinfo=UTC)


def test_a_bom_and_semicolons_are_read(tmp_path: Path) -> None:
    patients = nhs_numbers(2)
    rows = _rows(20, patients)
    path = _write_csv(tmp_path / "export.csv", rows, delimiter=";", encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbfresult_id;")
    reader = TabularReader(LABS)
    items = list(reader.read([path]))
    assert not reader.problems and len(_facts(items)) == 20
    assert [f.fact.source_id for f in _facts(items)] == [f"table:labs/r{i}" for i in range(20)]
    # Tabs, and a delimiter the mapping names (the sniffer is not asked).
    tabbed = _write_csv(tmp_path / "export.tsv", rows, delimiter="\t")
    assert _facts(list(TabularReader(LABS).read([tabbed]))) == _facts(items)
    piped = _write_csv(tmp_path / "export.txt", rows, delimiter="|")
    named = TableMapping(LABS.columns, LABS.fixed, source="labs", delimiter="|")
    assert _facts(list(TabularReader(named).read([piped]))) == _facts(items)


def test_bad_rows_are_problems_by_line_without_values_and_the_rest_is_read(
        tmp_path: Path) -> None:
    good = nhs_numbers(1)[0]
    bad_nhs = good[:9] + str((int(good[9]) + 1) % 10)
    path = tmp_path / "labs.csv"
    path.write_text(
        ",".join(HEADER) + "\n"
        f"r1,{good},4548-4,5.4,%,2020-01-01,1950-01-01,F\n"              # line 2
        f"r2,{bad_nhs},4548-4,5.5,%,2020-01-02,1950-01-01,F\n"           # line 3
        f"r3,{good},4548-4,5.6,%,31/01/2020,1950-01-01,F\n"              # line 4
        f'r4,{good},,"a result\nover two lines",%,2020-01-04,,\n'        # lines 5-6
        "\n"                                                             # line 7
        f"r5,{good},4548-4\n"                                            # line 8
        f"r6,,4548-4,5.9,%,2020-01-06,,\n"                               # line 9
        f"r7,{good},4548-4,6.0,%,2020-01-07,,Q\n"                        # line 10
        f"r8,{good},4548-4,6.1,%,2020-01-08,,\n"                         # line 11
    )
    reader = TabularReader(LABS)
    items = list(reader.read([path]))
    problems = [(p.label, p.reason) for p in items if isinstance(p, ImportProblem)]
    assert problems == [(f"{path}:3", "bad_nhs_number"), (f"{path}:4", "bad_date"),
                        (f"{path}:5", "missing"), (f"{path}:8", "invalid"),
                        (f"{path}:9", "missing"), (f"{path}:10", "invalid")]
    assert reader.problems == {"bad_nhs_number": 1, "bad_date": 1, "missing": 2, "invalid": 2}
    assert [f.fact.source_id for f in _facts(items)] == ["table:labs/r1", "table:labs/r8"]
    for problem in items:
        if isinstance(problem, ImportProblem):
            text = problem.label + problem.message
            assert good not in text and bad_nhs not in text and "31/01" not in text
    messages = {p.reason: p.message for p in items if isinstance(p, ImportProblem)}
    assert messages["bad_nhs_number"] == ("column nhs_number is not an NHS number (ten digits "
                                          "with a valid check digit)")


def test_files_that_cannot_be_read_are_problems_and_the_others_are_read(
        tmp_path: Path) -> None:
    rows = _rows(5, nhs_numbers(1))
    missing_column = tmp_path / "a.csv"
    missing_column.write_text("result_id,nhs_number,test\nr1,9434765919,4548-4\n")
    latin = tmp_path / "b.csv"  # Latin-1 in one row (a result's text), then a good row
    good_row = ",".join(rows[0]).encode()
    latin.write_bytes(",".join(HEADER).encode() + b"\n" + good_row.replace(b"mmol", b"\xb5mol")
                      + b"\n" + good_row + b"\n")
    empty = tmp_path / "c.csv"
    empty.write_text("")
    not_parquet = tmp_path / "d.parquet"
    not_parquet.write_text("PAR1 this is not a Parquet file")
    good = _write_csv(tmp_path / "e.csv", rows)
    reader = TabularReader(LABS)
    items = list(reader.read([tmp_path]))  # a folder: its tables in name order
    problems = [(p.label, p.reason, p.message) for p in items if isinstance(p, ImportProblem)]
    assert problems == [
        (str(missing_column), "bad_header", "the mapped columns result, units, taken, dob, sex "
         "are not in the file; the file is not read"),
        (f"{latin}:2", "invalid", "the row is not UTF-8 text"),
        (str(empty), "bad_header", "empty: no header row"),
        (str(not_parquet), "unreadable", "cannot be read as Parquet (ArrowInvalid)"),
    ]
    assert len(_facts(items)) == 6 and reader.resources == {"row": 6}
    del good


def test_patients_in_any_order_get_one_record_each(tmp_path: Path) -> None:
    patients = nhs_numbers(3)
    rows = _rows(9, patients)[::-1]  # r8 first
    items = list(TabularReader(LABS).read([_write_csv(tmp_path / "x.csv", rows)]))
    kinds = ["record" if isinstance(i, ClinicalRecord) else "fact" for i in items]
    assert kinds == ["record", "fact", "record", "fact", "record"] + ["fact"] * 7


@pytest.mark.slow
def test_a_large_csv_streams(tmp_path: Path) -> None:
    """200,000 rows (about 11 MB): reading the first 20,000 holds well under what the file
    (or its facts) would take in memory, and every row is read."""
    patients = nhs_numbers(500)
    path = tmp_path / "big.csv"
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER)
        for i in range(200_000):
            writer.writerow([f"r{i}", patients[(i * 7919) % 500], "4548-4", f"{i % 97}.5", "%",
                             f"2020-{1 + i % 12:02d}-{1 + i % 28:02d}", "1950-06-01", "M"])
    size = path.stat().st_size
    assert size > 11_000_000
    reader = TabularReader(LABS)
    items = reader.read([path])
    tracemalloc.start()
    try:
        head = sum(1 for _ in itertools.islice(items, 20_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert head == 20_000
    assert peak < 4_000_000, peak  # the file is 11 MB; 20,000 facts alone would be ~10 MB
    rest = sum(1 for item in items if isinstance(item, PatientFact))
    assert reader.resources["row"] == 200_000 and rest + 20_000 - 500 == 200_000


def test_parquet_is_read_in_record_batches(tmp_path: Path) -> None:
    rows = _rows(60_000, nhs_numbers(50))
    path = _write_parquet(tmp_path / "big.parquet", rows, row_group_size=10_000)
    reader = TabularReader(LABS)
    items = reader.read([path])
    tracemalloc.start()
    try:
        head = sum(1 for _ in itertools.islice(items, 5_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert head == 5_000
    assert peak < 8_000_000, peak  # one batch of 8,192 rows as Python objects, not 60,000
    assert sum(1 for _ in items) + head == 60_000 + 50
    assert reader.resources["row"] == 60_000


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_null_and_empty_cells(tmp_path: Path, suffix: str) -> None:
    nhs = nhs_numbers(1)[0]
    mapping = TableMapping({"patient": "id", "code": "code", "value": "value", "unit": "unit",
                            "date": "date"}, {"issuer": "NHS", "kind": "condition",
                                              "system": "ICD10"})
    path = tmp_path / f"t{suffix}"
    if suffix == ".csv":
        path.write_text(f"id,code,value,unit,date\n{nhs},C34,,,\n")
    else:
        pq.write_table(pa.table({"id": [nhs], "code": ["C34"],
                                 "value": pa.array([None], pa.float64()),
                                 "unit": pa.array([None], pa.string()),
                                 "date": pa.array([None], pa.timestamp("ms"))}), path)
    [record, fact] = list(TabularReader(mapping).read([path]))
    assert isinstance(record, ClinicalRecord) and isinstance(fact, PatientFact)
    assert (fact.fact.value_number, fact.fact.value_text, fact.fact.unit, fact.fact.start) == (
        None, "", "", None)
    assert fact.fact.source_id.startswith("table:sha256:")
