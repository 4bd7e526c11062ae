"""Hierarchical queries of the index: C-FIND and QIDO-RS at every level, and the instances a
retrieve (WADO-RS, C-MOVE, C-GET) sends.

A query names a level (patient, study, series, instance) and conditions on attributes of that
level or any level above it (``domain.matching``). Conditions above the query's level are
pushed into ``IN (SELECT id ...)`` subqueries, so that each runs on its own table's index
first (the planner of SQLite has no statistics to pick that order by itself). Each result is a
dict per level ("subject", "study", "series", "instance") of the rows it belongs to.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from imagebank.domain.matching import Condition
from imagebank.domain.model import Level
from imagebank.index.matching import condition_clause
from imagebank.index.repo import CHUNK
from imagebank.index.tables import Base, Instance, Series, Study, Subject

_MODEL: dict[Level, type[Base]] = {
    Level.SUBJECT: Subject,
    Level.STUDY: Study,
    Level.SERIES: Series,
    Level.INSTANCE: Instance,
}
_ORDER = (Level.SUBJECT, Level.STUDY, Level.SERIES, Level.INSTANCE)


def _ids_where(level: Level, conditions: Sequence[Condition],
               project_ids: Sequence[str] | None = None) -> Any:
    """SELECT id FROM level's table WHERE all of ``conditions`` (all at ``level``), in the
    projects ``project_ids`` when given."""
    model: Any = _MODEL[level]
    stmt = select(model.id)
    if project_ids is not None:
        stmt = stmt.where(model.project_id.in_(list(project_ids)))
    for condition in conditions:
        stmt = stmt.where(condition_clause(condition, getattr(model, condition.column)))
    return stmt


def _modalities_clause(level: Level, modalities: Sequence[str]) -> Any:
    """ModalitiesInStudy: the study has at least one series of any of ``modalities``."""
    studies = select(Series.study_id).where(Series.modality.in_(list(modalities)))
    if level is Level.SUBJECT:
        return Subject.id.in_(select(Study.subject_id).where(Study.id.in_(studies)))
    model: Any = _MODEL[level]
    column = Study.id if level is Level.STUDY else model.study_id
    return column.in_(studies)


def _parent_column(level: Level, parent: Level) -> Any:
    """The column of ``level``'s table that holds the ID of its ``parent`` level's row."""
    model: Any = _MODEL[level]
    if parent is Level.SUBJECT:
        return Study.subject_id if level is Level.STUDY else None
    return getattr(model, f"{parent.value}_id")


@functools.cache
def _columns(level: Level, with_metadata: bool) -> tuple[tuple[str, str, Any], ...]:
    """(level name, column key, column) of every column a search at ``level`` returns: its
    table's, then each ancestor's; an instance's stored header only ``with_metadata``."""
    found = []
    for at in (level, *reversed(_ORDER[:_ORDER.index(level)])):
        table: Any = _MODEL[at].__table__
        for column in table.columns:
            if column.key == "metadata_json" and not with_metadata:
                continue
            found.append((at.value, column.key, column))
    return tuple(found)


def _statement(level: Level, conditions: Sequence[Condition], project_ids: Sequence[str] | None,
               modalities: Sequence[str] | None, with_metadata: bool) -> Select[Any]:
    model: Any = _MODEL[level]
    depth = _ORDER.index(level)
    # Columns, not ORM entities: a search runs on every QIDO-RS request and C-FIND, and
    # loading entities costs more than the query on a small result.
    stmt = select(*(column for _, _, column in _columns(level, with_metadata)))
    # Join the levels above: instance → series → study → subject.
    child: Any = model
    for parent in reversed(_ORDER[:depth]):
        parent_model: Any = _MODEL[parent]
        link = child.subject_id if parent is Level.SUBJECT else getattr(child,
                                                                         f"{parent.value}_id")
        stmt = stmt.join(parent_model, parent_model.id == link)
        child = parent_model
    by_level: dict[Level, list[Condition]] = {}
    for condition in conditions:
        by_level.setdefault(condition.level, []).append(condition)
    # The projects are filtered on the highest level that has conditions: a row belongs to
    # its parent's project, and a filter on the query's own table would tempt SQLite into
    # walking that table's (project_id, date) index instead of the selective subquery.
    above = [at for at in _ORDER[:depth] if at in by_level]
    scope_at = above[0] if above else level
    if project_ids is not None and scope_at is level:
        stmt = stmt.where(model.project_id.in_(list(project_ids)))
    for at, found in by_level.items():
        if _ORDER.index(at) > depth:
            raise ValueError(f"{found[0].keyword} is below the {level.value} level")
        scope = project_ids if at is scope_at else None
        if at is level:
            for condition in found:
                stmt = stmt.where(condition_clause(condition, getattr(model,
                                                                      condition.column)))
            continue
        # A condition on a level above: restrict the nearest link to that level's matches.
        if at is Level.SUBJECT and level is not Level.STUDY:
            ids = select(Study.id).where(Study.subject_id.in_(_ids_where(at, found, scope)))
            stmt = stmt.where(model.study_id.in_(ids))
        else:
            stmt = stmt.where(_parent_column(level, at).in_(_ids_where(at, found, scope)))
    if modalities:
        stmt = stmt.where(_modalities_clause(level, modalities))
    return stmt


def _ordered(stmt: Select[Any], level: Level) -> Select[Any]:
    if level is Level.SUBJECT:
        return stmt.order_by(Subject.patient_id, Subject.id)
    if level is Level.STUDY:
        return stmt.order_by(Study.study_date.desc(), Study.study_time.desc(), Study.id)
    if level is Level.SERIES:
        return stmt.order_by(Series.study_id, Series.series_number, Series.id)
    return stmt.order_by(Instance.series_id, Instance.instance_number, Instance.id)


def find(session: Session, level: Level, conditions: Sequence[Condition] = (), *,
         project_ids: Sequence[str] | None = None, modalities: Sequence[str] | None = None,
         limit: int | None = None, offset: int = 0, with_metadata: bool = False
         ) -> list[dict[str, dict[str, Any]]]:
    """The rows at ``level`` matching every condition, each with its ancestors' rows, in a
    stable order (patients by ID; studies newest first; series and instances by number)."""
    results: list[dict[str, dict[str, Any]]] = []
    for batch in iter_find(session, level, conditions, project_ids=project_ids,
                           modalities=modalities, limit=limit, offset=offset,
                           with_metadata=with_metadata):
        results.extend(batch)
    return results


def iter_find(session: Session, level: Level, conditions: Sequence[Condition] = (), *,
              project_ids: Sequence[str] | None = None,
              modalities: Sequence[str] | None = None, limit: int | None = None,
              offset: int = 0, with_metadata: bool = False, batch: int = CHUNK
              ) -> Iterator[list[dict[str, dict[str, Any]]]]:
    """As ``find``, in batches of ``batch`` rows from one query whose result is streamed
    (C-FIND over a million matches holds one batch at a time, with no OFFSET rescans)."""
    stmt = _ordered(_statement(level, conditions, project_ids, modalities, with_metadata),
                    level)
    if offset:
        stmt = stmt.offset(offset)
    if limit is not None:
        stmt = stmt.limit(limit)
    columns = _columns(level, with_metadata)
    names = sorted({name for name, _, _ in columns})
    result = session.execute(stmt.execution_options(yield_per=batch))
    for rows in result.partitions(batch):
        results = []
        for row in rows:
            found: dict[str, dict[str, Any]] = {name: {} for name in names}
            for (name, key, _), value in zip(columns, row, strict=True):
                found[name][key] = value
            results.append(found)
        if level is Level.SUBJECT:
            _add_subject_counts(session, results)
        yield results


def _add_subject_counts(session: Session, results: list[dict[str, dict[str, Any]]]) -> None:
    ids = [r["subject"]["id"] for r in results]
    counts: dict[str, tuple[int, int]] = {}
    for start in range(0, len(ids), CHUNK):
        stmt = (select(Study.subject_id, func.coalesce(func.sum(Study.num_series), 0),
                       func.coalesce(func.sum(Study.num_instances), 0))
                .where(Study.subject_id.in_(ids[start:start + CHUNK]))
                .group_by(Study.subject_id))
        for subject_id, series, instances in session.execute(stmt):
            counts[subject_id] = (int(series), int(instances))
    for result in results:
        subject = result["subject"]
        subject["num_series"], subject["num_instances"] = counts.get(subject["id"], (0, 0))


def first_instance_metadata(session: Session, level: Level, ids: Sequence[str]
                            ) -> dict[str, str]:
    """The DICOM JSON header of one instance (the lowest-numbered) of each study or series."""
    column: Any = Instance.study_id if level is Level.STUDY else Instance.series_id
    found: dict[str, str] = {}
    for start in range(0, len(ids), CHUNK):
        chunk = list(ids[start:start + CHUNK])
        ranked = (select(column.label("parent"), Instance.metadata_json,
                         func.row_number().over(partition_by=column,
                                                order_by=(Instance.instance_number,
                                                          Instance.id)).label("rank"))
                  .where(column.in_(chunk)).subquery())
        stmt = select(ranked.c.parent, ranked.c.metadata_json).where(ranked.c.rank == 1)
        found.update({parent: text for parent, text in session.execute(stmt)})
    return found
