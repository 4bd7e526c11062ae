"""Clinical tables in (issue 6, decision 0024): CSV and Parquet files read through a
``domain.clinical_mapping.TableMapping`` into the items every clinical reader yields
(``ingest.clinical_items``).

- **CSV**: UTF-8 with or without a byte order mark; the first row is the header; the delimiter
  is the mapping's, else the one ``csv.Sniffer`` finds in the first 16 KB (``,``, ``;``, tab or
  ``|``), else a comma. Read a row at a time: a file of any size streams.
- **Parquet** (pyarrow): read in record batches of ``BATCH_ROWS`` rows, only the mapped
  columns; typed cells keep their type (a number is a number, a timestamp a time; a timestamp
  without a zone is UTC).
- A folder stands for its ``*.csv``, ``*.tsv`` and ``*.parquet`` files (recursively, in name
  order). A ``.parquet`` file is Parquet, anything else CSV.

Patients may come in any order: a patient's ``ClinicalRecord`` (its identifier, and the birth
date and sex of its first row when they are mapped) is yielded the first time a row names
them, before that row's ``PatientFact``. Only the set of patients seen is held.

Problems (``ImportProblem``): a row that gives no fact (``missing``, ``bad_nhs_number``,
``bad_date``, ``invalid``) is labelled ``<path>:<line>`` for CSV (the line the row starts on;
the header is line 1) and ``<path> row <n>`` for Parquet (the first row is 1); the message
names the column, never the cell. A file that cannot be read at all is ``unreadable``, one
without a mapped column ``bad_header``; the other files and rows are read.
"""

from __future__ import annotations

import codecs
import csv
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from imagebank.domain.clinical import ClinicalRecord
from imagebank.domain.clinical_mapping import Cell, RowError, TableMapping
from imagebank.ingest.clinical_items import ClinicalItem, ImportProblem, PatientFact

__all__ = ["BATCH_ROWS", "TabularReader", "table_files"]

#: Parquet rows read at a time.
BATCH_ROWS = 8192
#: The start of a CSV file the delimiter is sniffed from.
SNIFF_BYTES = 16_384
SUFFIXES = (".csv", ".tsv", ".parquet")

_Rows = Iterator[tuple[str, dict[str, Cell]] | ImportProblem]


def table_files(paths: Iterable[str | Path]) -> list[Path]:
    """The files of the inputs: a file as given, a folder's tables in name order."""
    files: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in SUFFIXES
                                and p.is_file()))
        else:
            files.append(path)
    return files


class TabularReader:
    """Reads CSV and Parquet tables through one mapping (see the module's docstring). One
    reader for one import: ``resources`` counts the rows read (as ``row``), ``facts`` the facts
    by kind, ``problems`` the problems by reason; ``skipped`` stays empty."""

    def __init__(self, mapping: TableMapping) -> None:
        self.mapping = mapping
        self.resources: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.facts: Counter[str] = Counter()
        self.problems: Counter[str] = Counter()
        self._seen: set[str] = set()
        # Each mapped column once, with the fields it gives (two fields may share a column).
        self._wanted: dict[str, list[str]] = {}
        for name, column in mapping.columns.items():
            self._wanted.setdefault(column, []).append(name)

    def read(self, paths: Iterable[str | Path]) -> Iterator[ClinicalItem]:
        """Streams records (the first time a patient is seen), facts and problems."""
        for path in table_files(paths):
            rows = self._parquet(path) if path.suffix.lower() == ".parquet" else self._csv(path)
            for item in rows:
                if isinstance(item, ImportProblem):
                    self.problems[item.reason] += 1
                    yield item
                    continue
                label, cells = item
                self.resources["row"] += 1
                try:
                    row = self.mapping.map_row(cells)
                except RowError as exc:
                    yield self._problem(label, exc.reason, exc.message)
                    continue
                key = f"{row.patient.issuer}|{row.patient.value}"
                if key not in self._seen:
                    self._seen.add(key)
                    yield ClinicalRecord(key, (row.patient,), row.birth_date, row.sex)
                self.facts[row.fact.kind] += 1
                yield PatientFact(key, row.fact)

    def _problem(self, label: str, reason: str, message: str) -> ImportProblem:
        self.problems[reason] += 1
        return ImportProblem(label, reason, message)

    def _header(self, names: list[str]) -> list[tuple[int, list[str]]] | str:
        """Where each mapped column is, or what is wrong with the header."""
        where: dict[str, int] = {}
        twice: list[str] = []
        for index, name in enumerate(n.strip() for n in names):
            if name in self._wanted:
                if name in where:
                    twice.append(name)
                where.setdefault(name, index)
        missing = [c for c in self._wanted if c not in where]
        if missing:
            return (f"the mapped column{'s' if len(missing) > 1 else ''} "
                    f"{', '.join(missing)} {'are' if len(missing) > 1 else 'is'} not in the "
                    "file; the file is not read")
        if twice:
            return (f"the mapped column {twice[0]} is in the header twice; the file is not "
                    "read")
        return [(where[column], fields) for column, fields in self._wanted.items()]

    # -- CSV
    def _csv(self, path: Path) -> _Rows:
        try:
            stream = path.open("rb")
        except OSError as exc:
            yield ImportProblem(str(path), "unreadable", f"cannot be read ({type(exc).__name__})")
            return
        with stream:
            delimiter = self.mapping.delimiter
            if delimiter is None:
                delimiter = _sniff(stream.read(SNIFF_BYTES).decode("utf-8-sig", "replace"))
                stream.seek(0)
            not_utf8: list[int] = []  # lines of the current row that are not UTF-8
            reader = csv.reader(_lines(stream, not_utf8), delimiter=delimiter)
            try:
                header = next(reader, None)
            except csv.Error as exc:
                yield ImportProblem(f"{path}:1", "bad_header", _csv_error(exc, "the header"))
                return
            if header is None:
                yield ImportProblem(str(path), "bad_header", "empty: no header row")
                return
            if not_utf8:
                yield ImportProblem(f"{path}:1", "bad_header", "the header is not UTF-8 text; "
                                    "the file is not read")
                return
            places = self._header(header)
            if isinstance(places, str):
                yield ImportProblem(str(path), "bad_header", places)
                return
            needed = max(index for index, _ in places) + 1
            line = reader.line_num
            while True:
                start = line + 1
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    cells = None
                    problem = _csv_error(exc, "the row")
                line = reader.line_num
                if not_utf8:
                    problem = "the row is not UTF-8 text"
                    not_utf8.clear()
                elif cells is None:
                    pass
                elif not cells:  # a blank line
                    continue
                elif len(cells) < needed:
                    problem = (f"the row has {len(cells)} cells, fewer than the {needed} the "
                               "mapped columns need")
                else:
                    yield f"{path}:{start}", {f: cells[i] for i, fields in places for f in fields}
                    continue
                yield ImportProblem(f"{path}:{start}", "invalid", problem)

    # -- Parquet
    def _parquet(self, path: Path) -> _Rows:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.ParquetFile(path)
        except (OSError, pa.ArrowException) as exc:
            yield ImportProblem(str(path), "unreadable",
                                f"cannot be read as Parquet ({type(exc).__name__})")
            return
        with table:
            places = self._header(list(table.schema_arrow.names))
            if isinstance(places, str):
                yield ImportProblem(str(path), "bad_header", places)
                return
            columns = list(self._wanted)
            number = 0
            try:
                for batch in table.iter_batches(batch_size=BATCH_ROWS, columns=columns):
                    values: list[list[Any]] = [batch.column(c).to_pylist() for c in columns]
                    fields = [self._wanted[c] for c in columns]
                    for row in zip(*values, strict=True):
                        number += 1
                        yield f"{path} row {number}", {
                            f: cell for cell, names in zip(row, fields, strict=True)
                            for f in names}
            except (OSError, pa.ArrowException) as exc:
                yield ImportProblem(f"{path} row {number + 1}", "unreadable",
                                    f"cannot be read as Parquet ({type(exc).__name__}); the "
                                    "rest of the file is not read")


def _lines(stream: IO[bytes], not_utf8: list[int]) -> Iterator[str]:
    """The file's lines as text (without a byte order mark), each decoded on its own so a line
    that is not UTF-8 spoils only its row: it is read with replacement characters and its
    number noted in ``not_utf8``."""
    for number, raw in enumerate(stream, 1):
        line = raw.removeprefix(codecs.BOM_UTF8) if number == 1 else raw
        try:
            yield line.decode()
        except UnicodeDecodeError:
            not_utf8.append(number)
            yield line.decode(errors="replace")


def _sniff(sample: str) -> str:
    """The delimiter of a CSV sample (its complete lines), a comma when unsure."""
    if "\n" in sample:
        sample = sample[: sample.rindex("\n")]
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _csv_error(exc: Exception, what: str) -> str:
    return f"{what} is not CSV ({type(exc).__name__})"  # csv's messages may quote the data
