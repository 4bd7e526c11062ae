"""Quarantine items in the index: one item by ID, items updated after a retry, removed on a
discard, and whether any row still names an object key (decisions 0004, 0030)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from imagebank.index.repo import _row
from imagebank.index.tables import Instance, QuarantineItem, Resource

#: The columns a retry refused again may change (the item keeps its ID, source and date).
RETRY_COLUMNS = ("reason", "message", "instance_id", "object_key")


def get_quarantine_item(session: Session, item_id: str) -> dict[str, Any] | None:
    item = session.get(QuarantineItem, item_id, populate_existing=True)
    return None if item is None else _row(item)


def update_quarantine_items(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Update retried items in place: each row has ``id`` and the new values of some of
    ``RETRY_COLUMNS`` (``object_key`` only when the bytes are now kept elsewhere)."""
    for row in rows:
        values = {c: row[c] for c in RETRY_COLUMNS if c in row}
        session.execute(update(QuarantineItem).where(QuarantineItem.id == row["id"])
                        .values(**values))


def claim_quarantine_items(session: Session, item_ids: Sequence[str]) -> set[str]:
    """Lock the rows of items being retried until the transaction ends (a no-op update: a
    row lock on PostgreSQL, where a concurrent discard waits or is waited for; the write lock
    on SQLite); the IDs of those already gone (discarded since they were read)."""
    gone: set[str] = set()
    for item_id in item_ids:
        result = session.execute(update(QuarantineItem).where(QuarantineItem.id == item_id)
                                 .values(reason=QuarantineItem.reason))
        if not result.rowcount:  # type: ignore[attr-defined]
            gone.add(item_id)
    return gone


def delete_quarantine_item(session: Session, item_id: str) -> bool:
    """Remove the item's row; whether there was one."""
    result = session.execute(delete(QuarantineItem).where(QuarantineItem.id == item_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def object_key_in_use(session: Session, object_key: str) -> bool:
    """Does any index row (an instance, a quarantine item, a resource) name ``object_key``?
    A quarantine item held at an instance's key shares it with that instance once archived."""
    for column in (Instance.object_key, QuarantineItem.object_key, Resource.object_key):
        count = session.scalar(select(func.count()).where(column == object_key))
        if count:
            return True
    return False
