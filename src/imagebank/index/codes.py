"""The is-a edges of code systems (``code_relations``, decision 0022): what a cohort query's
``SYSTEM:<<CODE`` walks down. The edges are the archive's, not a project's."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, cast

from sqlalchemy import Table, delete, func, select, tuple_
from sqlalchemy.orm import Session

from imagebank.index.tables import CodeRelation

RELATIONS = cast(Table, CodeRelation.__table__)
#: Edges written per statement.
CHUNK = 2000


def _chunks(pairs: Iterable[tuple[str, str]]) -> Iterator[list[tuple[str, str]]]:
    chunk: list[tuple[str, str]] = []
    for pair in pairs:
        chunk.append(pair)
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def add_code_relations(session: Session, system: str, pairs: Iterable[tuple[str, str]]
                       ) -> int:
    """Add (child, parent) edges of ``system`` not there yet; how many were added."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    stmt: Any = insert(RELATIONS).on_conflict_do_nothing().returning(RELATIONS.c.child)
    added = 0
    for chunk in _chunks(sorted(pairs)):
        rows = [{"system": system, "child": child, "parent": parent} for child, parent in chunk]
        added += len(session.scalars(stmt, rows).all())
    return added


def remove_code_relations(session: Session, system: str, pairs: Iterable[tuple[str, str]]
                          ) -> int:
    """Remove (child, parent) edges of ``system``; how many there were."""
    removed = 0
    for chunk in _chunks(sorted(pairs)):
        result = session.execute(delete(RELATIONS).where(
            RELATIONS.c.system == system,
            tuple_(RELATIONS.c.child, RELATIONS.c.parent).in_(chunk)).returning(
            RELATIONS.c.child))
        removed += len(result.all())
    return removed


def count_code_relations(session: Session) -> dict[str, int]:
    """Edges per code system."""
    stmt = select(RELATIONS.c.system, func.count()).group_by(RELATIONS.c.system)
    return {str(system): int(n) for system, n in session.execute(stmt)}
