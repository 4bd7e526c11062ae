"""Users, project roles, API tokens and browser sessions (the server's identity side).

Passwords are hashed with argon2id (argon2-cffi's RFC 9106 defaults) and checked against the
NCSC-style rules of ``domain.passwords``. Tokens and session cookies are 256-bit random
values of which only a SHA-256 is stored. Failed sign-ins are throttled per username and per
client address. Decision 0007 records the choices.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy.orm import Session, sessionmaker

from imagebank.domain.access import (
    DEFAULT_SCOPES,
    Principal,
    Role,
    Scope,
    parse_role,
    parse_scopes,
)
from imagebank.domain.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    ThrottledError,
)
from imagebank.domain.passwords import password_problem
from imagebank.index import accounts as sql
from imagebank.index.engine import write_gate
from imagebank.index.repo import aware
from imagebank.index.repo import now as utcnow
from imagebank.settings import Settings

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
TOKEN_PREFIX = "ibt"  # noqa: S105 - a prefix, not a secret
_TOKEN_RE = re.compile(r"^ibt_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")

#: Sign-in throttling: after this many failures in the window, wait (doubling each time).
MAX_FAILURES_PER_USER = 5
MAX_FAILURES_PER_CLIENT = 20
FAILURE_WINDOW = timedelta(minutes=15)
FIRST_LOCK_SECONDS = 30
MAX_LOCK_SECONDS = 15 * 60
#: A token's last use is written at most this often (a write per request would be costly).
TOUCH_INTERVAL = 60.0


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


class Accounts:
    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self.sessions = sessions
        self.settings = settings
        self.hasher = PasswordHasher()
        self._dummy: str | None = None
        self._csrf_key = hmac.new(settings.secret_key.get_secret_value().encode(),
                                  b"imagebank csrf v1", hashlib.sha256).digest()
        self._touched: dict[str, float] = {}
        self._lock = threading.Lock()


    def _dummy_hash(self) -> str:
        """What an unknown user's password is checked against (so that the answer takes as
        long); made on first use, not by every command that builds the services."""
        if self._dummy is None:
            self._dummy = self.hasher.hash(secrets.token_urlsafe(16))
        return self._dummy

    # -- users ------------------------------------------------------------------------------
    @staticmethod
    def check_username(username: str) -> str:
        name = username.strip().lower()
        if not USERNAME_RE.fullmatch(name):
            raise InvalidInputError(
                "A username is 2-64 characters of lowercase letters, digits, '.', '_' and "
                "'-', starting with a letter or digit."
            )
        return name

    def _hash_password(self, password: str, username: str) -> str:
        problem = password_problem(password, username)
        if problem:
            raise InvalidInputError(problem, code="weak_password")
        return self.hasher.hash(password)

    def add_user(self, username: str, password: str, *, admin: bool = False) -> dict[str, Any]:
        name = self.check_username(username)
        digest = self._hash_password(password, name)
        with self.sessions.begin() as session:
            if not sql.add_user(session, uuid.uuid4().hex, name, digest, admin):
                raise ConflictError(f"There is already a user {name!r}.")
            user = sql.user_by_name(session, name)
            assert user is not None
            return self._public(session, user)

    def _public(self, session: Session, user: Any) -> dict[str, Any]:
        return {"id": user.id, "username": user.username, "is_admin": user.is_admin,
                "is_active": user.is_active, "created_at": aware(user.created_at),
                "last_login_at": aware(user.last_login_at),
                "roles": sql.roles_of(session, user.id)}

    def _user(self, session: Session, username: str) -> Any:
        user = sql.user_by_name(session, username.strip().lower())
        if user is None:
            raise NotFoundError(f"No user {username!r}.")
        return user

    def user_id_of(self, username: str) -> str | None:
        with self.sessions.begin() as session:
            user = sql.user_by_name(session, username.strip().lower()[:64])
            return None if user is None else str(user.id)

    def get_user(self, username: str) -> dict[str, Any]:
        with self.sessions.begin() as session:
            return self._public(session, self._user(session, username))

    def users(self) -> list[dict[str, Any]]:
        with self.sessions.begin() as session:
            return [self._public(session, u) for u in sql.list_users(session)]

    def set_password(self, username: str, password: str) -> None:
        with self.sessions.begin() as session:
            user = self._user(session, username)
            sql.set_password(session, user.id, self._hash_password(password, user.username))
            sql.end_user_sessions(session, user.id)

    def set_active(self, username: str, active: bool) -> None:
        with self.sessions.begin() as session:
            user = self._user(session, username)
            sql.set_active(session, user.id, active)
            if not active:
                sql.end_user_sessions(session, user.id)

    def has_admin(self) -> bool:
        with self.sessions.begin() as session:
            return sql.count_admins(session) > 0

    # -- roles ------------------------------------------------------------------------------
    def grant(self, project_id: str, username: str, role: str | Role,
              by: str | None = None) -> dict[str, Any]:
        try:
            parsed = parse_role(str(role))
        except ValueError as exc:
            raise InvalidInputError(f"{str(exc).capitalize()}.") from None
        with self.sessions.begin() as session:
            if not sql.project_exists(session, project_id):
                raise NotFoundError(f"No project {project_id!r}.")
            user = self._user(session, username)
            if parsed is not Role.OWNER:
                self._keep_an_owner(session, project_id, user)
            sql.set_role(session, project_id, user.id, parsed.value, by)
        return {"project_id": project_id, "username": user.username, "role": parsed.value}

    @staticmethod
    def _keep_an_owner(session: Session, project_id: str, user: Any) -> None:
        """A project keeps at least one owner: someone must be able to manage it."""
        roles = sql.project_members(session, project_id)
        owners = [m["username"] for m in roles if m["role"] == Role.OWNER.value]
        if owners == [user.username]:
            raise ConflictError(f"{user.username!r} is the only owner of project "
                                f"{project_id!r}; make someone else owner first.")

    def revoke(self, project_id: str, username: str) -> None:
        with self.sessions.begin() as session:
            user = self._user(session, username)
            self._keep_an_owner(session, project_id, user)
            if not sql.remove_role(session, project_id, user.id):
                raise NotFoundError(f"{username!r} has no role on project {project_id!r}.")

    def members(self, project_id: str) -> list[dict[str, Any]]:
        with self.sessions.begin() as session:
            rows = sql.project_members(session, project_id)
        for row in rows:
            row["granted_at"] = aware(row["granted_at"])
        return rows

    # -- tokens -----------------------------------------------------------------------------
    def create_token(self, username: str, *, scopes: list[str] | None = None,
                     expires_days: float | None = 90, name: str = ""
                     ) -> tuple[str, dict[str, Any]]:
        """A new token for ``username``: (the token, shown once; its public description)."""
        try:
            parsed = parse_scopes(scopes) if scopes else DEFAULT_SCOPES
        except ValueError as exc:
            raise InvalidInputError(f"{str(exc).capitalize()}.") from None
        if expires_days is not None and not 0 < expires_days <= 3650:
            raise InvalidInputError("A token expires after 1 to 3,650 days (or never).")
        token_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        token = f"{TOKEN_PREFIX}_{token_id}_{secret}"
        created = utcnow()
        expires = created + timedelta(days=expires_days) if expires_days else None
        with self.sessions.begin() as session:
            user = self._user(session, username)
            row = {"id": token_id, "user_id": user.id, "name": name[:100],
                   "secret_hash": _sha256(secret),
                   "scopes": ",".join(sorted(s.value for s in parsed)), "expires_at": expires,
                   "created_at": created}
            sql.add_token(session, row)
        public = {k: v for k, v in row.items() if k != "secret_hash"}
        public.update(username=user.username, scopes=sorted(s.value for s in parsed),
                      created_at=created, last_used_at=None, revoked_at=None)
        return token, public

    def tokens(self, username: str | None = None) -> list[dict[str, Any]]:
        with self.sessions.begin() as session:
            user_id = self._user(session, username).id if username else None
            rows = sql.list_tokens(session, user_id)
        for row in rows:
            row["scopes"] = row["scopes"].split(",") if row["scopes"] else []
            for key in ("created_at", "expires_at", "last_used_at", "revoked_at"):
                row[key] = aware(row[key])
        return rows

    def revoke_token(self, token_id: str, *, owner_id: str | None = None) -> None:
        """Revoke a token; with ``owner_id``, only if it is that user's."""
        with self.sessions.begin() as session:
            token = sql.get_token(session, token_id)
            if token is None or (owner_id is not None and token.user_id != owner_id):
                raise NotFoundError(f"No token {token_id!r}.")
            sql.revoke_token(session, token_id)

    def _principal(self, session: Session, user: Any, scopes: frozenset[Scope] | None,
                   token_id: str | None) -> Principal:
        roles = {p: Role(r) for p, r in sql.roles_of(session, user.id).items()}
        return Principal(user_id=user.id, username=user.username, is_admin=user.is_admin,
                         roles=roles, scopes=scopes, token_id=token_id)

    def principal_from_token(self, token: str) -> Principal | None:
        match = _TOKEN_RE.fullmatch(token.strip())
        if match is None:
            return None
        token_id, secret = match.groups()
        stamp = utcnow()
        digest = _sha256(secret)
        engine = self.sessions.kw["bind"]
        with engine.connect() as connection:
            found = sql.token_holder(connection, token_id)
        if found is None:
            return None
        row, roles = found
        if not hmac.compare_digest(row.secret_hash, digest):
            return None
        expires = aware(row.expires_at)
        if row.revoked_at is not None or (expires is not None and expires <= stamp):
            return None
        if not row.is_active:
            return None
        scopes = frozenset(Scope(s) for s in row.scopes.split(",") if s)
        principal = Principal(user_id=row.id, username=row.username, is_admin=row.is_admin,
                              roles={p: Role(r) for p, r in roles.items()}, scopes=scopes,
                              token_id=token_id)
        if self._should_touch(token_id):
            with write_gate(engine), self.sessions.begin() as session:
                sql.touch_token(session, token_id, stamp)
        return principal

    def _should_touch(self, key: str) -> bool:
        moment = time.monotonic()
        with self._lock:
            if moment - self._touched.get(key, -TOUCH_INTERVAL) < TOUCH_INTERVAL:
                return False
            self._touched[key] = moment
        return True

    # -- sign-in and sessions ---------------------------------------------------------------
    def authenticate(self, username: str, password: str, client: str) -> dict[str, Any]:
        """The user if the password is right; throttled per user and per client address.

        The answer is the same for an unknown user and a wrong password, and takes as long.
        """
        name = username.strip().lower()[:64]
        keys = [(f"user:{name}", MAX_FAILURES_PER_USER),
                (f"client:{client}", MAX_FAILURES_PER_CLIENT)]
        stamp = utcnow()
        with self.sessions.begin() as session:
            for key, _limit in keys:
                row = sql.get_throttle(session, key)
                locked = aware(row.locked_until) if row else None
                if locked is not None and locked > stamp:
                    wait = max(1, int((locked - stamp).total_seconds() + 0.999))
                    raise ThrottledError(
                        f"Too many failed sign-ins; try again in {wait} seconds.",
                        retry_after=wait)
            user = sql.user_by_name(session, name)
        ok = False
        try:
            ok = self.hasher.verify(user.password_hash if user else self._dummy_hash(),
                                    password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
        ok = ok and user is not None and user.is_active
        with self.sessions.begin() as session:
            if not ok:
                for key, limit in keys:
                    self._record_failure(session, key, limit, stamp)
            else:
                assert user is not None
                sql.clear_throttle(session, keys[0][0])
                sql.touch_login(session, user.id)
                if self.hasher.check_needs_rehash(user.password_hash):
                    sql.set_password(session, user.id, self.hasher.hash(password))
        if not ok:
            raise AuthenticationError("Wrong username or password.", code="bad_credentials")
        assert user is not None
        return {"id": user.id, "username": user.username, "is_admin": user.is_admin}

    @staticmethod
    def _record_failure(session: Session, key: str, limit: int, stamp: datetime) -> None:
        row = sql.get_throttle(session, key)
        window = aware(row.window_start) if row else None
        failures = row.failures if row else 0
        if window is None or stamp - window > FAILURE_WINDOW:
            window, failures = stamp, 0
        failures += 1
        locked = None
        if failures >= limit:
            seconds = min(MAX_LOCK_SECONDS, FIRST_LOCK_SECONDS * 2 ** (failures - limit))
            locked = stamp + timedelta(seconds=seconds)
        sql.put_throttle(session, key, failures, window, locked)

    def start_session(self, user_id: str) -> tuple[str, datetime]:
        """A new browser session: (the cookie's value, when it expires)."""
        value = secrets.token_urlsafe(32)
        expires = utcnow() + timedelta(hours=self.settings.session_hours)
        with self.sessions.begin() as session:
            sql.purge_expired_sessions(session, utcnow())
            sql.add_web_session(session, _sha256(value), user_id, expires)
        return value, expires

    def principal_from_session(self, value: str) -> Principal | None:
        if not value or len(value) > 100:
            return None
        with self.sessions.begin() as session:
            row = sql.get_web_session(session, _sha256(value))
            if row is None:
                return None
            expires = aware(row.expires_at)
            if expires is None or expires <= utcnow():
                return None
            user = sql.get_user(session, row.user_id)
            if user is None or not user.is_active:
                return None
            return self._principal(session, user, None, None)

    def end_session(self, value: str) -> None:
        with self.sessions.begin() as session:
            sql.end_web_session(session, _sha256(value))

    def csrf_token(self, session_value: str) -> str:
        """The CSRF token bound to a session (sent back in the X-CSRF-Token header)."""
        return hmac.new(self._csrf_key, session_value.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session_value: str, sent: str | None) -> bool:
        return bool(sent) and hmac.compare_digest(self.csrf_token(session_value), str(sent))


__all__ = ["Accounts", "aware", "utcnow"]
