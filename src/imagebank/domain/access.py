"""Who may do what: project roles, permissions, token scopes and the principal of a request.

The model is XNAT's, which research users know: on each project a user is an *owner*,
*member*, *collaborator* or *viewer*; a *site administrator* may do everything everywhere.
Access is denied by default: a user with no role on a project cannot learn that it exists.
See docs/decisions/0007-access-model.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class Permission(StrEnum):
    """What a request needs on a project."""

    READ = "read"  # list, search, count, read metadata
    DOWNLOAD = "download"  # fetch pixel data and files
    WRITE = "write"  # upload, attach resources, start imports
    DELETE = "delete"  # remove data
    MANAGE = "manage"  # grant roles, read the quarantine
    AUDIT = "audit"  # read the project's audit events


class Role(StrEnum):
    """A user's role on one project (XNAT's owner/member/collaborator, plus viewer)."""

    OWNER = "owner"
    MEMBER = "member"
    COLLABORATOR = "collaborator"
    VIEWER = "viewer"


ROLE_PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.READ}),
    Role.COLLABORATOR: frozenset({Permission.READ, Permission.DOWNLOAD}),
    Role.MEMBER: frozenset({Permission.READ, Permission.DOWNLOAD, Permission.WRITE}),
    Role.OWNER: frozenset(Permission),
}


class Scope(StrEnum):
    """What an API token may be used for; a token never exceeds its user's own rights."""

    READ = "read"  # read, download, audit
    WRITE = "write"  # write, delete
    ADMIN = "admin"  # manage projects, users and roles


SCOPE_PERMISSIONS: Mapping[Scope, frozenset[Permission]] = {
    Scope.READ: frozenset({Permission.READ, Permission.DOWNLOAD, Permission.AUDIT}),
    Scope.WRITE: frozenset({Permission.WRITE, Permission.DELETE}),
    Scope.ADMIN: frozenset({Permission.MANAGE}),
}

DEFAULT_SCOPES: frozenset[Scope] = frozenset({Scope.READ})


def parse_scopes(values: Iterable[str]) -> frozenset[Scope]:
    """Scopes from their names; raises ValueError naming the unknown one."""
    scopes = set()
    for value in values:
        try:
            scopes.add(Scope(value.strip().lower()))
        except ValueError:
            known = ", ".join(s.value for s in Scope)
            raise ValueError(f"unknown scope {value!r}; the scopes are {known}") from None
    return frozenset(scopes)


def parse_role(value: str) -> Role:
    try:
        return Role(value.strip().lower())
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise ValueError(f"unknown role {value!r}; the roles are {known}") from None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a signed-in user (session) or a user's API token."""

    user_id: str
    username: str
    is_admin: bool = False
    roles: Mapping[str, Role] = field(default_factory=dict)
    #: None for a browser session (the user's full rights); a token's scopes otherwise.
    scopes: frozenset[Scope] | None = None
    token_id: str | None = None

    @property
    def via(self) -> str:
        return "token" if self.token_id else "session"

    def _scope_allows(self, permission: Permission) -> bool:
        if self.scopes is None:
            return True
        return any(permission in SCOPE_PERMISSIONS[s] for s in self.scopes)

    def knows(self, project_id: str) -> bool:
        """May this principal learn that the project exists?"""
        return self.is_admin or project_id in self.roles

    def can(self, project_id: str, permission: Permission) -> bool:
        if not self._scope_allows(permission):
            return False
        if self.is_admin:
            return True
        role = self.roles.get(project_id)
        return role is not None and permission in ROLE_PERMISSIONS[role]

    def can_administer(self) -> bool:
        """Site administration: users, projects, the whole audit trail."""
        return self.is_admin and self._scope_allows(Permission.MANAGE)

    def visible_projects(self) -> frozenset[str] | None:
        """The projects this principal may see; None means all of them (administrator)."""
        if self.is_admin:
            return None
        return frozenset(self.roles)
