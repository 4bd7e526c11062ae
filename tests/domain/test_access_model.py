"""The access model: roles x permissions x token scopes, administrators, and parsing.

The expected tables are written out here from the model's description (decision 0007 and the
module docstring), not derived from the code's own tables.
"""

from __future__ import annotations

import dataclasses
from itertools import combinations

import pytest

from imagebank.domain.access import (
    Permission,
    Principal,
    Role,
    Scope,
    parse_role,
    parse_scopes,
)

R, D, W, X, M, A = (Permission.READ, Permission.DOWNLOAD, Permission.WRITE, Permission.DELETE,
                    Permission.MANAGE, Permission.AUDIT)
ALL = {R, D, W, X, M, A}

#: What each role may do on its project.
ROLE_MAY = {
    Role.VIEWER: {R},
    Role.COLLABORATOR: {R, D},
    Role.MEMBER: {R, D, W},
    Role.OWNER: ALL,
}
#: What a token of each scope may be used for.
SCOPE_MAY = {
    Scope.READ: {R, D, A},
    Scope.WRITE: {W, X},
    Scope.ADMIN: {M},
}
SCOPE_SETS: list[frozenset[Scope] | None] = [None] + [
    frozenset(c) for n in range(4) for c in combinations(Scope, n)]


def user(roles: dict[str, Role] | None = None, scopes: frozenset[Scope] | None = None,
         *, admin: bool = False) -> Principal:
    return Principal(user_id="u" * 32, username="someone", is_admin=admin, roles=roles or {},
                     scopes=scopes, token_id=None if scopes is None else "0123456789abcdef")


def allowed_by(scopes: frozenset[Scope] | None) -> set[Permission]:
    if scopes is None:
        return set(ALL)
    return set().union(*(SCOPE_MAY[s] for s in scopes)) if scopes else set()


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("scopes", SCOPE_SETS, ids=lambda s: "session" if s is None else
                         "+".join(sorted(x.value for x in s)) or "none")
def test_role_and_scopes_decide_each_permission(role: Role,
                                                scopes: frozenset[Scope] | None) -> None:
    principal = user({"alpha": role}, scopes)
    expected = ROLE_MAY[role] & allowed_by(scopes)
    assert {p for p in Permission if principal.can("alpha", p)} == expected
    # Nothing at all on a project without a role, whatever the scopes.
    assert not any(principal.can("beta", p) for p in Permission)
    assert principal.knows("alpha") and not principal.knows("beta")
    assert principal.visible_projects() == frozenset({"alpha"})
    assert not principal.can_administer()


def test_roles_are_per_project() -> None:
    principal = user({"alpha": Role.OWNER, "beta": Role.VIEWER})
    assert principal.can("alpha", Permission.MANAGE)
    assert not principal.can("beta", Permission.DOWNLOAD)
    assert principal.can("beta", Permission.READ)
    assert principal.visible_projects() == frozenset({"alpha", "beta"})
    nobody = user()
    assert nobody.visible_projects() == frozenset()
    assert not nobody.knows("alpha")
    assert not any(nobody.can("alpha", p) for p in Permission)


@pytest.mark.parametrize("scopes", SCOPE_SETS, ids=lambda s: "session" if s is None else
                         "+".join(sorted(x.value for x in s)) or "none")
def test_an_administrator_may_do_what_the_scopes_allow_everywhere(
        scopes: frozenset[Scope] | None) -> None:
    admin = user(scopes=scopes, admin=True)
    for project in ("alpha", "any-project-at-all"):
        assert admin.knows(project)
        assert {p for p in Permission if admin.can(project, p)} == allowed_by(scopes)
    assert admin.visible_projects() is None
    assert admin.can_administer() == (scopes is None or Scope.ADMIN in scopes)


def test_how_the_principal_signed_in() -> None:
    assert user().via == "session"
    assert user(scopes=frozenset({Scope.READ})).via == "token"
    with pytest.raises(dataclasses.FrozenInstanceError):
        user().is_admin = True  # type: ignore[misc]


@pytest.mark.parametrize(("text", "role"), [
    ("owner", Role.OWNER), ("Member", Role.MEMBER), ("  collaborator ", Role.COLLABORATOR),
    ("VIEWER", Role.VIEWER)])
def test_parse_role(text: str, role: Role) -> None:
    assert parse_role(text) is role


@pytest.mark.parametrize("text", ["admin", "", "own", "owners", "read"])
def test_parse_role_refuses_unknown_roles_naming_the_known_ones(text: str) -> None:
    with pytest.raises(ValueError, match="unknown role") as caught:
        parse_role(text)
    for role in ("owner", "member", "collaborator", "viewer"):
        assert role in str(caught.value)


def test_parse_scopes() -> None:
    assert parse_scopes([]) == frozenset()
    assert parse_scopes(["read"]) == {Scope.READ}
    assert parse_scopes([" READ", "write ", "read"]) == {Scope.READ, Scope.WRITE}
    assert parse_scopes(["admin", "write", "read"]) == set(Scope)
    assert parse_scopes(s for s in ("admin",)) == {Scope.ADMIN}  # any iterable


@pytest.mark.parametrize("bad", [["delete"], ["read", "everything"], [""], ["read,write"]])
def test_parse_scopes_refuses_unknown_scopes(bad: list[str]) -> None:
    with pytest.raises(ValueError, match="unknown scope") as caught:
        parse_scopes(bad)
    message = str(caught.value)
    assert "read" in message and "write" in message and "admin" in message
