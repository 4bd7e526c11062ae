"""SQL for jobs: long work with a state and progress, kept across restarts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from imagebank.index.repo import _insert, _row, now
from imagebank.index.tables import Job

ACTIVE = ("queued", "running")


def add_job(session: Session, row: dict[str, Any]) -> None:
    stamp = now()
    session.execute(_insert(session, Job).values(
        state="queued", created_at=stamp, updated_at=stamp, **row))


def get_job(session: Session, job_id: str) -> dict[str, Any] | None:
    job = session.get(Job, job_id, populate_existing=True)
    return None if job is None else _row(job)


def list_jobs(session: Session, *, created_by: str | None = None,
              project_ids: list[str] | None = None, limit: int = 100
              ) -> list[dict[str, Any]]:
    stmt = select(Job)
    if created_by is not None:
        stmt = stmt.where(Job.created_by == created_by)
    if project_ids is not None:
        stmt = stmt.where(Job.project_id.in_(project_ids))
    return [_row(j) for j in session.scalars(
        stmt.order_by(Job.created_at.desc(), Job.id).limit(limit))]


def claim_next(session: Session) -> dict[str, Any] | None:
    """Mark the oldest queued job running and return it (None when there is none)."""
    job_id = session.scalar(
        select(Job.id).where(Job.state == "queued").order_by(Job.created_at, Job.id).limit(1)
    )
    return None if job_id is None else claim(session, job_id)  # None: another runner took it


def claim(session: Session, job_id: str) -> dict[str, Any] | None:
    """Mark this queued job running and return it (None when it is not queued any more)."""
    stamp = now()
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.state == "queued")
        .values(state="running", started_at=stamp, updated_at=stamp,
                attempts=Job.attempts + 1)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return None
    return get_job(session, job_id)


def update_job(session: Session, job_id: str, **values: Any) -> bool:
    result = session.execute(
        update(Job).where(Job.id == job_id).values(updated_at=now(), **values))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def finish_job(session: Session, job_id: str, state: str, **values: Any) -> None:
    stamp = now()
    session.execute(update(Job).where(Job.id == job_id, Job.state.in_(ACTIVE)).values(
        state=state, finished_at=stamp, updated_at=stamp, **values))


def requeue_running(session: Session) -> int:
    """Jobs left running by a stopped server go back to the queue (imports are idempotent)."""
    result = session.execute(update(Job).where(Job.state == "running")
                             .values(state="queued", updated_at=now(),
                                     message="requeued after a restart"))
    return int(result.rowcount)  # type: ignore[attr-defined]
