"""The committing half of the pipeline: classify, publish, index, in batched transactions.

Order of a batch, which makes it crash-safe (a SIGKILL anywhere loses nothing reported stored
and never leaves an index row without its object):

1. classify each parsed object against the index: new, duplicate (same SOPInstanceUID, same
   bytes: a no-op), conflict (same SOPInstanceUID, other bytes: kept first, the newcomer goes
   to quarantine), patient mismatch, or rejected by the parse step;
2. publish the staged bytes (durable, atomic) to their keys: archive or quarantine;
3. insert the index rows and commit. Only then is the batch reported stored.

A crash after 2 and before 3 leaves objects with no index row: ``imagebank check --repair``
indexes them again. Object keys carry the checksum, so publishing never overwrites other bytes.

A quarantine item being retried (``Parsed.retry_of``) is claimed first in the transaction of
step 3 (its row locked): one discarded meanwhile is not archived, its bytes published in 2 are
removed again, and the report names it in ``vanished``. Archived, its row goes in the same
transaction; refused again, it is updated there.
"""

from __future__ import annotations

import logging
import struct
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from imagebank.dicom.part10 import Truncated, dataset_offset
from imagebank.domain.errors import ImagebankError, StorageError
from imagebank.domain.ids import instance_object_key, quarantine_object_key
from imagebank.domain.model import (
    IngestSummary,
    Level,
    Outcome,
    QuarantineReason,
    Rejection,
    attributes_at,
)
from imagebank.index import repo
from imagebank.index.engine import write_gate
from imagebank.index.quarantine import (
    claim_quarantine_items,
    delete_quarantine_item,
    object_key_in_use,
    update_quarantine_items,
)
from imagebank.ingest.sources import Source, SourceProblem
from imagebank.ingest.worker import (
    Parsed,
    Parser,
    WorkerConfig,
    init_worker,
    parse_many,
    pool_context,
    prefetch,
)
from imagebank.storage.base import ObjectStore, StagedObject

_SUBJECT_COLS = [a.column for a in attributes_at(Level.SUBJECT)]
_STUDY_COLS = [a.column for a in attributes_at(Level.STUDY)]
_SERIES_COLS = [a.column for a in attributes_at(Level.SERIES)]
_INSTANCE_COLS = [a.column for a in attributes_at(Level.INSTANCE)]

Progress = Callable[["BatchReport"], None]
log = logging.getLogger("imagebank.ingest")


@dataclass(slots=True)
class BatchReport:
    """What one committed batch did; cumulative figures are in ``summary``."""

    files: int
    bytes: int
    stored_ids: list[str] = field(default_factory=list)
    summary: IngestSummary = field(default_factory=IngestSummary)
    #: Each object's outcome, by ``id()`` of its Parsed: (outcome, reason, label, message,
    #: size), so that a batch committed for several callers can be told apart again.
    outcomes: dict[int, tuple[Outcome, str | None, str, str, int]] = field(
        default_factory=dict)
    #: Quarantine items retried in the batch that were gone when it committed (discarded
    #: meanwhile): nothing of them was archived or updated.
    vanished: set[str] = field(default_factory=set)


class Committer:
    """Commits batches of parsed objects for one project."""

    def __init__(self, sessions: sessionmaker[Session], store: ObjectStore,
                 project_id: str) -> None:
        self.sessions = sessions
        self.store = store
        self.project_id = project_id

    def commit(self, batch: list[Parsed]) -> BatchReport:
        report = BatchReport(files=len(batch), bytes=sum(p.size for p in batch))
        try:
            self._commit(batch, report)
        except SQLAlchemyError as exc:
            raise StorageError(
                "The index could not be written; the ingest stopped. Objects already copied "
                "are indexed by `imagebank check --repair`."
            ) from exc
        return report

    def _commit(self, batch: list[Parsed], report: BatchReport) -> None:
        summary = report.summary
        project = self.project_id

        def record(item: Parsed, outcome: Outcome, *, size: int = 0, reason: str | None = None,
                   source: str = "", message: str = "") -> None:
            summary.add(outcome, size=size, reason=reason, source=source, message=message)
            report.outcomes[id(item)] = (outcome, reason, source, message, size)

        accepted = [p for p in batch if p.rejection is None and p.staged is not None]
        retry_ids = {p.retry_of for p in batch if p.retry_of is not None}
        with self.sessions.begin() as session:
            existing = repo.get_instance_checksums(session, (p.instance_id for p in accepted))
            owners = repo.get_study_subjects(session, (p.study_id for p in accepted))

        to_publish: list[tuple[StagedObject, str]] = []
        quarantine: list[dict[str, Any]] = []
        new: list[Parsed] = []
        seen: dict[str, str] = {}
        first_staged: dict[str, StagedObject] = {}
        discard: list[StagedObject] = []
        retried: list[dict[str, Any]] = []

        def hold(parsed: Parsed, reason: str, message: str, instance_id: str | None = None
                 ) -> None:
            if parsed.retry_of is not None:
                # A quarantine item retried and refused again: its row gets the new reason,
                # its bytes stay where they are kept (this copy of them goes).
                if parsed.staged is not None:
                    discard.append(parsed.staged)
                retried.append({"id": parsed.retry_of, "reason": reason, "message": message,
                                "instance_id": instance_id})
                return
            qid = uuid.uuid4().hex
            key = None
            if parsed.staged is not None:
                key = quarantine_object_key(project, qid)
                to_publish.append((parsed.staged, key))
            quarantine.append(self._quarantine_row(parsed, reason, message, key, instance_id,
                                                   qid))

        for parsed in batch:
            if parsed.rejection is not None:
                hold(parsed, parsed.rejection.reason.value, parsed.rejection.message)
                record(parsed, Outcome.QUARANTINED, reason=parsed.rejection.reason.value,
                            source=parsed.label, message=parsed.rejection.message)
                continue
            assert parsed.staged is not None
            sha = parsed.staged.sha256
            known = existing.get(parsed.instance_id) or seen.get(parsed.instance_id)
            if known is not None:
                if known == sha or self._same_dataset(parsed, known, first_staged):
                    discard.append(parsed.staged)
                    record(parsed, Outcome.DUPLICATE)
                else:
                    message = (
                        "An instance with this SOPInstanceUID is already archived with "
                        "different bytes; the first is kept and this one is held in "
                        f"quarantine (instance {parsed.instance_id})."
                    )
                    hold(parsed, QuarantineReason.CONFLICT.value, message, parsed.instance_id)
                    record(parsed, Outcome.CONFLICT, reason="conflict", source=parsed.label,
                                message=message)
                continue
            owner = owners.get(parsed.study_id)
            if owner is not None and owner != parsed.subject_id:
                message = (
                    "This instance's study is already archived under another patient "
                    f"(study {parsed.study_id}); check PatientID and IssuerOfPatientID at the "
                    "source."
                )
                hold(parsed, QuarantineReason.PATIENT_MISMATCH.value, message, parsed.instance_id)
                record(parsed, Outcome.QUARANTINED, reason="patient_mismatch", source=parsed.label,
                            message=message)
                continue
            owners[parsed.study_id] = parsed.subject_id
            seen[parsed.instance_id] = sha
            first_staged[parsed.instance_id] = parsed.staged
            key = instance_object_key(project, parsed.instance_id, sha)
            to_publish.append((parsed.staged, key))
            new.append(parsed)

        self.store.publish(to_publish)
        for staged in discard:
            self.store.discard(staged)

        subjects, studies, series, instances = self._rows(new)
        dropped: list[Parsed] = []
        with write_gate(self.sessions.kw["bind"]), self.sessions.begin() as session:
            # First, the items being retried: locked until the commit; those discarded since
            # they were read are neither archived nor updated.
            vanished = claim_quarantine_items(session, sorted(retry_ids)) if retry_ids else set()
            if vanished:
                report.vanished = vanished
                dropped = [p for p in new if p.retry_of in vanished]
                new = [p for p in new if p.retry_of not in vanished]
                subjects, studies, series, instances = self._rows(new)
                retried = [r for r in retried if r["id"] not in vanished]
            inserted, mismatched = repo.add_instances(
                session, list(subjects.values()), list(studies.values()),
                list(series.values()), instances)
            for p in new:
                if p.instance_id in mismatched:
                    assert p.staged is not None
                    message = (
                        "This instance's study was archived under another patient at the same "
                        f"time (study {p.study_id}); check PatientID and IssuerOfPatientID at "
                        "the source."
                    )
                    quarantine.append(self._held_in_place(p, "patient_mismatch", message))
                    record(p, Outcome.QUARANTINED, reason="patient_mismatch", source=p.label,
                                message=message)
            lost = [p for p in new if p.instance_id not in inserted
                    and p.instance_id not in mismatched]
            if lost:
                # A concurrent writer committed the same instances between our check and our
                # insert: theirs stand; ours are duplicates, or conflicts kept in quarantine
                # at the key we published them to.
                theirs = repo.get_instance_checksums(session, (p.instance_id for p in lost))
                for p in lost:
                    assert p.staged is not None
                    if theirs.get(p.instance_id) == p.staged.sha256:
                        record(p, Outcome.DUPLICATE)
                        continue
                    message = (
                        "An instance with this SOPInstanceUID was archived with different "
                        "bytes at the same time; the first is kept and this one is held in "
                        f"quarantine (instance {p.instance_id})."
                    )
                    quarantine.append(self._held_in_place(p, "conflict", message))
                    record(p, Outcome.CONFLICT, reason="conflict", source=p.label,
                                message=message)
            # Held in place, a retried item's row is updated to its new key (the caller
            # removes the old copy once this is committed).
            retried.extend({"id": r["id"], "reason": r["reason"], "message": r["message"],
                            "instance_id": r["instance_id"], "object_key": r["object_key"]}
                           for r in quarantine if r["id"] in retry_ids)
            repo.add_quarantine(session, [r for r in quarantine if r["id"] not in retry_ids])
            update_quarantine_items(session, retried)
            # Retried items archived now (stored, or the same bytes there already) leave the
            # quarantine in this same transaction.
            stored_now = {id(p) for p in new if p.instance_id in inserted
                          and p.instance_id not in mismatched}
            for p in batch:
                if p.retry_of is None or p.retry_of in vanished:
                    continue
                outcome = report.outcomes.get(id(p))
                if id(p) in stored_now or (outcome and outcome[0] is Outcome.DUPLICATE):
                    delete_quarantine_item(session, p.retry_of)
            repo.add_changes(session, project, "stored", Level.INSTANCE.value,
                             [r["id"] for r in instances if r["id"] in inserted])
        for p in new:
            if p.instance_id in inserted:
                record(p, Outcome.STORED, size=p.size)
                report.stored_ids.append(p.instance_id)
        self._remove_unclaimed(dropped)

    def _rows(self, new: list[Parsed]) -> tuple[dict[str, dict[str, Any]],
                                                dict[str, dict[str, Any]],
                                                dict[str, dict[str, Any]],
                                                list[dict[str, Any]]]:
        """The subject, study, series and instance rows of the objects to archive."""
        project = self.project_id
        subjects: dict[str, dict[str, Any]] = {}
        studies: dict[str, dict[str, Any]] = {}
        series: dict[str, dict[str, Any]] = {}
        instances: list[dict[str, Any]] = []
        for p in new:
            values = p.values or {}
            assert p.staged is not None
            if p.subject_id not in subjects:
                row = {c: values.get(c) for c in _SUBJECT_COLS}
                row["patient_id"] = row["patient_id"] or ""
                row["issuer_of_patient_id"] = row["issuer_of_patient_id"] or ""
                subjects[p.subject_id] = {"id": p.subject_id, "project_id": project, **row}
            if p.study_id not in studies:
                studies[p.study_id] = {"id": p.study_id, "project_id": project,
                                       "subject_id": p.subject_id,
                                       **{c: values.get(c) for c in _STUDY_COLS}}
            if p.series_id not in series:
                series[p.series_id] = {"id": p.series_id, "project_id": project,
                                       "study_id": p.study_id,
                                       **{c: values.get(c) for c in _SERIES_COLS}}
            instances.append({
                "id": p.instance_id, "project_id": project, "study_id": p.study_id,
                "series_id": p.series_id, **{c: values.get(c) for c in _INSTANCE_COLS},
                "transfer_syntax_uid": p.transfer_syntax_uid, "size_bytes": p.size,
                "sha256": p.staged.sha256,
                "object_key": instance_object_key(project, p.instance_id, p.staged.sha256),
                "metadata_json": p.metadata_json, "oddities": ",".join(p.oddities),
            })
        return subjects, studies, series, instances

    def _remove_unclaimed(self, dropped: list[Parsed]) -> None:
        """Remove the bytes published for retried items found discarded at the commit (else
        ``check --repair`` would index them), unless an index row names them."""
        for p in dropped:
            assert p.staged is not None
            key = instance_object_key(self.project_id, p.instance_id, p.staged.sha256)
            with self.sessions.begin() as session:
                if object_key_in_use(session, key):
                    continue
            try:
                self.store.delete(key)
            except StorageError:
                log.warning("the bytes of a quarantine item discarded while it was retried "
                            "could not be removed from the store; imagebank check reports "
                            "them as an object no row names")

    def _same_dataset(self, parsed: Parsed, known_sha: str,
                      first_staged: dict[str, StagedObject]) -> bool:
        """Are the new bytes the archived instance's dataset under another file meta header?

        The same instance arrives with different group 0002 elements by different routes
        (a file's own header; one written by the DICOM listener, which is never sent the
        sender's): that is a duplicate, not a conflict. Only read on this rare path.
        """
        assert parsed.staged is not None
        try:
            staged_first = first_staged.get(parsed.instance_id)
            if staged_first is not None:
                old = self.store.read_staged(staged_first)
            else:
                old = self.store.get(instance_object_key(self.project_id, parsed.instance_id,
                                                        known_sha))
            new = self.store.read_staged(parsed.staged)
            return old[dataset_offset(old):] == new[dataset_offset(new):]
        except (ImagebankError, Truncated, ValueError, struct.error):
            return False

    def _held_in_place(self, p: Parsed, reason: str, message: str) -> dict[str, Any]:
        """A quarantine row for bytes already published at their instance key."""
        assert p.staged is not None
        key = instance_object_key(self.project_id, p.instance_id, p.staged.sha256)
        return self._quarantine_row(p, reason, message, key, p.instance_id)

    def _quarantine_row(self, p: Parsed, reason: str, message: str, object_key: str | None,
                        instance_id: str | None, quarantine_id: str | None = None
                        ) -> dict[str, Any]:
        return {
            "id": p.retry_of or quarantine_id or uuid.uuid4().hex, "project_id": self.project_id,
            "reason": reason, "message": message, "source": p.label, "size_bytes": p.size,
            "sha256": p.staged.sha256 if p.staged else None, "object_key": object_key,
            "instance_id": instance_id,
        }


def problem_as_parsed(problem: SourceProblem, store: ObjectStore, max_size: int) -> Parsed:
    """A source that could not be listed, as a rejection. A damaged archive's bytes are kept
    in quarantine (within the size limit) so that nothing received is lost."""
    rejection = Rejection(QuarantineReason(problem.reason), problem.message)
    if problem.reason == QuarantineReason.BAD_ARCHIVE.value:
        try:
            with open(problem.file, "rb") as handle:
                data = handle.read(max_size + 1)
        except OSError:
            data = b""
        if data and len(data) <= max_size:
            return Parsed(problem.label, len(data), staged=store.stage(data),
                          rejection=rejection)
    return Parsed(problem.label, 0, rejection=rejection)


#: Files per task sent to a worker process.
TASK_FILES = 16
#: Batches' worth of files queued to the workers ahead of the committing process.
AHEAD_BATCHES = 2


def run_ingest(
    sources: Iterable[Source | SourceProblem],
    committer: Committer,
    config: WorkerConfig,
    *,
    workers: int,
    batch_size: int,
    progress: Progress | None = None,
    max_batch_seconds: float = 1.0,
    start_method: str | None = None,
) -> IngestSummary:
    """Parse ``sources`` in ``workers`` processes and commit them in batches.

    ``start_method`` "forkserver" is for a multi-threaded caller (the server's job runner):
    forking a process that has other threads can copy a lock in its held state.
    """
    total = IngestSummary()
    pending: list[Parsed] = []
    last_commit = time.monotonic()

    def flush() -> None:
        nonlocal pending, last_commit
        if not pending:
            return
        report = committer.commit(pending)
        total.merge(report.summary)
        report.summary = total
        pending = []
        last_commit = time.monotonic()
        if progress is not None:
            progress(report)

    def accept(results: list[Parsed]) -> None:
        pending.extend(results)
        if len(pending) >= batch_size or time.monotonic() - last_commit > max_batch_seconds:
            flush()

    chunk = TASK_FILES
    if workers <= 1:
        parser = Parser(config, committer.store)
        groups = _grouped(sources, chunk)
        group = next(groups, None)
        while group is not None:
            following = next(groups, None)
            if following is not None:
                prefetch(following)  # read from disk while this group is parsed
            accept([_as_parsed(item, parser) for item in group])
            group = following
        flush()
        return total

    # Work queued ahead: two batches' worth, so that the workers keep parsing while this
    # process commits a batch (its syncfs and index fsync take a good part of a second for a
    # batch of CT images). Results are small (no pixel data), so memory stays flat.
    window = max(workers * 4, -(-AHEAD_BATCHES * batch_size // chunk))
    # Files are read ahead of the workers (POSIX_FADV_WILLNEED) by a few tasks, not the whole
    # window: enough that a worker never waits for the disk, little enough to stay cached.
    read_ahead = workers * 2 + 2
    context = pool_context(start_method)
    with ProcessPoolExecutor(max_workers=workers, initializer=init_worker,
                             initargs=(config,), mp_context=context) as pool:
        inflight: deque[Future[list[Parsed]]] = deque()
        unread: deque[list[Source]] = deque()

        def take_oldest() -> None:
            # Results are taken in submission order, so batches follow the input order.
            accept(inflight.popleft().result())
            if unread:
                prefetch(unread.popleft())

        for group in _grouped(sources, chunk):
            problems = [problem_as_parsed(i, committer.store, config.max_size)
                        for i in group if isinstance(i, SourceProblem)]
            files = [i for i in group if isinstance(i, Source)]
            if problems:
                accept(problems)
            if files:
                if len(inflight) < read_ahead:
                    prefetch(files)
                else:
                    unread.append(files)
                inflight.append(pool.submit(parse_many, files))
            while len(inflight) >= window:
                take_oldest()
        while inflight:
            take_oldest()
    flush()
    return total


def _as_parsed(item: Source | SourceProblem, parser: Parser) -> Parsed:
    if isinstance(item, SourceProblem):
        return problem_as_parsed(item, parser.store, parser.config.max_size)
    return parser.parse_source(item)


def _grouped(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    group: list[Any] = []
    for item in items:
        group.append(item)
        if len(group) >= size:
            yield group
            group = []
    if group:
        yield group
