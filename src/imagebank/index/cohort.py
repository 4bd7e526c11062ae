"""Cohort search in the index (issue 6, decision 0022): a ``domain.cohort.Query`` compiled to
SQLAlchemy Core for one project, the same on SQLite and PostgreSQL.

* A **clinical event** is a row of ``clinical_facts`` of its kind; its day is the UTC date of
  its start. An **imaging event** is a series with its study; its day is the study date, and
  the filters on acquisition parameters hold when any one instance of the series satisfies
  them all (``EXISTS``). Age at scan is whole years from the subject's birth date to the
  study date.
* Each part of the query is a ``SELECT`` of subject IDs: an event alone is the subjects that
  have one, a time relation joins its two events on the subject and compares their days, and
  ``and``/``or``/``not`` are ``INTERSECT``/``UNION``/``EXCEPT`` (the project's subjects
  ``EXCEPT`` for a ``not`` with nothing to subtract from). Every operand of a compound is
  wrapped in a subquery: SQLite allows no parentheses in a compound select and gives its
  operators one precedence. Sets, not ``IN``/``NOT IN`` per subject: PostgreSQL cannot turn
  ``NOT IN`` or an ``IN`` under ``OR`` into a join, and runs it per row once the IDs outgrow
  ``work_mem``.
* The matched studies and series are those of the positive (not negated) imaging events of
  the matched subjects, relations included; with no positive imaging event, all of the
  matched subjects' series.
* Days: ``julianday`` on SQLite; on PostgreSQL a date, the study's built from its first of the
  month plus its day so that a malformed StudyDate is a NULL or a near day, never an error.
  An event without a day never satisfies a time relation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast

from sqlalchemy import (
    Date,
    Integer,
    Select,
    String,
    Table,
    and_,
    case,
    distinct,
    except_,
    exists,
    func,
    intersect,
    literal,
    not_,
    or_,
    select,
    union,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import FromClause

from imagebank.domain.cohort import (
    INSTANCE_FIELDS,
    And,
    Code,
    CodeMatch,
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
    Value,
    fields_of,
)
from imagebank.index.tables import (
    ClinicalFact,
    CodeRelation,
    Instance,
    Series,
    Study,
    Subject,
)

FACTS = cast(Table, ClinicalFact.__table__)
RELATIONS = cast(Table, CodeRelation.__table__)
SUBJECTS = cast(Table, Subject.__table__)
STUDIES = cast(Table, Study.__table__)
SERIES = cast(Table, Series.__table__)
INSTANCES = cast(Table, Instance.__table__)

#: Imaging fields: (table, column); the table is "series", "study" or "instance".
_IMAGING_COLUMNS = {
    "modality": ("series", "modality"),
    "body_part": ("series", "body_part_examined"),
    "study_description": ("study", "study_description"),
    "series_description": ("series", "series_description"),
    "protocol": ("series", "protocol_name"),
    "manufacturer": ("series", "manufacturer"),
    "model": ("series", "manufacturer_model_name"),
    "field_strength": ("series", "magnetic_field_strength"),
    "date": ("study", "study_date"),
    **{name: ("instance", name) for name in INSTANCE_FIELDS},
}
#: Canonical sex -> the values it is stored as (DICOM PatientSex; FHIR gender), uppercased.
_SEX_VALUES = {
    "M": ("M", "MALE"),
    "F": ("F", "FEMALE"),
    "O": ("O", "OTHER"),
    "U": ("U", "UNKNOWN"),
}


@dataclass(frozen=True)
class CohortStatements:
    """A compiled query: ``subjects`` selects the matching subject IDs (``subject_id``,
    each once); ``series`` selects (``subject_id``, ``study_id``, ``series_id``) of the
    matched imaging events (a series may come more than once: count it DISTINCT)."""

    subjects: Select[Any]
    series: Select[Any]


@dataclass
class _Source:
    """An event's rows: its FROM (tables joined), conditions, and its subject, day, study
    and series columns (the last two for an imaging event only)."""

    froms: FromClause
    where: list[ColumnElement[bool]]
    subject: ColumnElement[Any]
    day: ColumnElement[Any]
    study: ColumnElement[Any] | None = None
    series: ColumnElement[Any] | None = None


def compile_query(query: Query, project_id: str, dialect: str, *,
                  exclude: Select[Any] | None = None) -> CohortStatements:
    """Compile ``query`` for ``project_id`` on ``dialect`` ("sqlite" or "postgresql").
    ``exclude`` selects subject IDs kept out of every result (withdrawn patients)."""
    return _Compiler(project_id, dialect).statements(query, exclude)


class _Compiler:
    def __init__(self, project_id: str, dialect: str) -> None:
        self.project_id = project_id
        self.postgres = dialect == "postgresql"

    # -- the whole query --------------------------------------------------------------------
    def statements(self, query: Query, exclude: Select[Any] | None) -> CohortStatements:
        found = self.subjects(query.root)
        if exclude is not None:
            found = _wrap(except_(found, exclude))
        inner = found.subquery("found")
        # One CTE that both statements read: counted together, the subjects are found once.
        matched = (select(inner.c.subject_id.label("subject_id")).distinct()
                   .cte("cohort_subjects").prefix_with("MATERIALIZED"))
        return CohortStatements(select(matched.c.subject_id),
                                self.series(query.root, matched))

    def universe(self) -> Select[Any]:
        return select(SUBJECTS.c.id.label("subject_id")).where(
            SUBJECTS.c.project_id == self.project_id)

    def subjects(self, expr: Expr) -> Select[Any]:
        """SELECT subject_id of the subjects satisfying ``expr`` (possibly repeated)."""
        if isinstance(expr, Has):
            source = self.source(expr.event)
            return (select(source.subject.label("subject_id")).select_from(source.froms)
                    .where(*source.where))
        if isinstance(expr, Related):
            first, second = self.source(expr.first), self.source(expr.second)
            return (select(first.subject.label("subject_id"))
                    .select_from(_joined(first, second))
                    .where(*first.where, *second.where,
                           _timing(first.day, second.day, expr.timing)))
        if isinstance(expr, Sex):
            return self.universe().where(self.sex(expr))
        if isinstance(expr, Not):
            return _wrap(except_(self.universe(), self.subjects(expr.operand)))
        if isinstance(expr, Or):
            return _wrap(union(*(self.subjects(o) for o in expr.operands)))
        # And: intersect what must hold, then take away what must not.
        positives = [self.subjects(o) for o in expr.operands if not isinstance(o, Not)]
        negatives = [self.subjects(o.operand) for o in expr.operands if isinstance(o, Not)]
        if not positives:
            result = self.universe()
        elif len(positives) == 1:
            result = positives[0]
        else:
            result = _wrap(intersect(*positives))
        for negative in negatives:
            result = _wrap(except_(result, negative))
        return result

    def sex(self, expr: Sex) -> ColumnElement[bool]:
        stored = [v for value in expr.values for v in _SEX_VALUES[value]]
        clause = func.upper(SUBJECTS.c.patient_sex).in_(stored)
        return not_(clause) if expr.op is Op.NE else clause

    # -- matched studies and series ---------------------------------------------------------
    def series(self, root: Expr, matched: Any) -> Select[Any]:
        parts = [self.imaging_part(source, partner, timing, matched)
                 for source, partner, timing in self.positive_imaging(root, True)]
        if not parts:
            study, serie = STUDIES.alias("st"), SERIES.alias("se")
            parts = [select(study.c.subject_id.label("subject_id"),
                            study.c.id.label("study_id"), serie.c.id.label("series_id"))
                     .select_from(serie.join(study, serie.c.study_id == study.c.id))
                     .where(study.c.project_id == self.project_id,
                            study.c.subject_id.in_(select(matched.c.subject_id)))]
        if len(parts) == 1:
            return parts[0]  # repeats are harmless: the hits are counted DISTINCT
        return _wrap(union(*parts), "subject_id", "study_id", "series_id")

    def positive_imaging(self, expr: Expr, positive: bool
                         ) -> list[tuple[_Source, _Source | None, Timing | None]]:
        """Each positive imaging event's source, with its partner and timing in a relation
        (the partner's source is built afresh, so both sides can be imaging)."""
        found: list[tuple[_Source, _Source | None, Timing | None]] = []
        if isinstance(expr, Not):
            return self.positive_imaging(expr.operand, not positive)
        if isinstance(expr, And | Or):
            for operand in expr.operands:
                found.extend(self.positive_imaging(operand, positive))
            return found
        if not positive:
            return found
        if isinstance(expr, Has) and expr.event.kind is EventKind.IMAGING:
            found.append((self.source(expr.event), None, None))
        elif isinstance(expr, Related):
            if expr.first.kind is EventKind.IMAGING:
                found.append((self.source(expr.first), self.source(expr.second), expr.timing))
            if expr.second.kind is EventKind.IMAGING:
                # The mirror image: the second event seen from the first.
                first = self.source(expr.first)
                found.append((self.source(expr.second), first, _mirror(expr.timing)))
        return found

    def imaging_part(self, source: _Source, partner: _Source | None, timing: Timing | None,
                     matched: Any) -> Select[Any]:
        assert source.study is not None and source.series is not None
        stmt = select(source.subject.label("subject_id"), source.study.label("study_id"),
                      source.series.label("series_id"))
        where = [*source.where, source.subject.in_(select(matched.c.subject_id))]
        if partner is None or timing is None:
            return stmt.select_from(source.froms).where(*where)
        return (stmt.select_from(_joined(source, partner))
                .where(*where, *partner.where, _timing(source.day, partner.day, timing)))

    # -- events -----------------------------------------------------------------------------
    def source(self, event: Event) -> _Source:
        if event.kind is EventKind.IMAGING:
            return self.imaging(event)
        fact = FACTS.alias()
        where: list[ColumnElement[bool]] = [fact.c.project_id == self.project_id,
                                            fact.c.kind == event.kind.value]
        for item in event.filters:
            where.append(self.clinical_filter(fact, item))
        return _Source(fact, where, fact.c.subject_id, self.fact_day(fact.c.start))

    def clinical_filter(self, fact: Any, item: Filter) -> ColumnElement[bool]:
        field_type = fields_of(EventKind.CONDITION)[item.field]
        if item.field == "code" or (item.field == "value" and isinstance(item.values[0], Code)):
            system, code = ((fact.c.system, fact.c.code) if item.field == "code"
                            else (fact.c.value_system, fact.c.value_text))
            matches = or_(*(self.code(system, code, cast(Code, v)) for v in item.values))
            return not_(matches) if item.op is Op.NE else matches
        if item.field == "value":
            return _compare(fact.c.value_number, item)
        if item.field == "date":
            return _fact_dates(fact.c.start, item)
        return _text(fact.c[item.field], item, exact=field_type is FieldType.EXACT)

    def code(self, system: Any, column: Any, code: Code) -> ColumnElement[bool]:
        if code.match is CodeMatch.EXACT:
            return and_(system == code.system, column == code.code)
        if code.match is CodeMatch.PREFIX:
            return and_(system == code.system, self.prefix(column, code.code))
        # the code and every code below it: a recursive walk down the is-a edges
        relation = RELATIONS.alias()
        base = select(sql_cast(literal(code.code), String(255)).label("code")).cte(
            recursive=True)
        tree = base.union(select(relation.c.child).where(
            relation.c.system == code.system, relation.c.parent == base.c.code))
        return and_(system == code.system, column.in_(select(tree.c.code)))

    def prefix(self, column: Any, prefix: str) -> ColumnElement[bool]:
        """Codes that start with ``prefix``: on SQLite a range of the code index (its BINARY
        collation is byte order); on PostgreSQL a LIKE, which the index's text_pattern_ops
        turns into a range whatever the database's collation (a linguistic one may order
        punctuation out of byte order, and a range of its own would miss codes)."""
        if self.postgres:
            return cast(ColumnElement[bool], column.like(_escape_like(prefix) + "%",
                                                         escape="\\"))
        last = ord(prefix[-1])
        if last >= 0x10FFFF:
            return func.substr(column, 1, len(prefix)) == prefix
        return and_(column >= prefix, column < prefix[:-1] + chr(last + 1))

    def imaging(self, event: Event) -> _Source:
        serie, study = SERIES.alias(), STUDIES.alias()
        froms: FromClause = serie.join(study, serie.c.study_id == study.c.id)
        where: list[ColumnElement[bool]] = [serie.c.project_id == self.project_id]
        on_instances: list[ColumnElement[bool]] = []
        instance = INSTANCES.alias()
        tables = {"series": serie, "study": study, "instance": instance}
        for item in event.filters:
            if item.field == "age":
                subject = SUBJECTS.alias()
                froms = froms.join(subject, subject.c.id == study.c.subject_id)
                where.append(_compare(self.age(study.c.study_date,
                                               subject.c.patient_birth_date), item))
                continue
            table, column_name = _IMAGING_COLUMNS[item.field]
            column = tables[table].c[column_name]
            field_type = fields_of(EventKind.IMAGING)[item.field]
            if field_type is FieldType.TEXT:
                clause = _text(column, item, exact=False)
            elif field_type is FieldType.DATE:
                clause = and_(self.is_yyyymmdd(column), _compare(column, item, _dicom_date))
            else:
                clause = _compare(column, item)
            (on_instances if table == "instance" else where).append(clause)
        if on_instances:
            where.append(exists(select(literal(1)).select_from(instance).where(
                instance.c.series_id == serie.c.id, *on_instances)))
        return _Source(froms, where, study.c.subject_id, self.study_day(study.c.study_date),
                       study.c.id, serie.c.id)

    # -- days and ages ----------------------------------------------------------------------
    def is_yyyymmdd(self, column: Any) -> ColumnElement[bool]:
        if self.postgres:
            return cast(ColumnElement[bool], column.regexp_match("^[0-9]{8}$"))
        return cast(ColumnElement[bool], column.op("GLOB")("[0-9]" * 8))

    def fact_day(self, start: Any) -> ColumnElement[Any]:
        if self.postgres:
            return sql_cast(func.timezone("UTC", start), Date())
        return func.julianday(func.substr(start, 1, 10))

    def study_day(self, study_date: Any) -> ColumnElement[Any]:
        if self.postgres:
            first = func.to_date(_substr(study_date, 1, 6) + "01", "YYYYMMDD")
            plus = sql_cast(func.substr(study_date, 7, 2), Integer) - 1
            valid = study_date.regexp_match("^[1-9][0-9]{3}(0[1-9]|1[0-2])[0-9]{2}$")
            return case((valid, first + plus), else_=None)
        return func.julianday(_substr(study_date, 1, 4) + "-" + _substr(study_date, 5, 2)
                              + "-" + _substr(study_date, 7, 2))

    def age(self, study_date: Any, birth_date: Any) -> ColumnElement[Any]:
        """Whole years from the birth date to the study date (both YYYYMMDD), else NULL."""
        years = (sql_cast(func.substr(study_date, 1, 4), Integer)
                 - sql_cast(func.substr(birth_date, 1, 4), Integer)
                 - case((func.substr(study_date, 5, 4) < func.substr(birth_date, 5, 4), 1),
                        else_=0))
        return case((and_(self.is_yyyymmdd(study_date), self.is_yyyymmdd(birth_date)), years),
                    else_=None)


def _substr(column: Any, start: int, length: int) -> ColumnElement[str]:
    return func.substr(column, start, length, type_=String())


def _wrap(compound: Any, *names: str) -> Select[Any]:
    """A compound select as a plain SELECT of its columns (a subquery)."""
    inner = compound.subquery()
    columns = names or ("subject_id",)
    return select(*(inner.c[name].label(name) for name in columns))


def _joined(first: _Source, second: _Source) -> FromClause:
    return first.froms.join(second.froms, first.subject == second.subject)


def _mirror(timing: Timing) -> Timing:
    """The same relation seen from the other event (before <-> after)."""
    flip = {Direction.BEFORE: Direction.AFTER, Direction.AFTER: Direction.BEFORE,
            Direction.OF: Direction.OF}
    return Timing(flip[timing.direction], timing.amount, timing.unit)


def _timing(first: Any, second: Any, timing: Timing) -> ColumnElement[bool]:
    """``first <timing> second`` in days: within N before is 0 <= second - first <= N."""
    gap = second - first
    days = timing.days
    if days is None:
        clause = gap > 0 if timing.direction is Direction.BEFORE else gap < 0
    elif timing.direction is Direction.BEFORE:
        clause = gap.between(0, days)
    elif timing.direction is Direction.AFTER:
        clause = gap.between(-days, 0)
    else:
        clause = gap.between(-days, days)
    return cast(ColumnElement[bool], clause)


def _compare(column: Any, item: Filter, convert: Any = None) -> ColumnElement[bool]:
    values = [convert(v) if convert else v for v in item.values]
    if item.op is Op.IN:
        return cast(ColumnElement[bool], column.in_(values))
    if item.op is Op.BETWEEN:
        return cast(ColumnElement[bool], column.between(values[0], values[1]))
    operators = {Op.EQ: "__eq__", Op.NE: "__ne__", Op.LT: "__lt__", Op.LE: "__le__",
                 Op.GT: "__gt__", Op.GE: "__ge__"}
    return cast(ColumnElement[bool], getattr(column, operators[item.op])(values[0]))


def _dicom_date(value: Value) -> str:
    assert isinstance(value, date)
    return value.strftime("%Y%m%d")


def _fact_dates(start: Any, item: Filter) -> ColumnElement[bool]:
    """A fact's date (the UTC day of its start) against days: ranges of its start."""

    def first(day: Value) -> datetime:
        assert isinstance(day, date)
        return datetime.combine(day, time(), UTC)

    def after(day: Value) -> datetime:
        return first(day) + timedelta(days=1)

    values = item.values
    if item.op is Op.IN:
        return or_(*(and_(start >= first(v), start < after(v)) for v in values))
    if item.op is Op.BETWEEN:
        return and_(start >= first(values[0]), start < after(values[1]))
    day = values[0]
    clauses: dict[Op, ColumnElement[bool]] = {
        Op.EQ: and_(start >= first(day), start < after(day)),
        Op.NE: or_(start < first(day), start >= after(day)),
        Op.LT: start < first(day),
        Op.LE: start < after(day),
        Op.GT: start >= after(day),
        Op.GE: start >= first(day),
    }
    return clauses[item.op]


def _text(column: Any, item: Filter, *, exact: bool) -> ColumnElement[bool]:
    """Text: exactly, or case-insensitively with ``*`` as a wildcard."""
    if exact:
        matches = column.in_([str(v) for v in item.values])
    else:
        matches = or_(*(_like(column, str(v)) for v in item.values))
    if item.op is Op.NE:  # other than these: a value must be there (an empty one is none)
        return and_(column != "", not_(matches))
    return cast(ColumnElement[bool], matches)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _like(column: Any, value: str) -> ColumnElement[bool]:
    lowered = func.lower(column)
    if "*" not in value:
        return lowered == func.lower(literal(value))
    pattern = _escape_like(value).replace("*", "%")
    return cast(ColumnElement[bool], lowered.like(func.lower(literal(pattern)), escape="\\"))


# -- running it ----------------------------------------------------------------------------
def count_cohort(session: Session, statements: CohortStatements) -> tuple[int, int, int]:
    """(people, studies, series) of a compiled query, in one statement."""
    people = select(func.count()).select_from(statements.subjects.subquery("people"))
    hits = statements.series.subquery("hits")
    hit_counts = select(func.count(distinct(hits.c.study_id)).label("studies"),
                        func.count(distinct(hits.c.series_id)).label("series")
                        ).subquery("hit_counts")  # one row: the hits are found once
    stmt = select(people.scalar_subquery(), hit_counts.c.studies, hit_counts.c.series)
    row = session.execute(stmt).one()
    return int(row[0]), int(row[1]), int(row[2])


def list_cohort_subjects(session: Session, statements: CohortStatements, *,
                         limit: int | None = None) -> list[str]:
    """The subject IDs of a compiled query in ID order (all of them without ``limit``)."""
    people = statements.subjects.subquery("people")
    stmt = select(people.c.subject_id).order_by(people.c.subject_id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [str(s) for s in session.execute(stmt).scalars()]


@dataclass(frozen=True)
class CohortRows:
    """Counts of a compiled query and the first ``limit`` IDs of each level, in ID order."""

    people: int
    studies: int
    series: int
    subject_ids: list[str]
    study_rows: list[dict[str, Any]]
    series_rows: list[dict[str, Any]]


def run_cohort(session: Session, statements: CohortStatements, *, limit: int) -> CohortRows:
    """Counts and the first ``limit`` subjects, studies and series in ONE statement: the
    subjects and the imaging hits are each found once (materialised), then counted and
    listed (as JSON arrays, so one row carries them), where separate statements would find
    them again for every list."""
    postgres = session.get_bind().dialect.name == "postgresql"
    agg = func.json_agg if postgres else func.json_group_array
    obj = func.json_build_object if postgres else func.json_object
    people = statements.subjects.cte("people")
    hits = statements.series.cte("hits").prefix_with("MATERIALIZED")
    first_people = (select(people.c.subject_id).order_by(people.c.subject_id).limit(limit)
                    .subquery("first_people"))
    first_studies = (select(STUDIES.c.id, STUDIES.c.subject_id, STUDIES.c.study_instance_uid,
                            STUDIES.c.study_date, STUDIES.c.modalities_in_study)
                     .where(STUDIES.c.id.in_(select(hits.c.study_id)))
                     .order_by(STUDIES.c.id).limit(limit).subquery("first_studies"))
    first_series = (select(SERIES.c.id, SERIES.c.study_id, SERIES.c.series_instance_uid,
                           SERIES.c.modality)
                    .where(SERIES.c.id.in_(select(hits.c.series_id)))
                    .order_by(SERIES.c.id).limit(limit).subquery("first_series"))

    def listed(sub: Any) -> Any:
        pairs = [part for c in sub.c for part in (literal(c.name, String), c)]
        return select(agg(obj(*pairs))).select_from(sub).scalar_subquery()

    stmt = select(
        select(func.count()).select_from(people).scalar_subquery(),
        select(func.count(distinct(hits.c.study_id))).scalar_subquery(),
        select(func.count(distinct(hits.c.series_id))).scalar_subquery(),
        select(agg(first_people.c.subject_id)).select_from(first_people).scalar_subquery(),
        listed(first_studies), listed(first_series))
    row = session.execute(stmt).one()

    def rows(value: Any) -> list[Any]:
        found = json.loads(value) if isinstance(value, str) else (value or [])
        return found

    studies = sorted(rows(row[4]), key=lambda r: str(r["id"]))
    series = sorted(rows(row[5]), key=lambda r: str(r["id"]))
    return CohortRows(int(row[0]), int(row[1]), int(row[2]),
                      sorted(str(s) for s in rows(row[3])), studies, series)


def list_cohort(session: Session, statements: CohortStatements, *, limit: int
                ) -> tuple[list[str], list[dict[str, Any]], list[dict[str, Any]]]:
    """Up to ``limit`` subject IDs, studies and series of a compiled query, in ID order.
    Studies carry their subject, StudyInstanceUID, date and modalities; series their study,
    SeriesInstanceUID and modality. Nothing that names the patient."""
    subjects = list_cohort_subjects(session, statements, limit=limit)
    hits = statements.series.subquery("hits")
    study_ids = select(hits.c.study_id)
    studies = [dict(r._mapping) for r in session.execute(
        select(STUDIES.c.id, STUDIES.c.subject_id, STUDIES.c.study_instance_uid,
               STUDIES.c.study_date, STUDIES.c.modalities_in_study)
        .where(STUDIES.c.id.in_(study_ids)).order_by(STUDIES.c.id).limit(limit))]
    series = [dict(r._mapping) for r in session.execute(
        select(SERIES.c.id, SERIES.c.study_id, SERIES.c.series_instance_uid,
               SERIES.c.modality)
        .where(SERIES.c.id.in_(select(hits.c.series_id))).order_by(SERIES.c.id)
        .limit(limit))]
    return subjects, studies, series
