"""SQL for the audit trail: append a sealed batch under the chain's lock, read it back."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, cast

from sqlalchemy import Connection, Table, func, insert, select, update
from sqlalchemy.orm import Session

from imagebank.index.repo import _row
from imagebank.index.tables import AuditEvent, AuditHead

Sealer = Callable[[int, str], tuple[int, str]]


_HEAD = cast(Table, AuditHead.__table__)
_EVENTS = cast(Table, AuditEvent.__table__)
#: Takes the write lock (SQLite) or the row lock (PostgreSQL) and reads the head in one
#: statement: writers in other processes queue behind it.
_LOCK_HEAD = (update(_HEAD).where(_HEAD.c.id == 1).values(seq=_HEAD.c.seq)
              .returning(_HEAD.c.seq, _HEAD.c.hash))
_SET_HEAD = update(_HEAD).where(_HEAD.c.id == 1)


def append(connection: Connection, rows: list[dict[str, Any]], seal: Sealer) -> None:
    """Lock the chain head, let ``seal`` number and hash ``rows`` after it, insert them (in
    the connection's transaction; Core statements: this runs once per audited request)."""
    head = connection.execute(_LOCK_HEAD).first()
    if head is None:  # the head row was deleted: the chain cannot be extended safely
        raise RuntimeError("the audit chain head row is missing")
    seq, digest = seal(int(head[0]), head[1])
    connection.execute(insert(_EVENTS), rows)
    connection.execute(_SET_HEAD.values(seq=seq, hash=digest))


def head(session: Session) -> tuple[int, str] | None:
    """The chain's head (seq, hash); None when its record is gone (it was deleted)."""
    row = session.get(AuditHead, 1)
    return None if row is None else (int(row.seq), row.hash)


def last_seq(session: Session) -> int:
    return int(session.scalar(select(func.coalesce(func.max(AuditEvent.seq), 0))) or 0)


def iter_events(session: Session, upto: int, batch: int = 5000) -> Iterator[dict[str, Any]]:
    """Events up to ``upto`` (the head read before: later ones may be committing now)."""
    last = 0
    while True:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.seq > last, AuditEvent.seq <= upto)
            .order_by(AuditEvent.seq)
            .limit(batch)
        ).all()
        if not rows:
            return
        for row in rows:
            yield _row(row)
        last = rows[-1].seq


def list_events(session: Session, *, project_id: str | None = None,
                actor_id: str | None = None, since: int = 0, limit: int = 100,
                before: int | None = None, actor: str | None = None,
                action: str | None = None, outcome: str | None = None,
                at_from: str | None = None, at_to: str | None = None,
                newest_first: bool = False) -> list[dict[str, Any]]:
    """Events with ``since < seq < before``, of the project, actor (ID or name), action and
    outcome given, at ``at_from <= at < at_to`` (UTC ISO texts, as stored), oldest first
    or newest first."""
    stmt = select(AuditEvent).where(AuditEvent.seq > since)
    for column, value in ((AuditEvent.project_id, project_id),
                          (AuditEvent.actor_id, actor_id), (AuditEvent.actor, actor),
                          (AuditEvent.action, action), (AuditEvent.outcome, outcome)):
        if value is not None:
            stmt = stmt.where(column == value)
    if before is not None:
        stmt = stmt.where(AuditEvent.seq < before)
    if at_from is not None:
        stmt = stmt.where(AuditEvent.at >= at_from)
    if at_to is not None:
        stmt = stmt.where(AuditEvent.at < at_to)
    order = AuditEvent.seq.desc() if newest_first else AuditEvent.seq
    return [_row(e) for e in session.scalars(stmt.order_by(order).limit(limit))]
