"""Queries and writes of the index. All SQL of imagebank lives in this package.

Functions take a ``Session`` and never commit: the caller owns the transaction (STYLE.md
practice 6). Reads return plain dicts of column values, which callers turn into views.
"""

from __future__ import annotations

import secrets
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import Select, Table, func, select, text, update
from sqlalchemy import bindparam as _bind
from sqlalchemy.orm import Session

from imagebank.index.tables import (
    ArchiveMeta,
    Base,
    Change,
    ClinicalFact,
    ClinicalStudyLink,
    Instance,
    Project,
    QuarantineItem,
    Resource,
    Series,
    Study,
    Subject,
)

ID_KEY = "id_key"

StudySelect = Select[Study, str | None, str | None, str | None, str | None, str | None]

SUBJECTS = cast(Table, Subject.__table__)
STUDIES = cast(Table, Study.__table__)
SERIES = cast(Table, Series.__table__)
INSTANCES = cast(Table, Instance.__table__)
_CLINICAL_FACTS = cast(Table, ClinicalFact.__table__)
CHUNK = 500


def now() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes for timezone-aware columns: they are UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _insert(session: Session, table: Table | type[Base]) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table)


def _chunks(values: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _row(obj: Any) -> dict[str, Any]:
    return {c.key: getattr(obj, c.key) for c in obj.__table__.columns}


# -- archive ------------------------------------------------------------------------------
def get_or_create_id_key(session: Session) -> bytes:
    """The archive's secret for internal IDs, created on first use (in the index, so that
    every process of the archive, on any machine, derives the same IDs)."""
    stmt = _insert(session, ArchiveMeta).values(key=ID_KEY, value=secrets.token_hex(32))
    session.execute(stmt.on_conflict_do_nothing())
    value = session.scalar(select(ArchiveMeta.value).where(ArchiveMeta.key == ID_KEY))
    assert value is not None
    return bytes.fromhex(value)


# -- projects -----------------------------------------------------------------------------
def add_project(session: Session, project_id: str, name: str, description: str = "", *,
                zone: str = "identifiable", policy: str | None = None,
                deid_options: str = "[]") -> bool:
    """Add a project; False if it already exists."""
    # RETURNING, not rowcount: psycopg reports -1 for INSERT ... ON CONFLICT DO NOTHING.
    stmt = _insert(session, Project).values(
        id=project_id, name=name, description=description, created_at=now(), zone=zone,
        policy=policy, deid_options=deid_options,
    ).on_conflict_do_nothing().returning(Project.id)
    return session.execute(stmt).first() is not None


def get_project(session: Session, project_id: str) -> dict[str, Any] | None:
    project = session.get(Project, project_id)
    return None if project is None else _row(project)


def list_projects(session: Session) -> list[dict[str, Any]]:
    subjects = (
        select(Subject.project_id, func.count().label("n")).group_by(Subject.project_id)
        .subquery()
    )
    studies = (
        select(
            Study.project_id,
            func.count().label("n"),
            func.coalesce(func.sum(Study.num_series), 0).label("series"),
            func.coalesce(func.sum(Study.num_instances), 0).label("instances"),
            func.coalesce(func.sum(Study.size_bytes), 0).label("size"),
        ).group_by(Study.project_id).subquery()
    )
    stmt = (
        select(
            Project,
            func.coalesce(subjects.c.n, 0),
            func.coalesce(studies.c.n, 0),
            func.coalesce(studies.c.series, 0),
            func.coalesce(studies.c.instances, 0),
            func.coalesce(studies.c.size, 0),
        )
        .outerjoin(subjects, subjects.c.project_id == Project.id)
        .outerjoin(studies, studies.c.project_id == Project.id)
        .order_by(Project.id)
    )
    result = []
    for project, n_subjects, n_studies, n_series, n_instances, size in session.execute(stmt):
        row = _row(project)
        row.update(subjects=int(n_subjects), studies=int(n_studies), series=int(n_series),
                   instances=int(n_instances), size_bytes=int(size))
        result.append(row)
    return result


# -- ingest writes ------------------------------------------------------------------------
def _id_map(session: Session, key: Any, value: Any, ids: Iterable[str]) -> dict[str, str]:
    """{key: value} for the rows whose ``key`` column is in ``ids`` (queried in chunks)."""
    found: dict[str, str] = {}
    for chunk in _chunks(list(set(ids))):
        found.update(dict(session.execute(select(key, value).where(key.in_(chunk))).all()))
    return found


def project_map(session: Session, model: type[Base], ids: Iterable[str]) -> dict[str, str]:
    """{ID: project ID} of the ``model`` rows among ``ids``."""
    table = cast(Any, model)
    return _id_map(session, table.id, table.project_id, ids)


def get_instance_checksums(session: Session, instance_ids: Iterable[str]) -> dict[str, str]:
    return _id_map(session, Instance.id, Instance.sha256, instance_ids)


def get_study_subjects(session: Session, study_ids: Iterable[str]) -> dict[str, str]:
    return _id_map(session, Study.id, Study.subject_id, study_ids)


def add_instances(
    session: Session,
    subjects: Sequence[dict[str, Any]],
    studies: Sequence[dict[str, Any]],
    series: Sequence[dict[str, Any]],
    instances: Sequence[dict[str, Any]],
) -> tuple[set[str], set[str]]:
    """Insert a batch of the hierarchy.

    Returns the IDs of the instances actually inserted, and of those not inserted because
    their study belongs to another subject (a concurrent writer created it first for another
    patient). Parents are inserted if absent (first values win). Counters of series, studies
    and subjects grow by what was inserted, so they stay exact under concurrent writers.
    """
    stamp = now()
    # Rows are written in one global order (table by table, by ID) by every writer, so that
    # concurrent ingests of overlapping batches wait for each other's row locks instead of
    # deadlocking (PostgreSQL aborts one of two transactions that lock in opposite orders).
    subjects, studies, series, instances = (
        sorted(rows, key=_row_id) for rows in (subjects, studies, series, instances)
    )
    _insert_new(session, Subject, subjects, {"created_at": stamp, "num_studies": 0})
    new_studies = _insert_new(session, Study, studies, {
        "created_at": stamp, "updated_at": stamp, "num_series": 0, "num_instances": 0,
        "size_bytes": 0,
    })
    wanted_owner = {row["id"]: row["subject_id"] for row in studies}
    owners = get_study_subjects(session, wanted_owner)
    foreign = {sid for sid, owner in owners.items() if owner != wanted_owner[sid]}
    mismatched: set[str] = set()
    if foreign:
        mismatched = {r["id"] for r in instances if r["study_id"] in foreign}
        series = [r for r in series if r["study_id"] not in foreign]
        instances = [r for r in instances if r["study_id"] not in foreign]
    new_series = _insert_new(session, Series, series, {
        "created_at": stamp, "num_instances": 0, "size_bytes": 0,
    })
    inserted = _insert_new(session, Instance, instances, {"created_at": stamp})
    if not inserted:
        return set(), mismatched

    per_series: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    per_study: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in instances:
        if row["id"] in inserted:
            per_series[row["series_id"]][0] += 1
            per_series[row["series_id"]][1] += row["size_bytes"]
            per_study[row["study_id"]][0] += 1
            per_study[row["study_id"]][1] += row["size_bytes"]
    if per_series:
        session.execute(
            update(SERIES).where(Series.id == _bind("sid")).values(
                num_instances=Series.num_instances + _bind("n"),
                size_bytes=Series.size_bytes + _bind("s"),
            ),
            [{"sid": k, "n": v[0], "s": v[1]} for k, v in sorted(per_series.items())],
        )
    series_per_study = Counter(r["study_id"] for r in series if r["id"] in new_series)
    session.execute(
        update(STUDIES).where(Study.id == _bind("sid")).values(
            num_instances=Study.num_instances + _bind("n"),
            size_bytes=Study.size_bytes + _bind("s"),
            num_series=Study.num_series + _bind("ns"),
            updated_at=stamp,
        ),
        [{"sid": k, "n": v[0], "s": v[1], "ns": series_per_study.get(k, 0)}
         for k, v in sorted(per_study.items())],
    )
    if new_series:
        _refresh_modalities(session, series_per_study.keys())
    studies_per_subject = Counter(r["subject_id"] for r in studies if r["id"] in new_studies)
    if studies_per_subject:
        session.execute(
            update(SUBJECTS).where(Subject.id == _bind("sid")).values(
                num_studies=Subject.num_studies + _bind("n"),
            ),
            [{"sid": k, "n": v} for k, v in sorted(studies_per_subject.items())],
        )
    return inserted, mismatched


def _row_id(row: dict[str, Any]) -> str:
    return str(row["id"])


def _insert_new(session: Session, model: type[Base], rows: Sequence[dict[str, Any]],
                defaults: dict[str, Any]) -> set[str]:
    if not rows:
        return set()
    table = cast(Table, model.__table__)
    full = [{**defaults, **row} for row in rows]
    stmt = _insert(session, table).on_conflict_do_nothing().returning(table.c.id)
    inserted: set[str] = set()
    for chunk in _chunks(full):
        inserted.update(session.scalars(stmt, list(chunk)).all())
    return inserted


def _refresh_modalities(session: Session, study_ids: Iterable[str]) -> None:
    ids = list(study_ids)
    modalities: dict[str, set[str]] = defaultdict(set)
    for chunk in _chunks(ids):
        for study_id, modality in session.execute(
            select(Series.study_id, Series.modality).distinct().where(Series.study_id.in_(chunk))
        ):
            if modality:
                modalities[study_id].add(modality)
    if modalities:
        session.execute(
            update(STUDIES).where(Study.id == _bind("sid"))
            .values(modalities_in_study=_bind("m")),
            [{"sid": k, "m": "\\".join(sorted(v))} for k, v in sorted(modalities.items())],
        )


def add_quarantine(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        stamp = now()
        session.execute(
            _insert(session, QuarantineItem).on_conflict_do_nothing(),
            [{"created_at": stamp, **r} for r in rows],
        )


def add_changes(session: Session, project_id: str, change_type: str, level: str,
                resource_ids: Iterable[str]) -> None:
    stamp = now()
    rows = [
        {"project_id": project_id, "change_type": change_type, "level": level,
         "resource_id": rid, "created_at": stamp}
        for rid in resource_ids
    ]
    if rows:
        session.execute(_insert(session, Change), rows)


def add_resource(session: Session, row: dict[str, Any]) -> None:
    session.execute(_insert(session, Resource).values(created_at=now(), **row))


def list_resources(session: Session, project_id: str, level: str | None = None,
                   parent_id: str | None = None) -> list[dict[str, Any]]:
    stmt = select(Resource).where(Resource.project_id == project_id)
    if level is not None:
        stmt = stmt.where(Resource.level == level)
    if parent_id is not None:
        stmt = stmt.where(Resource.parent_id == parent_id)
    return [_row(r) for r in session.scalars(stmt.order_by(Resource.created_at, Resource.id))]


def optimize(session: Session) -> None:
    """Refresh the query planner's statistics (cheap: SQLite samples each index).

    Without them SQLite guesses that ``project_id = ?`` is selective and walks a big project's
    studies in date order to find one patient's (100 ms at 1,000,000 instances instead of 1).
    """
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("PRAGMA analysis_limit=1000"))
        session.execute(text("ANALYZE"))
    else:
        session.execute(text("ANALYZE"))


# -- reads --------------------------------------------------------------------------------
def count_rows(session: Session) -> dict[str, int]:
    counts = {}
    for name, model in (("projects", Project), ("subjects", Subject), ("studies", Study),
                        ("series", Series), ("instances", Instance),
                        ("resources", Resource), ("quarantined", QuarantineItem)):
        counts[name] = int(session.scalar(select(func.count()).select_from(model)) or 0)
    counts["bytes"] = int(
        session.scalar(select(func.coalesce(func.sum(Study.size_bytes), 0))) or 0
    )
    return counts


def quarantine_reasons(session: Session, project_id: str | None = None) -> dict[str, int]:
    stmt = select(QuarantineItem.reason, func.count()).group_by(QuarantineItem.reason)
    if project_id:
        stmt = stmt.where(QuarantineItem.project_id == project_id)
    return {reason: int(n) for reason, n in session.execute(stmt)}


def list_quarantine(session: Session, project_id: str | None = None, *, limit: int = 100,
                    offset: int = 0) -> list[dict[str, Any]]:
    stmt = select(QuarantineItem).order_by(QuarantineItem.created_at, QuarantineItem.id)
    if project_id:
        stmt = stmt.where(QuarantineItem.project_id == project_id)
    return [_row(q) for q in session.scalars(stmt.limit(limit).offset(offset))]


def list_subjects(session: Session, project_id: str, *, limit: int = 100,
                  offset: int = 0) -> list[dict[str, Any]]:
    stmt = (select(Subject).where(Subject.project_id == project_id)
            .order_by(Subject.patient_id, Subject.id).limit(limit).offset(offset))
    return [_row(s) for s in session.scalars(stmt)]


def study_query(
    project_ids: Sequence[str] | None = None,
    *,
    patient_id: str | None = None,
    study_date_from: str | None = None,
    study_date_to: str | None = None,
    subject_id: str | None = None,
    modality: str | None = None,
    accession_number: str | None = None,
    study_instance_uid: str | None = None,
) -> StudySelect:
    """A SELECT of studies (with their subject's patient attributes) matching the filters.

    Dates are DICOM DA strings (YYYYMMDD), compared as strings: a range is inclusive.
    """
    stmt = select(
        Study,
        Subject.patient_id,
        Subject.issuer_of_patient_id,
        Subject.patient_name,
        Subject.patient_birth_date,
        Subject.patient_sex,
    ).join(Subject, Subject.id == Study.subject_id)
    if patient_id is not None:
        # Through the subjects' PatientID index first, with the projects filtered there (a
        # study is in its subject's project): a filter on the studies' project would tempt
        # SQLite into walking the project's studies in date order instead.
        subjects = select(Subject.id).where(Subject.patient_id == patient_id)
        if project_ids is not None:
            subjects = subjects.where(Subject.project_id.in_(list(project_ids)))
        stmt = stmt.where(Study.subject_id.in_(subjects))
    elif project_ids is not None:
        stmt = stmt.where(Study.project_id.in_(list(project_ids)))
    if subject_id is not None:
        stmt = stmt.where(Study.subject_id == subject_id)
    if study_date_from is not None:
        stmt = stmt.where(Study.study_date >= study_date_from)
    if study_date_to is not None:
        stmt = stmt.where(Study.study_date <= study_date_to)
    if accession_number is not None:
        stmt = stmt.where(Study.accession_number == accession_number)
    if study_instance_uid is not None:
        stmt = stmt.where(Study.study_instance_uid == study_instance_uid)
    if modality is not None:
        stmt = stmt.where(
            Study.id.in_(select(Series.study_id).where(Series.modality == modality))
        )
    return stmt


def list_studies(session: Session, project_ids: Sequence[str] | None = None, *,
                 limit: int = 100, offset: int = 0, **filters: Any) -> list[dict[str, Any]]:
    stmt = study_query(project_ids, **filters).order_by(
        Study.study_date.desc(), Study.id
    ).limit(limit).offset(offset)
    result = []
    for study, pid, issuer, name, birth, sex in session.execute(stmt):
        row = _row(study)
        row.update(patient_id=pid, issuer_of_patient_id=issuer, patient_name=name,
                   patient_birth_date=birth, patient_sex=sex)
        result.append(row)
    return result


def list_series(session: Session, study_id: str) -> list[dict[str, Any]]:
    stmt = (select(Series).where(Series.study_id == study_id)
            .order_by(Series.series_number, Series.id))
    return [_row(s) for s in session.scalars(stmt)]


def list_instances(session: Session, series_id: str, *, with_metadata: bool = False,
                   limit: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
    stmt = (select(Instance).where(Instance.series_id == series_id)
            .order_by(Instance.instance_number, Instance.id).offset(offset))
    if limit is not None:
        stmt = stmt.limit(limit)
    rows = [_row(i) for i in session.scalars(stmt)]
    if not with_metadata:
        for row in rows:
            row.pop("metadata_json", None)
    return rows


def get_level_row(session: Session, model: type[Base], row_id: str) -> dict[str, Any] | None:
    obj = session.get(model, row_id)
    return None if obj is None else _row(obj)


def find_by_uid(session: Session, uid: str) -> list[tuple[str, dict[str, Any]]]:
    """Every study, series or instance (in any project) with this UID, by level."""
    found: list[tuple[str, dict[str, Any]]] = []
    for level, model, column in (
        ("study", Study, Study.study_instance_uid),
        ("series", Series, Series.series_instance_uid),
        ("instance", Instance, Instance.sop_instance_uid),
    ):
        for obj in session.scalars(select(model).where(column == uid)):
            found.append((level, _row(obj)))
    return found


def iter_instance_objects(session: Session, batch: int = 5000) -> Iterator[tuple[str, str, int]]:
    """(object_key, sha256, size) of every instance, in key order, streamed."""
    last: str = ""
    while True:
        rows = session.execute(
            select(Instance.object_key, Instance.sha256, Instance.size_bytes)
            .where(Instance.object_key > last).order_by(Instance.object_key).limit(batch)
        ).all()
        if not rows:
            return
        yield from ((key, sha, size) for key, sha, size in rows)
        last = rows[-1][0]


def instance_key_exists(session: Session, object_key: str) -> bool:
    return session.scalar(
        select(func.count()).select_from(Instance).where(Instance.object_key == object_key)
    ) != 0


def iter_other_object_keys(session: Session) -> Iterator[str]:
    for (key,) in session.execute(select(Resource.object_key)):
        yield key
    for (qkey,) in session.execute(
        select(QuarantineItem.object_key).where(QuarantineItem.object_key.is_not(None))
    ):
        if qkey:
            yield qkey


def delete_instance_rows(session: Session, object_keys: Sequence[str]) -> int:
    """Remove index rows whose objects are gone, fixing the counters (used by repair)."""
    removed = 0
    for chunk in _chunks(list(object_keys)):
        rows = session.execute(
            select(Instance.id, Instance.series_id, Instance.study_id, Instance.size_bytes)
            .where(Instance.object_key.in_(chunk))
        ).all()
        for iid, series_id, study_id, size in rows:
            session.execute(INSTANCES.delete().where(Instance.id == iid))
            session.execute(update(SERIES).where(Series.id == series_id).values(
                num_instances=Series.num_instances - 1, size_bytes=Series.size_bytes - size))
            session.execute(update(STUDIES).where(Study.id == study_id).values(
                num_instances=Study.num_instances - 1, size_bytes=Study.size_bytes - size))
            removed += 1
    prune_empty(session)
    return removed


def prune_empty(session: Session) -> None:
    """Remove series, studies and subjects left without instances, fixing parent counters."""
    empty_series = session.execute(
        select(Series.id, Series.study_id).where(
            ~select(Instance.id).where(Instance.series_id == Series.id).exists()
        )
    ).all()
    for series_id, study_id in empty_series:
        session.execute(SERIES.delete().where(Series.id == series_id))
        session.execute(update(STUDIES).where(Study.id == study_id).values(
            num_series=Study.num_series - 1))
    if empty_series:
        _refresh_modalities(session, {study_id for _, study_id in empty_series})
    empty_studies = session.execute(
        select(Study.id, Study.subject_id).where(
            ~select(Series.id).where(Series.study_id == Study.id).exists()
        )
    ).all()
    for study_id, subject_id in empty_studies:
        session.execute(STUDIES.delete().where(Study.id == study_id))
        session.execute(update(SUBJECTS).where(Subject.id == subject_id).values(
            num_studies=Subject.num_studies - 1))
    session.execute(SUBJECTS.delete().where(
        ~select(Study.id).where(Study.subject_id == Subject.id).exists()
    ))


def list_changes(session: Session, project_id: str, *, since: int = 0, limit: int = 100
                 ) -> list[dict[str, Any]]:
    stmt = (select(Change).where(Change.project_id == project_id, Change.seq > since)
            .order_by(Change.seq).limit(limit))
    return [_row(c) for c in session.scalars(stmt)]


def last_change(session: Session, project_id: str) -> int:
    return int(session.scalar(
        select(func.coalesce(func.max(Change.seq), 0)).where(Change.project_id == project_id)
    ) or 0)


def instance_objects(session: Session, level: str, ids: Sequence[str]
                     ) -> list[dict[str, Any]]:
    """The instances (ID, study, series, object key, size) of studies or series, in order."""
    column = {"study": Instance.study_id, "series": Instance.series_id,
              "instance": Instance.id}[level]
    rows: list[dict[str, Any]] = []
    for chunk in _chunks(list(ids)):
        stmt = (select(Instance.id, Instance.study_id, Instance.series_id,
                       Instance.object_key, Instance.size_bytes, Instance.project_id)
                .where(column.in_(chunk))
                .order_by(Instance.study_id, Instance.series_id, Instance.instance_number,
                          Instance.id))
        rows.extend(dict(r._mapping) for r in session.execute(stmt))
    return rows


def project_instance_objects(session: Session, project_id: str) -> list[dict[str, Any]]:
    """Every instance (ID, study, series, object key, size) of a project, in archive order."""
    stmt = (select(Instance.id, Instance.study_id, Instance.series_id, Instance.object_key,
                   Instance.size_bytes, Instance.project_id)
            .where(Instance.project_id == project_id)
            .order_by(Instance.study_id, Instance.series_id, Instance.instance_number,
                      Instance.id))
    return [dict(r._mapping) for r in session.execute(stmt)]


def project_counts(session: Session, project_id: str) -> dict[str, int]:
    counts = {}
    for name, model in (("subjects", Subject), ("studies", Study), ("series", Series),
                        ("instances", Instance)):
        counts[name] = int(session.scalar(
            select(func.count()).select_from(model).where(model.project_id == project_id)
        ) or 0)
    counts["bytes"] = int(session.scalar(
        select(func.coalesce(func.sum(Study.size_bytes), 0))
        .where(Study.project_id == project_id)) or 0)
    return counts


def get_resource(session: Session, resource_id: str) -> dict[str, Any] | None:
    obj = session.get(Resource, resource_id)
    return None if obj is None else _row(obj)


# -- clinical facts (issue 6) -------------------------------------------------------------------
def subjects_by_patient_ids(session: Session, project_id: str, patient_ids: Sequence[str]
                            ) -> list[dict[str, Any]]:
    """The project's subjects whose PatientID is one of ``patient_ids`` (any number)."""
    stmt = select(Subject.id, Subject.patient_id, Subject.issuer_of_patient_id,
                  Subject.num_studies).where(Subject.project_id == project_id)
    rows: list[dict[str, Any]] = []
    for chunk in _chunks(sorted(set(patient_ids))):
        rows.extend(dict(r._mapping) for r in session.execute(
            stmt.where(Subject.patient_id.in_(chunk))))
    return rows


def add_subjects(session: Session, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Subjects known from their clinical records only (no study yet); the IDs inserted."""
    return _insert_new(session, Subject, rows, {"created_at": now(), "num_studies": 0})


#: Columns of ``clinical_facts`` a fact's row gives as they are, then its times: the order of
#: the two statements below (spelled out, not formatted: they are SQL).
_FACT_VALUES = itemgetter("id", "project_id", "subject_id", "kind", "system", "code",
                          "display", "value_number", "value_text", "value_system", "unit",
                          "status", "detail")
_INSERT_FACTS_SQLITE = (
    'INSERT INTO clinical_facts (id, project_id, subject_id, kind, system, code, display, '
    'value_number, value_text, value_system, unit, status, detail, start, "end", imported_at) '
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
#: ``%b``: psycopg sends the arrays in binary (4 times faster than as text, which it escapes
#: element by element in Python).
_INSERT_FACTS_POSTGRESQL = (
    "WITH new AS (INSERT INTO clinical_facts (id, project_id, subject_id, kind, system, code, "
    'display, value_number, value_text, value_system, unit, status, detail, start, "end", '
    "imported_at) SELECT u.*, %b::timestamptz FROM unnest(%b::text[], %b::text[], %b::text[], "
    "%b::text[], %b::text[], %b::text[], %b::text[], %b::float8[], %b::text[], %b::text[], "
    "%b::text[], %b::text[], %b::text[], %b::timestamptz[], %b::timestamptz[]) AS u "
    "ON CONFLICT DO NOTHING RETURNING 1) SELECT count(*) FROM new"
)


def add_clinical_facts(session: Session, rows: Sequence[dict[str, Any]]) -> int:
    """Insert facts not there yet (by ID); how many were inserted.

    The import's hot path (20,000 FHIR resources a second, issue 6, decision 0025): rows go
    to the driver as tuples, without SQLAlchemy's per-row processing (30 µs a row, more than
    parsing the FHIR). SQLite: one ``executemany`` (its ``rowcount`` sums the rows
    inserted); times as SQLAlchemy's DateTime stores them, so they compare as every other
    write's. PostgreSQL: one ``INSERT ... SELECT FROM unnest(arrays)`` whose ``RETURNING``
    is counted (psycopg takes 85 ms to parse a 500-row multi-row ``VALUES``). Rows are written
    in ID order, one global order, so concurrent imports of overlapping batches wait for each
    other's row locks instead of deadlocking.
    """
    if not rows:
        return 0
    rows = sorted(rows, key=itemgetter("id"))
    conn = session.connection()
    dialect = conn.dialect
    if dialect.name == "postgresql":
        arrays = [list(column) for column in zip(*map(_FACT_VALUES, rows), strict=True)]
        arrays += [[r["start"] for r in rows], [r["end"] for r in rows]]
        return int(conn.exec_driver_sql(_INSERT_FACTS_POSTGRESQL, (now(), *arrays))
                   .scalar_one())
    to_db = _CLINICAL_FACTS.c.start.type.dialect_impl(dialect).bind_processor(dialect)
    assert to_db is not None
    stamp = to_db(now())
    params = [(*_FACT_VALUES(r), to_db(r["start"]), to_db(r["end"]), stamp) for r in rows]
    return int(conn.exec_driver_sql(_INSERT_FACTS_SQLITE, params).rowcount)


def study_subjects(session: Session, project_id: str, study_ids: Sequence[str],
                   accession_numbers: Sequence[str]) -> tuple[dict[str, str],
                                                              dict[str, list[tuple[str, str]]]]:
    """The project's studies among ``study_ids`` (ID -> subject) and with one of
    ``accession_numbers`` (number -> [(study ID, subject)])."""
    by_id: dict[str, str] = {}
    for chunk in _chunks(list(study_ids)):
        by_id.update((str(i), str(s)) for i, s in session.execute(
            select(Study.id, Study.subject_id).where(Study.id.in_(chunk),
                                                     Study.project_id == project_id)))
    by_accession: dict[str, list[tuple[str, str]]] = {}
    for chunk in _chunks(list(accession_numbers)):
        for i, s, number in session.execute(
                select(Study.id, Study.subject_id, Study.accession_number).where(
                    Study.project_id == project_id, Study.accession_number.in_(chunk))):
            by_accession.setdefault(str(number), []).append((str(i), str(s)))
    return by_id, by_accession


def add_study_links(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Links from ImagingStudy facts to studies (a fact's first link is kept)."""
    if rows:
        stmt = _insert(session, ClinicalStudyLink).on_conflict_do_nothing()
        for chunk in _chunks(list(rows)):
            session.execute(stmt, list(chunk))


def clinical_fact_counts(session: Session, project_id: str | None = None) -> dict[str, int]:
    stmt = select(ClinicalFact.kind, func.count()).group_by(ClinicalFact.kind)
    if project_id is not None:
        stmt = stmt.where(ClinicalFact.project_id == project_id)
    return {str(kind): int(n) for kind, n in session.execute(stmt)}


# -- clinical tables of a release (decision 0026) ------------------------------------------------
def project_subject_ids(session: Session, project_id: str) -> list[str]:
    """Every subject of a project, by ID."""
    return list(session.scalars(select(Subject.id).where(Subject.project_id == project_id)
                                .order_by(Subject.id)))


def release_subjects(session: Session, project_id: str, subject_ids: Sequence[str]
                     ) -> list[dict[str, Any]]:
    """Those of ``subject_ids`` in the project, in ID order, with what a release needs: the
    identifiers the pseudonym and the date shift derive from, sex, birth date, name."""
    # By primary key only, the project checked here: with both in the WHERE clause, SQLite
    # may walk the project's index, every subject of the project for each chunk.
    stmt = select(Subject.id, Subject.project_id, Subject.patient_id,
                  Subject.issuer_of_patient_id, Subject.patient_name,
                  Subject.patient_birth_date, Subject.patient_sex)
    rows: list[dict[str, Any]] = []
    for chunk in _chunks(list(subject_ids)):
        rows.extend(dict(r._mapping) for r in session.execute(stmt.where(
            Subject.id.in_(chunk))) if r.project_id == project_id)
    return sorted(rows, key=lambda r: str(r["id"]))


def release_facts(session: Session, subject_ids: Sequence[str]) -> list[tuple[Any, ...]]:
    """The clinical facts of ``subject_ids`` (subject, kind, system, code, display, value
    number, value text, value system, unit, start, end, status, and the StudyInstanceUID of
    an ImagingStudy's linked study when it is in the same project), by subject, time, ID."""
    rows: list[tuple[Any, ...]] = []
    f, link = ClinicalFact, ClinicalStudyLink
    for chunk in _chunks(sorted(subject_ids)):
        stmt = (select(f.subject_id, f.kind, f.system, f.code, f.display, f.value_number,
                       f.value_text, f.value_system, f.unit, f.start, f.end, f.status,
                       Study.study_instance_uid)
                .outerjoin(link, link.fact_id == f.id)
                .outerjoin(Study, (Study.id == link.study_id)
                           & (Study.project_id == f.project_id)
                           & (Study.subject_id == f.subject_id))
                .where(f.subject_id.in_(chunk))
                .order_by(f.subject_id, f.start.asc().nulls_last(), f.id))
        rows.extend(session.connection().execute(stmt).all())
    return rows
