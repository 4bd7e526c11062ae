"""Clinical tables beside released images (issue 6, decision 0026).

A share or export with ``clinical`` set writes the clinical facts of the subjects it releases
as two tables, each as CSV (UTF-8, a header) and Parquet with the same rows:

* ``facts``: ``patient``, ``kind``, ``system``, ``code``, ``display``, ``value_number``,
  ``value_text``, ``value_system``, ``unit``, ``start``, ``end``, ``status``;
* ``subjects``: ``patient``, ``sex``, ``birth_year``; one row per subject released.

``patient`` is the pseudonym the images' PatientID gets: ``Pseudonymiser.patient_id`` of the
subject's PatientID with its IssuerOfPatientID, as ``dicom.deid`` computes it from the objects
(a subject *is* a PatientID with its issuer), so tables and images join. Times follow the
profile as the images' dates do (PS3.15 E.3.6): moved by the patient's
``date_shift_days`` under Retain Longitudinal Temporal Information with Modified Dates, kept
under Full Dates, left out otherwise. Sex and birth year only under Retain Patient
Characteristics (PS3.15 E.3.8; the images keep Patient's Sex and Age then, never the birth
date): the year of the *shifted* birth date, which with the shifted times gives age to within
a year, as Patient's Age does, without the real birth date.

Nothing else leaves: no source IDs, no identifiers, no links (``detail``). Free text does not
leave either: ``value_text`` is kept only when it is a code (``value_system`` set); ``display``
is a code's term. A text cell holding one of the patient's identifying values (PatientID,
NHS number, birth date, a part of the name) is emptied, as the images' kept text is scrubbed;
both are counted for the manifest (never the values).

Rows are read and written in batches of subjects (``SUBJECT_CHUNK``), so a table of a million
facts is never in memory whole; the same input gives the same bytes (a release run again
finds its tables there already).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections import Counter
from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, TextIO

from imagebank.dicom.deid import DeidConfig
from imagebank.domain.confidentiality import Option, Profile
from imagebank.domain.pseudonyms import shift_date
from imagebank.index import repo
from imagebank.services.archive import Archive

FACT_COLUMNS = ("patient", "kind", "system", "code", "display", "value_number",
                "value_text", "value_system", "unit", "start", "end", "status")
SUBJECT_COLUMNS = ("patient", "sex", "birth_year")
#: Subjects read (with their facts) per batch.
SUBJECT_CHUNK = 500
CSV_TYPE = "text/csv"
PARQUET_TYPE = "application/vnd.apache.parquet"
#: How times are released, from the profile's options.
DATES_SHIFTED, DATES_UNMODIFIED, DATES_REMOVED = "shifted", "unmodified", "removed"
_SEXES = frozenset({"M", "F", "O"})
_SEPARATORS = re.compile(r"[\s\-/.]+")
_WORDS = re.compile(r"\w+")


def dates_mode(profile: Profile) -> str:
    """How the profile treats dates (as ``dicom.deid`` does the images')."""
    if Option.RETAIN_LONG_FULL_DATES in profile.options:
        return DATES_UNMODIFIED
    if Option.RETAIN_LONG_MODIFIED_DATES in profile.options:
        return DATES_SHIFTED
    return DATES_REMOVED


@dataclass(frozen=True, slots=True)
class TableFile:
    """One written table file: its name in the release (``facts.csv``) and what the manifest
    says of it."""

    name: str
    path: Path
    content_type: str
    rows: int
    size: int
    sha256: str


@dataclass
class ClinicalTables:
    """What was written: the files, and counts for the manifest (no values)."""

    files: list[TableFile]
    patients: int = 0
    facts: int = 0
    dates: str = DATES_REMOVED
    patient_characteristics: bool = False
    #: A research project's tables, exported as its shares stored them.
    as_stored: bool = False
    #: Cells emptied: ``free_text`` (a value that is not a code), ``identifier`` (a cell
    #: holding a patient's identifying value).
    emptied: Counter[str] = field(default_factory=Counter)

    def manifest(self, delivered: dict[str, dict[str, Any]]) -> dict[str, Any]:
        if self.as_stored:
            return {"as_stored": True, "patients": None, "facts": None,
                    "emptied": dict(sorted(self.emptied.items())),
                    "tables": [{"name": f.name, "rows": f.rows, "bytes": f.size,
                                "sha256": f.sha256, **delivered.get(f.name, {})}
                               for f in self.files]}
        return {
            "patients": self.patients, "facts": self.facts, "dates": self.dates,
            "patient_characteristics": self.patient_characteristics,
            "emptied": dict(sorted(self.emptied.items())),
            "tables": [{"name": f.name, "rows": f.rows, "bytes": f.size, "sha256": f.sha256,
                        **delivered.get(f.name, {})} for f in self.files]}


# -- a patient's pseudonym, offset, and identifying values --------------------------------------
@lru_cache(maxsize=65536)
def _compact(text: str) -> str:
    return _SEPARATORS.sub("", text).lower()


@lru_cache(maxsize=65536)
def _words(text: str) -> frozenset[str]:
    return frozenset(_WORDS.findall(text.lower()))


@dataclass(frozen=True, slots=True)
class _Patient:
    pseudonym: str
    shift: int
    #: Identifiers, compacted (no spaces, dashes, slashes or dots) and lower case: found
    #: anywhere in a cell. Name parts: found as whole words.
    strings: tuple[str, ...]
    names: frozenset[str]

    @classmethod
    def of(cls, subject: dict[str, Any], config: DeidConfig) -> _Patient:
        patient_id = str(subject["patient_id"] or "")
        issuer = str(subject["issuer_of_patient_id"] or "")
        strings = {_compact(patient_id)}
        birth = str(subject["patient_birth_date"] or "")
        if len(birth) == 8 and birth.isdigit():
            strings.add(birth)
        names = {w for w in _WORDS.findall(str(subject["patient_name"] or "").lower())
                 if len(w) >= 3}
        return cls(config.pseudonyms.patient_id(patient_id, issuer),
                   config.pseudonyms.date_shift_days(patient_id, issuer),
                   tuple(s for s in strings if len(s) >= 3), frozenset(names))

    def found_in(self, text: str) -> bool:
        compact = _compact(text)
        if any(s in compact for s in self.strings):
            return True
        return bool(self.names) and not self.names.isdisjoint(_words(text))


# -- the tables -------------------------------------------------------------------------------
class _Table:
    """One table written as CSV and Parquet at once, a batch at a time."""

    def __init__(self, folder: Path, name: str, schema: Any) -> None:
        import pyarrow.parquet as pq

        self.name, self.schema, self.rows = name, schema, 0
        self.csv_path = folder / f"{name}.csv"
        self.parquet_path = folder / f"{name}.parquet"
        self._handle: TextIO = open(self.csv_path, "w", encoding="utf-8", newline="")
        self._csv = csv.writer(self._handle, lineterminator="\n")
        self._csv.writerow(schema.names)
        self._parquet = pq.ParquetWriter(self.parquet_path, schema)

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        import pyarrow as pa

        if not rows:
            return
        self._csv.writerows(map(_csv_row, rows))
        columns = [list(c) for c in zip(*rows, strict=True)]
        self._parquet.write_batch(pa.record_batch(
            [pa.array(c, type=t) for c, t in zip(columns, self.schema.types, strict=True)],
            schema=self.schema))
        self.rows += len(rows)

    def close(self) -> list[TableFile]:
        self._handle.close()
        self._parquet.close()
        return [_described(self.csv_path, CSV_TYPE, self.rows),
                _described(self.parquet_path, PARQUET_TYPE, self.rows)]

    def abort(self) -> None:
        self._handle.close()
        self._parquet.close()


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)
    return value


def _csv_row(row: tuple[Any, ...]) -> list[Any]:
    """A row as the CSV writes it: empty for null, ISO 8601 times, ``repr`` of a float (the
    shortest text that reads back as the same number)."""
    return [v if v.__class__ is str else _csv_cell(v) for v in row]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _described(path: Path, content_type: str, rows: int) -> TableFile:
    return TableFile(path.name, path, content_type, rows, path.stat().st_size,
                     file_sha256(path))


def _schemas() -> tuple[Any, Any]:
    import pyarrow as pa

    text, when = pa.string(), pa.timestamp("us", tz="UTC")
    facts = pa.schema([(name, pa.float64() if name == "value_number"
                        else when if name in ("start", "end") else text)
                       for name in FACT_COLUMNS])
    subjects = pa.schema([("patient", text), ("sex", text), ("birth_year", pa.int32())])
    return facts, subjects


def write_tables(archive: Archive, project: str, config: DeidConfig, folder: Path, *,
                 subject_ids: Sequence[str] | None = None,
                 excluded: Container[str] = frozenset()) -> ClinicalTables:
    """Write the ``facts`` and ``subjects`` tables of ``project``'s subjects (all, or
    ``subject_ids``; never those in ``excluded``) into ``folder``, under ``config`` (the
    release's key and profile)."""
    dates = dates_mode(config.profile)
    characteristics = Option.RETAIN_PATIENT_CHARACTERISTICS in config.profile.options
    result = ClinicalTables([], dates=dates, patient_characteristics=characteristics)
    fact_schema, subject_schema = _schemas()
    facts = _Table(folder, "facts", fact_schema)
    subjects = _Table(folder, "subjects", subject_schema)
    try:
        for read in _subject_chunks(archive, project, subject_ids):
            chunk = [s for s in read if s["id"] not in excluded]
            if not chunk:
                continue
            patients = {str(s["id"]): _Patient.of(s, config) for s in chunk}
            with archive.sessions.begin() as session:
                found = repo.release_facts(session, list(patients))
            facts.write([_fact(patients[str(row[0])], row, dates, result.emptied)
                         for row in found])
            subjects.write([_subject(patients[str(s["id"])], s, dates, characteristics)
                            for s in chunk])
            result.patients += len(chunk)
            result.facts += len(found)
    except BaseException:
        facts.abort()
        subjects.abort()
        raise
    result.files = [*facts.close(), *subjects.close()]
    return result


def _subject_chunks(archive: Archive, project: str, subject_ids: Sequence[str] | None
                    ) -> Iterator[list[dict[str, Any]]]:
    if subject_ids is not None:
        ids = sorted(set(subject_ids))
        for start in range(0, len(ids), SUBJECT_CHUNK):
            with archive.sessions.begin() as session:
                yield repo.release_subjects(session, project,
                                            subject_ids=ids[start:start + SUBJECT_CHUNK])
        return
    after = ""
    while True:
        with archive.sessions.begin() as session:
            rows = repo.release_subjects(session, project, after=after, limit=SUBJECT_CHUNK)
        if not rows:
            return
        yield rows
        after = str(rows[-1]["id"])


def _when(value: datetime | None, patient: _Patient, dates: str) -> datetime | None:
    if value is None or dates == DATES_REMOVED:
        return None
    value = repo.aware(value)
    assert value is not None
    return value if dates == DATES_UNMODIFIED else value + timedelta(days=patient.shift)


def _fact(patient: _Patient, row: tuple[Any, ...], dates: str, emptied: Counter[str]
          ) -> tuple[Any, ...]:
    (_subject_id, kind, system, code, display, number, text, value_system, unit, start, end,
     status) = row
    if text and not value_system:
        text = ""
        emptied["free_text"] += 1
    cells = [str(c or "") for c in (system, code, display, text, value_system, unit, status)]
    if patient.found_in("\x1f".join(cells)):  # one look at all; each cell only on a hit
        for i, cell in enumerate(cells):
            if cell and patient.found_in(cell):
                cells[i] = ""
                emptied["identifier"] += 1
    system, code, display, text, value_system, unit, status = cells
    return (patient.pseudonym, kind, system, code, display, number, text, value_system, unit,
            _when(start, patient, dates), _when(end, patient, dates), status)


def _subject(patient: _Patient, subject: dict[str, Any], dates: str, characteristics: bool
             ) -> tuple[Any, ...]:
    if not characteristics:
        return (patient.pseudonym, "", None)
    sex = str(subject["patient_sex"] or "").strip().upper()
    year = None
    birth = str(subject["patient_birth_date"] or "")
    if dates != DATES_REMOVED:
        try:
            moved = birth if dates == DATES_UNMODIFIED else shift_date(birth, patient.shift)
            year = int(moved[:4]) if len(moved) == 8 and moved.isdigit() else None
        except ValueError:
            year = None  # a partial or malformed birth date: not released
    return (patient.pseudonym, sex if sex in _SEXES else "", year)


# -- a research project's tables, as stored ------------------------------------------------------
#: Research projects keep released tables as project resources named ``clinical-<job>-<file>``.
RESOURCE_PREFIX = "clinical-"


def resource_name(job_id: str, name: str) -> str:
    return f"{RESOURCE_PREFIX}{job_id}-{name}"


def stored_tables(archive: Archive, project: str, folder: Path,
                  excluded: Container[str] = frozenset()) -> ClinicalTables:
    """A research project's clinical tables (what its shares stored) written into ``folder``
    to be exported as they are, but for the rows of subjects in ``excluded`` (withdrawn
    since: their pseudonym's rows are left out, and counted)."""
    import pyarrow.parquet as pq

    with archive.sessions.begin() as session:
        subjects = repo.release_subjects(session, project, subject_ids=[
            s for s in _all_subject_ids(archive, project) if s in excluded])
    left_out = {str(s["patient_id"] or "") for s in subjects}
    result = ClinicalTables([], as_stored=True)
    for resource in archive.resources(project, "project", project):
        name = str(resource["name"])
        if not name.startswith(RESOURCE_PREFIX):
            continue
        path = folder / name
        if name.endswith(".parquet"):
            source = pq.ParquetFile(archive.store.open(str(resource["object_key"])))
            kept = 0
            with pq.ParquetWriter(path, source.schema_arrow) as out:
                for batch in source.iter_batches(batch_size=10_000):
                    rows = batch.to_pylist()
                    keep = [r for r in rows if r.get("patient") not in left_out]
                    result.emptied["rows_of_excluded_subjects"] += len(rows) - len(keep)
                    if keep:
                        out.write_batch(batch.from_pylist(keep, schema=batch.schema))
                    kept += len(keep)
        else:
            kept = 0
            with archive.store.open(str(resource["object_key"])) as raw, \
                    open(path, "w", encoding="utf-8", newline="") as handle:
                reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
                writer = csv.writer(handle, lineterminator="\n")
                header = next(reader, [])
                writer.writerow(header)
                column = header.index("patient") if "patient" in header else None
                for row in reader:
                    if column is not None and row[column] in left_out:
                        result.emptied["rows_of_excluded_subjects"] += 1
                        continue
                    writer.writerow(row)
                    kept += 1
        result.files.append(_described(path, str(resource["content_type"]), kept))
    # Both formats of a table hold the same rows: count each row once.
    result.emptied["rows_of_excluded_subjects"] //= 2
    return result


def _all_subject_ids(archive: Archive, project: str) -> list[str]:
    return [str(s["id"]) for chunk in _subject_chunks(archive, project, None) for s in chunk]
