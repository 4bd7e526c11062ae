"""SQL for DICOM nodes: each project's called AE title, the calling AEs it accepts, and the
remote AEs imagebank sends to."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from imagebank.index.repo import _insert, now
from imagebank.index.tables import CallingAE, Project, RemoteAE


def set_ae_title(session: Session, project_id: str, ae_title: str | None) -> bool:
    result = session.execute(update(Project).where(Project.id == project_id)
                             .values(ae_title=ae_title))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def project_of_ae(session: Session, ae_title: str) -> str | None:
    return session.scalar(select(Project.id).where(Project.ae_title == ae_title))


def ae_title_of(session: Session, project_id: str) -> str | None:
    return session.scalar(select(Project.ae_title).where(Project.id == project_id))


def allow(session: Session, project_id: str, ae_title: str, host: str) -> None:
    session.execute(_insert(session, CallingAE).values(
        project_id=project_id, ae_title=ae_title, host=host, created_at=now(),
    ).on_conflict_do_nothing())


def disallow(session: Session, project_id: str, ae_title: str) -> int:
    result = session.execute(delete(CallingAE).where(CallingAE.project_id == project_id,
                                                     CallingAE.ae_title == ae_title))
    return int(result.rowcount)  # type: ignore[attr-defined]


def calling_aes(session: Session, project_id: str | None = None) -> list[dict[str, Any]]:
    stmt = select(CallingAE.project_id, CallingAE.ae_title, CallingAE.host).order_by(
        CallingAE.project_id, CallingAE.ae_title, CallingAE.host)
    if project_id is not None:
        stmt = stmt.where(CallingAE.project_id == project_id)
    return [dict(r._mapping) for r in session.execute(stmt)]


_REMOTE = (RemoteAE.name, RemoteAE.ae_title, RemoteAE.host, RemoteAE.port, RemoteAE.created_at)


def add_remote_ae(session: Session, name: str, ae_title: str, host: str, port: int) -> None:
    session.add(RemoteAE(name=name, ae_title=ae_title, host=host, port=port, created_at=now()))
    session.flush()


def remove_remote_ae(session: Session, name: str) -> int:
    result = session.execute(delete(RemoteAE).where(RemoteAE.name == name))
    return int(result.rowcount)  # type: ignore[attr-defined]


def get_remote_ae(session: Session, name: str) -> dict[str, Any] | None:
    row = session.execute(select(*_REMOTE).where(RemoteAE.name == name)).first()
    return dict(row._mapping) if row is not None else None


def remote_ae_titled(session: Session, ae_title: str) -> dict[str, Any] | None:
    row = session.execute(select(*_REMOTE).where(RemoteAE.ae_title == ae_title)).first()
    return dict(row._mapping) if row is not None else None


def list_remote_aes(session: Session) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in session.execute(select(*_REMOTE).order_by(RemoteAE.name))]
