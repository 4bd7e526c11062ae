"""The audit trail: every request becomes an event, durable before its response is sent.

Events are written by one writer thread in *group commits*: whatever arrived while the last
transaction was committing goes into the next one, so a busy server pays one commit per batch
and an idle one answers after a single commit. ``record`` returns a future that completes
when the event is committed; the API waits on it before sending the response head.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from imagebank.domain.audit import ChainReport, ChainVerifier, audit_key, seal
from imagebank.domain.errors import StorageError
from imagebank.index import audit as sql
from imagebank.index.engine import write_gate
from imagebank.settings import Settings

log = logging.getLogger("imagebank.audit")

MAX_BATCH = 1000
EVENT_FIELDS = ("actor_id", "actor", "via", "token_id", "client", "method", "route",
                "action", "project_id", "level", "object_id", "status", "outcome", "detail")


def make_event(**values: Any) -> dict[str, Any]:
    """An event with every field present and the time of now (UTC, microseconds)."""
    event = {name: values.get(name) for name in EVENT_FIELDS}
    event["at"] = datetime.now(UTC).isoformat(timespec="microseconds")
    for name in ("actor", "client", "route", "object_id"):
        value = event[name]
        if isinstance(value, str):
            event[name] = value[: 200 if name == "route" else 64]
    return event


class AuditLog:
    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self.sessions = sessions
        self.keys = [audit_key(s) for s in settings.audit_secrets]
        self.key = self.keys[0]
        self._pending: list[tuple[dict[str, Any], Future[int]]] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- writing ----------------------------------------------------------------------------
    def write(self, events: list[dict[str, Any]]) -> int:
        """Append ``events`` now, in this thread; returns the last sequence number."""
        rows = [dict(e) for e in events]

        def sealer(prev_seq: int, prev_hash: str) -> tuple[int, str]:
            return seal(self.key, rows, prev_seq, prev_hash)

        try:
            engine = self.sessions.kw["bind"]
            with write_gate(engine), engine.begin() as connection:
                sql.append(connection, rows, sealer)
        except SQLAlchemyError as exc:
            raise StorageError("The audit trail could not be written.") from exc
        return int(rows[-1]["seq"]) if rows else 0

    def admin_event(self, actor: str, action: str, *, route: str | None = None,
                    project_id: str | None = None, level: str | None = None,
                    object_id: str | None = None,
                    detail: dict[str, Any] | None = None) -> None:
        """Record administration done outside the API (the command line), at once."""
        self.write([make_event(actor=actor, via="cli", method="CLI",
                               route=route or f"cli {action}", action=action,
                               project_id=project_id, level=level, object_id=object_id,
                               status=0, outcome="ok",
                               detail=json.dumps(detail, sort_keys=True) if detail else None)])

    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="imagebank-audit",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._cond:
            thread, self._thread = self._thread, None
            self._stopping = True
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout=30)

    def record(self, event: dict[str, Any]) -> Future[int]:
        """Queue ``event`` for the writer thread (written at once without one)."""
        future: Future[int] = Future()
        with self._cond:
            if self._thread is not None:
                self._pending.append((event, future))
                self._cond.notify()
                return future
        try:
            future.set_result(self.write([event]))
        except StorageError as exc:
            future.set_exception(exc)
        return future

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if not self._pending and self._stopping:
                    return
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                last = self.write([event for event, _ in batch])
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                log.error("audit batch of %d events failed: %s", len(batch),
                          type(exc).__name__)
                for _, future in batch:
                    future.set_exception(exc)
                continue
            first = last - len(batch) + 1
            for offset, (_, future) in enumerate(batch):
                future.set_result(first + offset)

    # -- reading ----------------------------------------------------------------------------
    def events(self, *, project_id: str | None = None, actor_id: str | None = None,
               since: int = 0, limit: int = 100, **filters: Any) -> list[dict[str, Any]]:
        """Events after ``since``; ``filters`` narrow them (``index.audit.list_events``:
        before, actor, action, outcome, at_from, at_to, newest_first)."""
        with self.sessions.begin() as session:
            return sql.list_events(session, project_id=project_id, actor_id=actor_id,
                                   since=since, limit=limit, **filters)

    def verify(self, progress: Callable[[int], None] | None = None) -> ChainReport:
        """Walk the whole chain: finds edited, inserted and deleted events."""
        verifier = ChainVerifier(self.keys)
        with self.sessions.begin() as session:
            head = sql.head(session)
            upto = head[0] if head is not None else sql.last_seq(session)
            for count, event in enumerate(sql.iter_events(session, upto), 1):
                verifier.feed(event)
                if progress is not None and count % 10_000 == 0:
                    progress(count)
        if head is None:
            verifier.report.problems.append(
                "the record of the chain's head is missing (deleted), so events at the end "
                "may have been deleted too")
            return verifier.report
        return verifier.finish(*head)
