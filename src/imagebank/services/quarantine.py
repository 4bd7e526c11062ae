"""Quarantine items: listed, retried and discarded (decisions 0004 and 0030).

A **retry** ingests an item's kept bytes again through the normal path, as a new upload to its
project would be (``Archive.receive_kept``): archived now (stored, or found there already),
the item leaves the quarantine in the transaction that archives it; refused again, the same
item stays with the new reason and message, and no second copy is made. The commit claims
the item's row first: an item discarded while it was retried is not archived (the retry
answers as for a missing item), and a discard that comes second finds it gone.

A **discard** removes the item: its row first (one committed transaction), then its bytes.
A crash between the two leaves bytes that no row names, never a row whose bytes are gone
(decision 0003): nothing is still reported kept, and ``imagebank check --repair`` removes the
leftover. Bytes that another row names too (an item held at an instance's own key, since
archived) are left to that row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from imagebank.domain.errors import ConflictError, NotFoundError, StorageError
from imagebank.domain.model import Outcome
from imagebank.index import quarantine as sql
from imagebank.index import repo
from imagebank.services.archive import Archive

log = logging.getLogger("imagebank.quarantine")

#: Outcomes of a retry that take the item out of the quarantine.
ARCHIVED = (Outcome.STORED, Outcome.DUPLICATE)


@dataclass(frozen=True, slots=True)
class RetryResult:
    """What a retry did to one item: the outcome of its bytes' new ingest and, for an item
    refused again, its new reason and message."""

    item_id: str
    outcome: Outcome
    reason: str | None
    message: str
    instance_id: str | None = None
    study_id: str | None = None

    @property
    def archived(self) -> bool:
        return self.outcome in ARCHIVED

    def as_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "outcome": self.outcome.value,
                "archived": self.archived, "reason": self.reason, "message": self.message,
                "instance_id": self.instance_id, "study_id": self.study_id}


#: What became of a discarded item's bytes.
REMOVED = "removed"
NONE_KEPT = "none_kept"  # none were kept (too large)
SHARED = "shared"  # an archived instance names them too: they are its bytes now
LEFT_FOR_REPAIR = "left_for_repair"  # the store refused: check --repair removes them


@dataclass(frozen=True, slots=True)
class DiscardResult:
    """A discarded item, and what became of its bytes (one of the constants above)."""

    item_id: str
    bytes: str

    def as_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "bytes": self.bytes}


def get_item(archive: Archive, item_id: str, project: str | None = None) -> dict[str, Any]:
    """The item (in ``project``, when given: another project's is not found, in the same
    words as a missing one)."""
    with archive.sessions.begin() as session:
        item = sql.get_quarantine_item(session, item_id)
    if item is None or (project is not None and item["project_id"] != project):
        where = f" in project {project!r}" if project is not None else ""
        raise NotFoundError(f"No quarantine item {item_id}{where}.")
    return item


def list_items(archive: Archive, project: str, *, limit: int = 100, offset: int = 0
               ) -> list[dict[str, Any]]:
    """The project's items, oldest first, each with ``kept`` (are its bytes kept?)."""
    with archive.sessions.begin() as session:
        rows = repo.list_quarantine(session, project, limit=limit, offset=offset)
    return [with_kept(row) for row in rows]


def with_kept(item: dict[str, Any]) -> dict[str, Any]:
    """The item with ``kept`` (are its bytes kept?) and its time in UTC."""
    created = repo.aware(item.get("created_at"))
    return {**item, "kept": item.get("object_key") is not None,
            "created_at": created.astimezone(UTC) if created else None}


def reason_counts(archive: Archive, project: str) -> dict[str, int]:
    """How many of the project's items there are for each reason."""
    with archive.sessions.begin() as session:
        return dict(sorted(repo.quarantine_reasons(session, project).items()))


def retry(archive: Archive, item_id: str, project: str | None = None) -> RetryResult:
    """Ingest the item's kept bytes again (see the module's docstring). A ConflictError when
    its bytes were not kept (``too_large``) or are missing from the store."""
    item = get_item(archive, item_id, project)
    key = item["object_key"]
    if key is None:
        raise ConflictError(
            f"Quarantine item {item_id} cannot be retried: its bytes were not kept "
            f"({item['reason']}). Send the file again, or discard the item.",
            code="bytes_not_kept")
    try:
        data = archive.store.get(key)
    except NotFoundError:
        raise ConflictError(
            f"Quarantine item {item_id} cannot be retried: its bytes are missing from the "
            "object store. Discard the item.", code="bytes_not_kept") from None
    label = item["source"] or f"quarantine item {item_id}"
    outcome = archive.receive_kept(data, label, item["project_id"], item_id)
    if outcome.outcome in ARCHIVED:
        # Archived: the commit removed the row; the bytes go (unless the instance names them).
        _remove_object(archive, key)
        message = ("Archived: the item has left the quarantine."
                   if outcome.outcome is Outcome.STORED else
                   "These bytes were archived already: the item has left the quarantine.")
        return RetryResult(item_id, outcome.outcome, None, message, outcome.instance_id,
                           outcome.study_id)
    # Refused again: the ingest updated the item. Held now at another key (a race with
    # another writer of the same instance), the old copy goes.
    with archive.sessions.begin() as session:
        now = sql.get_quarantine_item(session, item_id)
    if now is not None and now["object_key"] != key:
        _remove_object(archive, key)
    return RetryResult(item_id, outcome.outcome, outcome.reason, outcome.message,
                       outcome.instance_id)


def discard(archive: Archive, item_id: str, project: str | None = None) -> DiscardResult:
    """Remove the item: its row, then its bytes (see the module's docstring)."""
    item = get_item(archive, item_id, project)
    with archive.sessions.begin() as session:
        if not sql.delete_quarantine_item(session, item_id):
            # Discarded (or archived by a retry) since it was read.
            raise NotFoundError(f"No quarantine item {item_id}"
                                + (f" in project {project!r}." if project else "."))
    key = item["object_key"]
    return DiscardResult(item_id, NONE_KEPT if key is None else _remove_object(archive, key))


def _remove_object(archive: Archive, key: str) -> str:
    """Delete ``key`` from the store unless an index row names it (REMOVED, SHARED or
    LEFT_FOR_REPAIR). Called after the commit that dropped the item's row."""
    with archive.sessions.begin() as session:
        if sql.object_key_in_use(session, key):
            return SHARED
    try:
        archive.store.delete(key)
    except StorageError:
        # The item is gone from the index; its bytes are an orphan that check --repair
        # removes (never reported kept).
        log.warning("a discarded quarantine object could not be removed from the store; "
                    "imagebank check --repair will remove it")
        return LEFT_FOR_REPAIR
    return REMOVED
