"""Group commit of objects received one by one (C-STORE, STOW-RS, REST uploads).

Each receiver parses its own objects (in its own thread), then hands them here. The first
caller to find no commit running becomes the *leader*: it takes every object waiting, from
every caller, and commits them per project in one batch (one publish with one flush of the
object store, one index transaction); the others wait for it, then one of them leads the
next batch. Eight associations sending at once thus share their fsyncs and their index
transactions instead of queueing for them one by one, and each caller still gets its answer
only after its objects are durable and indexed.

Each caller gets a BatchReport for its own objects only, rebuilt from the per-object
outcomes of the shared batch. The same instance sent by two callers in one batch is stored
once; the second is a duplicate (or a conflict, if its bytes differ), exactly as if they had
come one after the other.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from imagebank.ingest.pipeline import BatchReport, Committer
from imagebank.ingest.worker import Parsed

#: The most objects one leader commits at once (the rest wait for the next batch).
MAX_BATCH = 256


@dataclass(eq=False)
class _Ticket:
    project: str
    items: list[Parsed]
    report: BatchReport | None = None
    error: BaseException | None = None
    done: bool = False
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = len(self.items)


class GroupCommitter:
    """Commits what concurrent callers hand in, in shared batches (leader/follower)."""

    def __init__(self, committer_for: Callable[[str], Committer]) -> None:
        self._committer_for = committer_for
        self._cond = threading.Condition()
        self._waiting: list[_Ticket] = []
        self._leading = False

    def commit(self, project: str, items: list[Parsed]) -> BatchReport:
        """Commit ``items`` into ``project``; return their report once durable."""
        ticket = _Ticket(project, items)
        with self._cond:
            self._waiting.append(ticket)
        while True:
            with self._cond:
                while not ticket.done and self._leading:
                    self._cond.wait()
                if ticket.done:
                    return self._answer(ticket)
                self._leading = True
                batch = self._take()
            try:
                self._commit(batch)
            except BaseException as exc:
                # Whatever escaped, every ticket taken is answered (its caller would wait
                # for it forever otherwise); the leader's own answer is its ticket's.
                for taken in batch:
                    if not taken.done:
                        taken.error, taken.done = exc, True
                if not isinstance(exc, Exception):
                    raise
            finally:
                with self._cond:
                    self._leading = False
                    self._cond.notify_all()

    def _take(self) -> list[_Ticket]:
        """The tickets of the next batch: in arrival order, up to MAX_BATCH objects (always
        at least the first ticket, whatever its size)."""
        batch: list[_Ticket] = []
        total = 0
        while self._waiting and (not batch or total + self._waiting[0].size <= MAX_BATCH):
            ticket = self._waiting.pop(0)
            batch.append(ticket)
            total += ticket.size
        return batch

    def _commit(self, batch: list[_Ticket]) -> None:
        by_project: dict[str, list[_Ticket]] = {}
        for ticket in batch:
            by_project.setdefault(ticket.project, []).append(ticket)
        for project, tickets in by_project.items():
            try:
                shared = self._committer_for(project).commit(
                    [item for ticket in tickets for item in ticket.items])
            except BaseException as exc:  # noqa: BLE001 - handed to each waiting caller
                for ticket in tickets:
                    ticket.error = exc
                    ticket.done = True
                continue
            for ticket in tickets:
                ticket.report = _split(shared, ticket.items)
                ticket.done = True

    @staticmethod
    def _answer(ticket: _Ticket) -> BatchReport:
        if ticket.error is not None:
            raise ticket.error
        assert ticket.report is not None
        return ticket.report


def _split(shared: BatchReport, items: list[Parsed]) -> BatchReport:
    """The part of a shared batch's report that concerns ``items``."""
    report = BatchReport(files=len(items), bytes=sum(p.size for p in items))
    if shared.vanished:
        report.vanished = {i.retry_of for i in items
                           if i.retry_of is not None and i.retry_of in shared.vanished}
    stored = set(shared.stored_ids)
    for item in items:
        outcome = shared.outcomes.get(id(item))
        if outcome is None:
            continue
        kind, reason, source, message, size = outcome
        report.summary.add(kind, size=size, reason=reason, source=source, message=message)
        report.outcomes[id(item)] = outcome
        if item.instance_id in stored and kind.value == "stored":
            report.stored_ids.append(item.instance_id)
    return report
