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

import hashlib
import re
import shutil
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

from imagebank.dicom.deid import DeidConfig
from imagebank.domain.confidentiality import Option, Profile
from imagebank.domain.pseudonyms import shift_date
from imagebank.index import repo
from imagebank.services.archive import Archive

FACT_COLUMNS = ("patient", "kind", "system", "code", "display", "value_number",
                "value_text", "value_system", "unit", "start", "end", "status", "study_uid")
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
    """One table written as CSV and Parquet at once, from the same Arrow record batches:
    the CSV (pyarrow's writer: a quoted header, strings quoted, empty for null, times as
    ``2019-03-04 10:00:00.000000Z``, the shortest float that reads back the same) reads
    back, with the table's schema, as exactly the Parquet's rows."""

    def __init__(self, folder: Path, name: str, schema: Any,
                 formats: tuple[str, ...] = ("csv", "parquet")) -> None:
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq

        self.schema, self.rows = schema, 0
        self.paths = [folder / f"{name}.{f}" for f in formats]
        self._writers: list[Any] = []
        for path in self.paths:
            if path.suffix == ".csv":
                self._writers.append(pcsv.CSVWriter(str(path), schema, write_options=(
                    pcsv.WriteOptions(quoting_style="needed", batch_size=4096))))
            else:
                self._writers.append(pq.ParquetWriter(path, schema))

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        import pyarrow as pa

        if rows:
            columns = [list(c) for c in zip(*rows, strict=True)]
            self.write_batch(pa.record_batch(
                [pa.array(c, type=t) for c, t in zip(columns, self.schema.types, strict=True)],
                schema=self.schema))

    def write_batch(self, batch: Any) -> None:
        if batch.num_rows:
            for writer in self._writers:
                writer.write_batch(batch)
            self.rows += batch.num_rows

    def close(self) -> list[TableFile]:
        for writer in self._writers:
            writer.close()
        return [_described(p, CSV_TYPE if p.suffix == ".csv" else PARQUET_TYPE, self.rows)
                for p in self.paths]

    def abort(self) -> None:
        for writer in self._writers:
            writer.close()


def read_csv_table(path: Path | BinaryIO, schema: Any) -> Any:
    """A table's CSV read back with its schema (a path or a binary file): the same rows as
    its Parquet."""
    import pyarrow.csv as pcsv

    return pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(column_types=schema))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _described(path: Path, content_type: str, rows: int) -> TableFile:
    return TableFile(path.name, path, content_type, rows, path.stat().st_size,
                     file_sha256(path))


def schemas() -> tuple[Any, Any]:
    """The Arrow schemas of the ``facts`` and ``subjects`` tables."""
    import pyarrow as pa

    text, when = pa.string(), pa.timestamp("us", tz="UTC")
    facts = pa.schema([(name, pa.float64() if name == "value_number"
                        else when if name in ("start", "end") else text)
                       for name in FACT_COLUMNS])
    subjects = pa.schema([("patient", text), ("sex", text), ("birth_year", pa.int32())])
    return facts, subjects


def write_tables(archive: Archive, project: str, config: DeidConfig, folder: Path, *,
                 subject_ids: Sequence[str] | None = None,
                 excluded: Collection[str] = frozenset()) -> ClinicalTables:
    """Write the ``facts`` and ``subjects`` tables of ``project``'s subjects (all, or
    ``subject_ids``; never those in ``excluded``) into ``folder``, under ``config`` (the
    release's key and profile)."""
    dates = dates_mode(config.profile)
    characteristics = Option.RETAIN_PATIENT_CHARACTERISTICS in config.profile.options
    # An ImagingStudy's study as the released images name it: remapped as they are.
    uid_of: Callable[[str], str] = (str if Option.RETAIN_UIDS in config.profile.options
                                    else config.pseudonyms.uid)
    result = ClinicalTables([], dates=dates, patient_characteristics=characteristics)
    fact_schema, subject_schema = schemas()
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
            facts.write([_fact(patients[str(row[0])], row, dates, result.emptied, uid_of)
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
    with archive.sessions.begin() as session:
        ids = (sorted(set(subject_ids)) if subject_ids is not None
               else repo.project_subject_ids(session, project))
    for start in range(0, len(ids), SUBJECT_CHUNK):
        with archive.sessions.begin() as session:
            yield repo.release_subjects(session, project,
                                        subject_ids=ids[start:start + SUBJECT_CHUNK])


def _when(value: datetime | None, patient: _Patient, dates: str) -> datetime | None:
    if value is None or dates == DATES_REMOVED:
        return None
    value = repo.aware(value)
    assert value is not None
    return value if dates == DATES_UNMODIFIED else value + timedelta(days=patient.shift)


def _fact(patient: _Patient, row: tuple[Any, ...], dates: str, emptied: Counter[str],
          uid_of: Callable[[str], str]) -> tuple[Any, ...]:
    (_subject_id, kind, system, code, display, number, text, value_system, unit, start, end,
     status, study_uid) = row
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
            _when(start, patient, dates), _when(end, patient, dates), status,
            uid_of(study_uid) if study_uid else "")


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
                  excluded: Collection[str] = frozenset()) -> ClinicalTables:
    """A research project's clinical tables (what its shares stored) written into ``folder``
    to be exported as they are, but for the rows of its subjects in ``excluded`` (withdrawn
    since: their pseudonym's rows are left out, and counted)."""
    with archive.sessions.begin() as session:
        subjects = repo.release_subjects(session, project, sorted(excluded))
    left_out = sorted({str(s["patient_id"] or "") for s in subjects})
    facts, subject_schema = schemas()
    result = ClinicalTables([], as_stored=True)
    for resource in archive.resources(project, "project", project):
        name = str(resource["name"])
        if not name.startswith(RESOURCE_PREFIX) or not name.endswith((".csv", ".parquet")):
            continue
        schema = facts if name.rsplit(".", 1)[0].endswith("-facts") else subject_schema
        path = folder / name
        with archive.store.open(str(resource["object_key"])) as source:
            kept, dropped = _copy_rows(source, path, schema, left_out)
        if name.endswith(".csv"):  # both formats hold the same rows: counted once
            result.emptied["rows_of_excluded_subjects"] += dropped
        result.files.append(_described(path, str(resource["content_type"]), kept))
    return result


def _copy_rows(source: BinaryIO, path: Path, schema: Any, left_out: list[str]
               ) -> tuple[int, int]:
    """Copy a stored table, CSV or Parquet, to ``path`` without the rows whose ``patient`` is
    in ``left_out`` (byte for byte when there is none): rows kept and left out."""
    import pyarrow as pa
    import pyarrow.compute as pc

    stored = path.with_name(path.name + ".stored")
    with open(stored, "wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)
    if not left_out:
        stored.rename(path)
        return sum(b.num_rows for b in _batches(path, schema)), 0
    table = _Table(path.parent, path.stem, schema, formats=(path.suffix[1:],))
    dropped = 0
    try:
        for batch in _batches(stored, schema):
            keep = batch.filter(pc.invert(pc.is_in(batch["patient"],
                                                   value_set=pa.array(left_out))))
            dropped += batch.num_rows - keep.num_rows
            table.write_batch(keep)
    except BaseException:
        table.abort()
        raise
    finally:
        stored.unlink(missing_ok=True)
    table.close()
    return table.rows, dropped


def _batches(path: Path, schema: Any) -> Iterator[Any]:
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    if path.suffix == ".parquet" or path.name.endswith(".parquet.stored"):
        yield from pq.ParquetFile(path).iter_batches(batch_size=65536)
        return
    with pcsv.open_csv(path, convert_options=pcsv.ConvertOptions(
            column_types=schema)) as reader:
        yield from reader
