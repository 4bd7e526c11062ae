"""Web UI pages (decisions 0027, 0031): the audit trail, a project's policy and members,
users and tokens.

The pages are rendered from the same functions the REST API's routes use, and every change
they make goes through the REST API (ui.js adds the CSRF token): the audit trail is read
by its page's script from ``GET /api/v1/.../audit`` (so reading it is itself audited, and its
filters, none of them patient data, travel in the API's query string, never the page's);
roles, users and tokens change through the members, users and tokens routes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from imagebank.api.routes_accounts import me, my_tokens
from imagebank.api.routes_governance import project_policy
from imagebank.api.routes_projects import visible_projects
from imagebank.api.security import (
    administrator,
    project_access,
    resolve_principal,
    runtime_of,
    signed_in,
)
from imagebank.api.ui import page, project_page
from imagebank.domain.access import Permission, Role, Scope
from imagebank.domain.confidentiality import OPTION_CODES, Option

router = APIRouter(include_in_schema=False)

#: Actions the audit page suggests (any other can be typed): the permissions a route needs,
#: what some routes record instead, and the command line's administration.
AUDIT_ACTIONS = ("read", "search", "download", "write", "delete", "manage", "audit", "grant",
                 "revoke", "login", "logout", "admin", "cancel", "share", "release",
                 "quarantine_retry", "quarantine_discard",
                 "cohort_search", "clinical_import", "associate", "user_add", "user_disable",
                 "user_enable", "token_create", "token_revoke")
#: How long a new token lasts, as the token forms offer it (days; None: never expires).
TOKEN_EXPIRIES = ((7, "7 days"), (30, "30 days"), (90, "90 days"), (365, "a year"),
                  (None, "never"))
#: What each token scope allows (decision 0007).
SCOPE_WORDS = {Scope.READ.value: "read: list, search, download, read audit trails",
               Scope.WRITE.value: "write: upload, import, delete",
               Scope.ADMIN.value: "admin: manage roles and quarantine (and, for a site "
                                  "administrator, users and projects)"}

#: What each profile option (PS3.15 E.3) keeps when a project uses it, and what the basic
#: profile does instead (decisions 0014, 0015).
OPTION_WORDS: dict[Option, tuple[str, str]] = {
    Option.RETAIN_LONG_FULL_DATES: (
        "Dates and times are kept as they are.",
        "Dates and times are removed or replaced."),
    Option.RETAIN_LONG_MODIFIED_DATES: (
        "Dates are shifted back by 1 to 3,650 days, the same for every date of a patient, so "
        "the intervals between them are kept; times are kept.",
        "Dates are removed or replaced by dummies; no intervals survive."),
    Option.CLEAN_DESCRIPTORS: (
        "Descriptions (study, series, protocol) are kept, cleaned of identifying words.",
        "Descriptions are removed."),
    Option.RETAIN_UIDS: (
        "The original UIDs are kept.",
        "Every UID is replaced by a new one, keyed, the same for every reference to it."),
    Option.RETAIN_DEVICE_IDENTITY: (
        "Device identity (station name, serial numbers) is kept.",
        "Device identity is removed."),
    Option.RETAIN_PATIENT_CHARACTERISTICS: (
        "Age, sex, size, weight and similar characteristics are kept.",
        "Patient characteristics are removed."),
    Option.RETAIN_INSTITUTION_IDENTITY: (
        "The institution's name and address are kept.",
        "The institution's name and address are removed."),
    Option.CLEAN_GRAPHICS: (
        "Graphic annotations are kept, cleaned of identifying text.",
        "Graphic annotations are removed."),
    Option.CLEAN_STRUCTURED_CONTENT: (
        "Structured reports' content is kept, cleaned of identifying values.",
        "Structured content that may identify is removed."),
    Option.RETAIN_SAFE_PRIVATE: (
        "Private elements on the policy's safe list are kept.",
        "Every private element is removed."),
}


def when(value: datetime | str | None) -> str:
    """A time as every page of this module shows it: ``2026-03-01 14:05 UTC``."""
    if value is None or value == "":
        return ""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def token_state(token: dict[str, Any], now: datetime | None = None) -> str:
    """active, revoked or expired."""
    if token.get("revoked_at") is not None:
        return "revoked"
    expires = token.get("expires_at")
    if expires is not None and expires <= (now or datetime.now(UTC)):
        return "expired"
    return "active"


# -- the audit trail ----------------------------------------------------------------------------
@router.get("/ui/projects/{project}/audit", response_class=HTMLResponse,
            dependencies=[project_access(Permission.AUDIT, "audit")])
def project_audit_page(request: Request, project: str) -> HTMLResponse:
    """A project's audit trail (owners), newest first, filtered by its script."""
    return project_page(request, "audit.html", project, section="audit",
                        source=f"/api/v1/projects/{project}/audit", actions=AUDIT_ACTIONS)


@router.get("/ui/audit", response_class=HTMLResponse, dependencies=[administrator])
def audit_page(request: Request) -> HTMLResponse:
    """The whole audit trail (administrators), with the chain's verification."""
    return page(request, "audit.html", project=None, source="/api/v1/audit",
                actions=AUDIT_ACTIONS)


# -- a project's policy -------------------------------------------------------------------------
@router.get("/ui/projects/{project}/policy", response_class=HTMLResponse,
            dependencies=[project_access(Permission.READ)])
def policy_page(request: Request, project: str) -> HTMLResponse:
    """The project's harmonised governance policy in words, and its YAML."""
    shown = project_policy(request, project)
    options = []
    if shown.get("policy") is not None:
        allowed = set(shown["policy"]["allowed_options"])
        used = set(shown["options"])
        for option in Option:
            keeps, otherwise = OPTION_WORDS[option]
            options.append({"name": option.value, "title": OPTION_CODES[option][1],
                            "allowed": option.value in allowed, "used": option.value in used,
                            "keeps": keeps, "otherwise": otherwise})
    return project_page(request, "policy.html", project, section="policy", shown=shown,
                        options=options)


# -- a project's members ------------------------------------------------------------------------
@router.get("/ui/projects/{project}/members", response_class=HTMLResponse,
            dependencies=[project_access(Permission.MANAGE, "read")])
def members_page(request: Request, project: str) -> HTMLResponse:
    """Who has which role on the project (owners): change, add and remove roles."""
    members = runtime_of(request).accounts.members(project)
    return project_page(request, "members.html", project, section="members", members=members,
                        roles=[r.value for r in Role], when=when)


# -- users (site administrators) ----------------------------------------------------------------
@router.get("/ui/users", response_class=HTMLResponse, dependencies=[administrator])
def users_page(request: Request) -> HTMLResponse:
    """Every user: create one, activate or deactivate, make a token for one."""
    return page(request, "users.html", users=runtime_of(request).accounts.users(), when=when,
                scopes=SCOPE_WORDS, expiries=TOKEN_EXPIRIES)


# -- your account -------------------------------------------------------------------------------
@router.get("/ui/account", response_class=HTMLResponse, dependencies=[signed_in])
def account_page(request: Request) -> HTMLResponse:
    """Who you are, your roles, and your API tokens."""
    principal = resolve_principal(request)
    assert principal is not None
    names = {p["id"]: p["name"] for p in visible_projects(request)} if principal.roles else {}
    tokens = my_tokens(request)
    for token in tokens:
        token["state"] = token_state(token)
    return page(request, "account.html", me=me(request), project_names=names,
                tokens=list(reversed(tokens)), when=when, scopes=SCOPE_WORDS,
                expiries=TOKEN_EXPIRIES)
