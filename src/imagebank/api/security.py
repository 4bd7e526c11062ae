"""Authentication and authorisation of every route (deny by default).

Every route declares exactly one *access dependency* from this module: ``public``,
``signed_in``, ``administrator`` or ``project_access(permission)``. Each is marked with
``ACCESS_ATTR`` so that a test walking the route table fails on a route without one.

A request is authenticated by a bearer token (``Authorization: Bearer ibt_...``) or by the
session cookie; with the cookie, a request that changes anything must also send the session's
CSRF token in ``X-CSRF-Token``. A user with no role on a project gets 404 for anything in it,
exactly as if it did not exist; a user who may see it but not do this gets 403.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Depends, Path, Request

from imagebank.domain.access import Permission, Principal, Scope
from imagebank.domain.errors import AuthenticationError, NotFoundError, PermissionDeniedError
from imagebank.services.runtime import Runtime

API_PREFIX = "/api/v1"
ACCESS_ATTR = "__imagebank_access__"
SESSION_COOKIE = "imagebank_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PROJECT_PATH = Path(description="Project ID", pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
                    max_length=63)


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _state(request: Request) -> dict[str, Any]:
    state: dict[str, Any] = request.scope.setdefault("state", {})
    return state


def resolve_principal(request: Request) -> Principal | None:
    """The principal of the request (cached on it), or None when it sends no credentials."""
    state = _state(request)
    if "principal" in state:
        return state["principal"]  # type: ignore[no-any-return]
    runtime = runtime_of(request)
    principal: Principal | None = None
    header = request.headers.get("authorization", "")
    cookie = request.cookies.get(SESSION_COOKIE)
    if header:
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise AuthenticationError("Send an API token as 'Authorization: Bearer <token>'.")
        principal = runtime.accounts.principal_from_token(credentials)
        if principal is None:
            raise AuthenticationError(
                "The API token is not valid: it is unknown, revoked or expired. Create a new "
                "one with `imagebank token create`.", code="bad_token")
    elif cookie:
        principal = runtime.accounts.principal_from_session(cookie)
        if principal is None:
            raise AuthenticationError("Your session has ended; sign in again.",
                                      code="session_ended")
        if request.method not in SAFE_METHODS and not runtime.accounts.csrf_ok(
                cookie, request.headers.get(CSRF_HEADER)):
            # Not cached as the principal (the request is refused), but audited as theirs.
            state.setdefault("audit", {}).update(
                actor_id=principal.user_id, actor=principal.username, via=principal.via)
            raise PermissionDeniedError(
                f"A request that changes something must send the {CSRF_HEADER} header "
                "given at sign-in.", code="csrf")
    state["principal"] = principal
    return principal


def _require(request: Request) -> Principal:
    principal = resolve_principal(request)
    if principal is None:
        raise AuthenticationError("Sign in, or send an API token as 'Authorization: Bearer "
                                  "<token>'.")
    return principal


def _marked(function: Callable[..., Any], label: str) -> Callable[..., Any]:
    setattr(function, ACCESS_ATTR, label)
    return function


def _public(request: Request) -> None:
    _state(request).setdefault("audit", {})


def _signed_in(request: Request) -> Principal:
    principal = _require(request)
    # A token without the read scope reads nothing, not even the list of its projects.
    if (request.method in SAFE_METHODS and principal.scopes is not None
            and Scope.READ not in principal.scopes):
        raise PermissionDeniedError("This token's scopes do not include 'read'.")
    return principal


def _administrator(request: Request) -> Principal:
    principal = _require(request)
    if not principal.can_administer():
        raise PermissionDeniedError("Only a site administrator (with a token of scope "
                                    "'admin') may do this.")
    _state(request).setdefault("audit", {})["action"] = "admin"
    return principal


_marked(_public, "public")
_marked(_signed_in, "signed_in")
_marked(_administrator, "administrator")

public = Depends(_public)
signed_in = Depends(_signed_in)
administrator = Depends(_administrator)


def project_access(permission: Permission, action: str | None = None) -> Any:
    """A dependency: the principal has ``permission`` on the path's ``project``."""

    def dependency(request: Request, project: str = PROJECT_PATH) -> Principal:
        audit = _state(request).setdefault("audit", {})
        audit["action"] = action or permission.value  # before: a 401 is audited as the action
        principal = _require(request)
        if not principal.knows(project) or not runtime_of(request).archive.has_project(project):
            raise NotFoundError(f"No project {project!r}.")
        audit["project_id"] = project
        if not principal.can(project, permission):
            raise PermissionDeniedError(
                f"Your role on project {project!r} does not allow this ({permission.value}); "
                "a project owner can change your role."
                if principal.scopes is None else
                f"Your role, or this token's scopes, do not allow this ({permission.value}) "
                f"on project {project!r}.")
        return principal

    _marked(dependency, f"project:{permission.value}")
    dependency.__name__ = f"project_{permission.value}"
    return Depends(dependency)


def set_audit(request: Request, **values: Any) -> None:
    """Add to the request's audit event (an action, a level and object ID, a detail)."""
    _state(request).setdefault("audit", {}).update(values)
