"""SQL for users, project roles, API tokens, browser sessions and sign-in throttling."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select, update
from sqlalchemy.orm import Session

from imagebank.index.repo import _insert, _row, now
from imagebank.index.tables import (
    ApiToken,
    LoginThrottle,
    Membership,
    Project,
    User,
    WebSession,
)


# -- users ----------------------------------------------------------------------------------
def add_user(session: Session, user_id: str, username: str, password_hash: str,
             is_admin: bool) -> bool:
    # RETURNING, not rowcount: psycopg reports -1 for INSERT ... ON CONFLICT DO NOTHING.
    result = session.execute(
        _insert(session, User).values(
            id=user_id, username=username, password_hash=password_hash, is_admin=is_admin,
            is_active=True, created_at=now(),
        ).on_conflict_do_nothing().returning(User.id)
    )
    return result.first() is not None


def user_by_name(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def get_user(session: Session, user_id: str) -> User | None:
    return session.get(User, user_id)


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def count_admins(session: Session) -> int:
    return len(session.scalars(
        select(User.id).where(User.is_admin.is_(True), User.is_active.is_(True))
    ).all())


def set_password(session: Session, user_id: str, password_hash: str) -> None:
    session.execute(update(User).where(User.id == user_id).values(password_hash=password_hash))


def set_active(session: Session, user_id: str, active: bool) -> None:
    session.execute(update(User).where(User.id == user_id).values(is_active=active))


def touch_login(session: Session, user_id: str) -> None:
    session.execute(update(User).where(User.id == user_id).values(last_login_at=now()))


# -- roles ----------------------------------------------------------------------------------
def roles_of(session: Session, user_id: str) -> dict[str, str]:
    rows = session.execute(
        select(Membership.project_id, Membership.role).where(Membership.user_id == user_id)
    )
    return {project: role for project, role in rows}


def set_role(session: Session, project_id: str, user_id: str, role: str, by: str | None
             ) -> None:
    session.execute(delete(Membership).where(Membership.project_id == project_id,
                                             Membership.user_id == user_id))
    session.execute(_insert(session, Membership).values(
        project_id=project_id, user_id=user_id, role=role, granted_at=now(), granted_by=by))


def remove_role(session: Session, project_id: str, user_id: str) -> bool:
    result = session.execute(delete(Membership).where(
        Membership.project_id == project_id, Membership.user_id == user_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def project_members(session: Session, project_id: str) -> list[dict[str, Any]]:
    rows = session.execute(
        select(User.username, Membership.role, Membership.granted_at, Membership.granted_by)
        .join(User, User.id == Membership.user_id)
        .where(Membership.project_id == project_id).order_by(User.username)
    )
    return [{"username": u, "role": r, "granted_at": at, "granted_by": by}
            for u, r, at, by in rows]


def project_exists(session: Session, project_id: str) -> bool:
    return session.get(Project, project_id) is not None


# -- tokens ---------------------------------------------------------------------------------
def add_token(session: Session, row: dict[str, Any]) -> None:
    session.execute(_insert(session, ApiToken).values(**row))


def get_token(session: Session, token_id: str) -> ApiToken | None:
    return session.get(ApiToken, token_id)


_TOKEN_HOLDER = (
    select(ApiToken.secret_hash, ApiToken.expires_at, ApiToken.revoked_at, ApiToken.scopes,
           User.id, User.username, User.is_admin, User.is_active)
    .join(User, User.id == ApiToken.user_id)
    .where(ApiToken.id == bindparam("token_id"))
)
_ROLES = select(Membership.project_id, Membership.role).where(
    Membership.user_id == bindparam("user_id"))


def token_holder(connection: Connection, token_id: str
                 ) -> tuple[Any, dict[str, str]] | None:
    """The token's (secret_hash, expires_at, revoked_at, scopes) with its user's (id,
    username, is_admin, is_active), and the user's roles; None for an unknown token. Core
    statements: this runs on every request that sends a token."""
    row = connection.execute(_TOKEN_HOLDER, {"token_id": token_id}).first()
    if row is None:
        return None
    roles = {project: role for project, role in connection.execute(
        _ROLES, {"user_id": row.id})}
    return row, roles


def list_tokens(session: Session, user_id: str | None = None) -> list[dict[str, Any]]:
    stmt = select(ApiToken).order_by(ApiToken.created_at)
    if user_id is not None:
        stmt = stmt.where(ApiToken.user_id == user_id)
    rows = []
    for token in session.scalars(stmt):
        row = _row(token)
        row.pop("secret_hash", None)
        rows.append(row)
    return rows


def revoke_token(session: Session, token_id: str) -> None:
    session.execute(update(ApiToken).where(ApiToken.id == token_id,
                                           ApiToken.revoked_at.is_(None))
                    .values(revoked_at=now()))


def touch_token(session: Session, token_id: str, at: datetime) -> None:
    session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=at))


# -- browser sessions -----------------------------------------------------------------------
def add_web_session(session: Session, id_hash: str, user_id: str, expires_at: datetime
                    ) -> None:
    stamp = now()
    session.execute(_insert(session, WebSession).values(
        id_hash=id_hash, user_id=user_id, created_at=stamp, expires_at=expires_at,
        last_seen_at=stamp))


def get_web_session(session: Session, id_hash: str) -> WebSession | None:
    return session.get(WebSession, id_hash)


def end_web_session(session: Session, id_hash: str) -> None:
    session.execute(delete(WebSession).where(WebSession.id_hash == id_hash))


def end_user_sessions(session: Session, user_id: str) -> None:
    session.execute(delete(WebSession).where(WebSession.user_id == user_id))


def purge_expired_sessions(session: Session, at: datetime) -> None:
    session.execute(delete(WebSession).where(WebSession.expires_at < at))


# -- throttling -----------------------------------------------------------------------------
def get_throttle(session: Session, key: str) -> LoginThrottle | None:
    return session.get(LoginThrottle, key)


def put_throttle(session: Session, key: str, failures: int, window_start: datetime,
                 locked_until: datetime | None) -> None:
    session.execute(delete(LoginThrottle).where(LoginThrottle.key == key))
    session.execute(_insert(session, LoginThrottle).values(
        key=key, failures=failures, window_start=window_start, locked_until=locked_until))


def clear_throttle(session: Session, key: str) -> None:
    session.execute(delete(LoginThrottle).where(LoginThrottle.key == key))
