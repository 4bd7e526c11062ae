"""Sign-in, the current user, API tokens and (for administrators) users."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Path, Request, Response
from fastapi.concurrency import run_in_threadpool

from imagebank.api.schemas import (
    Health,
    LoginIn,
    Me,
    SessionOut,
    TokenCreated,
    TokenIn,
    TokenOut,
    UserIn,
    UserOut,
)
from imagebank.api.security import (
    API_PREFIX,
    SESSION_COOKIE,
    administrator,
    public,
    resolve_principal,
    runtime_of,
    set_audit,
    signed_in,
)
from imagebank.domain.errors import ImagebankError, PermissionDeniedError

router = APIRouter(prefix=API_PREFIX)
USERNAME = Path(pattern=r"^[a-z0-9][a-z0-9._-]{1,63}$", max_length=64)
TOKEN_ID = Path(pattern=r"^[0-9a-f]{16}$")


@router.get("/health", response_model=Health, dependencies=[public], tags=["server"])
def health() -> dict[str, str]:
    """Liveness: answers when the server is up (it says nothing else)."""
    return {"status": "ok"}


@router.post("/session", response_model=SessionOut, dependencies=[public], tags=["session"],
             responses={401: {}, 429: {}})
async def sign_in(request: Request, response: Response, body: LoginIn) -> dict[str, Any]:
    """Sign in with a username and password: sets the session cookie and returns the CSRF
    token to send with every request that changes something."""
    runtime = runtime_of(request)
    client = request.client.host if request.client else "unknown"
    set_audit(request, action="login")
    try:
        user = await run_in_threadpool(runtime.accounts.authenticate, body.username,
                                       body.password, client)
    except ImagebankError:
        # The account attacked is worth recording, but only if it exists: what was typed
        # into the username field could be anything (a password, a patient's name).
        known = await run_in_threadpool(runtime.accounts.user_id_of, body.username)
        if known is not None:
            set_audit(request, actor_id=known, actor=body.username.strip().lower()[:64])
        raise
    set_audit(request, actor_id=user["id"], actor=user["username"], via="password")
    value, expires = await run_in_threadpool(runtime.accounts.start_session, user["id"])
    response.set_cookie(SESSION_COOKIE, value, expires=expires, path="/", httponly=True,
                        secure=runtime.archive.settings.cookie_secure, samesite="strict")
    return {"username": user["username"], "is_admin": user["is_admin"],
            "csrf_token": runtime.accounts.csrf_token(value), "expires_at": expires}


@router.delete("/session", status_code=204, dependencies=[signed_in], tags=["session"])
def sign_out(request: Request) -> Response:
    """Sign out: ends the session (a token needs no sign-out; revoke it instead)."""
    set_audit(request, action="logout")
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        runtime_of(request).accounts.end_session(cookie)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/me", response_model=Me, dependencies=[signed_in], tags=["session"])
def me(request: Request) -> dict[str, Any]:
    """Who you are, how you signed in, and your role on each project."""
    principal = resolve_principal(request)
    assert principal is not None
    return {"id": principal.user_id, "username": principal.username,
            "is_admin": principal.is_admin, "via": principal.via,
            "scopes": sorted(s.value for s in principal.scopes) if principal.scopes else None,
            "roles": {p: r.value for p, r in principal.roles.items()}}


@router.get("/me/tokens", response_model=list[TokenOut], dependencies=[signed_in],
            tags=["tokens"])
def my_tokens(request: Request) -> list[dict[str, Any]]:
    """Your API tokens (never their secret)."""
    principal = resolve_principal(request)
    assert principal is not None
    return runtime_of(request).accounts.tokens(principal.username)


@router.post("/me/tokens", response_model=TokenCreated, status_code=201,
             dependencies=[signed_in], tags=["tokens"])
def create_my_token(request: Request, body: TokenIn) -> dict[str, Any]:
    """A new API token for yourself; the token is in this answer only."""
    principal = resolve_principal(request)
    assert principal is not None
    if principal.scopes is not None and not set(body.scopes) <= {s.value for s in
                                                                  principal.scopes}:
        raise PermissionDeniedError("A token cannot make a token with more scopes than its "
                                    "own.")
    token, row = runtime_of(request).accounts.create_token(
        principal.username, scopes=body.scopes, expires_days=body.expires_days,
        name=body.name)
    set_audit(request, level="token", object_id=row["id"])
    return {**row, "token": token}


@router.delete("/me/tokens/{token_id}", status_code=204, dependencies=[signed_in],
               tags=["tokens"], responses={404: {}})
def revoke_my_token(request: Request, token_id: str = TOKEN_ID) -> Response:
    """Revoke one of your tokens."""
    principal = resolve_principal(request)
    assert principal is not None
    runtime_of(request).accounts.revoke_token(token_id, owner_id=principal.user_id)
    return Response(status_code=204)


@router.get("/users", response_model=list[UserOut], dependencies=[administrator],
            tags=["users"])
def list_users(request: Request) -> list[dict[str, Any]]:
    """Every user, with their roles (administrators only)."""
    return runtime_of(request).accounts.users()


@router.post("/users", response_model=UserOut, status_code=201,
             dependencies=[administrator], tags=["users"], responses={409: {}})
def add_user(request: Request, body: UserIn) -> dict[str, Any]:
    """Add a user (administrators only). The password must follow the password rules."""
    user = runtime_of(request).accounts.add_user(body.username, body.password,
                                                 admin=body.is_admin)
    set_audit(request, level="user", object_id=user["username"])
    return user


@router.get("/users/{username}", response_model=UserOut, dependencies=[administrator],
            tags=["users"], responses={404: {}})
def get_user(request: Request, username: str = USERNAME) -> dict[str, Any]:
    """A user, with their roles (administrators only)."""
    return runtime_of(request).accounts.get_user(username)


@router.post("/users/{username}/tokens", response_model=TokenCreated, status_code=201,
             dependencies=[administrator], tags=["users"], responses={404: {}})
def create_user_token(request: Request, body: TokenIn, username: str = USERNAME
                      ) -> dict[str, Any]:
    """A new API token for a user (administrators only, e.g. for a service account)."""
    token, row = runtime_of(request).accounts.create_token(
        username, scopes=body.scopes, expires_days=body.expires_days, name=body.name)
    return {**row, "token": token}


@router.put("/users/{username}/active", response_model=UserOut,
            dependencies=[administrator], tags=["users"], responses={404: {}})
def set_user_active(request: Request, active: bool = Body(embed=True),
                    username: str = USERNAME) -> dict[str, Any]:
    """Disable (or enable) a user: a disabled user's sessions end and tokens stop working."""
    accounts = runtime_of(request).accounts
    accounts.set_active(username, active)
    return accounts.get_user(username)
