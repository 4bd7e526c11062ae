"""Projects, their members, their quarantine, change feed and audit events."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Query, Request, Response

from imagebank.api.schemas import (
    AuditEventOut,
    ChangesPage,
    MemberIn,
    MemberOut,
    ProjectIn,
    ProjectOut,
    QuarantineOut,
)
from imagebank.api.security import (
    API_PREFIX,
    administrator,
    project_access,
    resolve_principal,
    runtime_of,
    set_audit,
    signed_in,
)
from imagebank.domain.access import Permission
from imagebank.domain.errors import InvalidInputError

router = APIRouter(prefix=API_PREFIX, tags=["projects"])
USERNAME = Path(pattern=r"^[a-z0-9][a-z0-9._-]{1,63}$", max_length=64)
LIMIT = Query(100, ge=1, le=1000)
SINCE = Query(0, ge=0, le=2**62)


@router.get("/projects", response_model=list[ProjectOut], dependencies=[signed_in])
def list_projects(request: Request) -> list[dict[str, Any]]:
    """The projects you have a role on (every project, for an administrator)."""
    return visible_projects(request)


def visible_projects(request: Request) -> list[dict[str, Any]]:
    """The projects the principal has a role on (every project, for an administrator), with
    their role and counts: what the API's project list and the UI's both show."""
    principal = resolve_principal(request)
    assert principal is not None
    visible = principal.visible_projects()
    out = []
    for row in runtime_of(request).archive.projects():
        if visible is None or row["id"] in visible:
            role = principal.roles.get(row["id"])
            counts = {name: int(row.get(name) or 0)
                      for name in ("subjects", "studies", "series", "instances")}
            counts["bytes"] = int(row.get("size_bytes") or 0)
            out.append({**row, "role": role.value if role else None, "counts": counts})
    return out


@router.post("/projects", response_model=ProjectOut, status_code=201,
             dependencies=[administrator], responses={409: {}})
def create_project(request: Request, body: ProjectIn) -> dict[str, Any]:
    """Create a project (administrators only); grant roles on it next."""
    from imagebank.services.policies import project_policy_texts

    set_audit(request, project_id=body.id, level="project", object_id=body.id)
    policy = (project_policy_texts(body.policies, body.options)
              if body.zone == "research" else None)
    if body.zone != "research" and (body.policies or body.options):
        raise InvalidInputError("Only a research project has policies and options.")
    return runtime_of(request).archive.create_project(
        body.id, body.name, body.description, zone=body.zone, policy=policy,
        options=body.options)


@router.get("/projects/{project}", response_model=ProjectOut,
            dependencies=[project_access(Permission.READ)], responses={404: {}})
def get_project(request: Request, project: str) -> dict[str, Any]:
    """A project with its counts of subjects, studies, series, instances and bytes."""
    principal = resolve_principal(request)
    assert principal is not None
    role = principal.roles.get(project)
    return {**runtime_of(request).archive.project_summary(project),
            "role": role.value if role else None}


@router.get("/projects/{project}/members", response_model=list[MemberOut],
            dependencies=[project_access(Permission.MANAGE)], responses={403: {}, 404: {}})
def list_members(request: Request, project: str) -> list[dict[str, Any]]:
    """Who has which role on the project (owners)."""
    return runtime_of(request).accounts.members(project)


@router.put("/projects/{project}/members/{username}", response_model=MemberOut,
            dependencies=[project_access(Permission.MANAGE, "grant")],
            responses={403: {}, 404: {}, 409: {}})
def grant_role(request: Request, project: str, body: MemberIn, username: str = USERNAME
               ) -> dict[str, Any]:
    """Give a user a role on the project (owners): owner, member, collaborator, viewer."""
    principal = resolve_principal(request)
    assert principal is not None
    runtime = runtime_of(request)
    runtime.accounts.grant(project, username, body.role, by=principal.username)
    return next(m for m in runtime.accounts.members(project) if m["username"] == username)


@router.delete("/projects/{project}/members/{username}", status_code=204,
               dependencies=[project_access(Permission.MANAGE, "revoke")],
               responses={403: {}, 404: {}, 409: {}})
def revoke_role(request: Request, project: str, username: str = USERNAME) -> Response:
    """Remove a user's role on the project (owners)."""
    runtime_of(request).accounts.revoke(project, username)
    return Response(status_code=204)


@router.get("/projects/{project}/quarantine", response_model=list[QuarantineOut],
            dependencies=[project_access(Permission.MANAGE)], responses={403: {}, 404: {}})
def quarantine(request: Request, project: str, limit: int = LIMIT) -> list[dict[str, Any]]:
    """What was received for the project and not archived, with the reason (owners)."""
    return runtime_of(request).archive.quarantine(project, limit=limit)


@router.get("/projects/{project}/changes", response_model=ChangesPage,
            dependencies=[project_access(Permission.READ)], responses={404: {}})
def changes(request: Request, project: str, since: int = SINCE, limit: int = LIMIT
            ) -> dict[str, Any]:
    """What arrived in the project after the cursor ``since`` (0: from the start)."""
    rows, latest = runtime_of(request).archive.changes(project, since=since, limit=limit)
    last = rows[-1]["seq"] if rows else max(since, 0)
    return {"changes": rows, "last": last, "done": last >= latest}


@router.get("/projects/{project}/audit", response_model=list[AuditEventOut],
            dependencies=[project_access(Permission.AUDIT, "audit")],
            responses={403: {}, 404: {}})
def project_audit(request: Request, project: str, since: int = SINCE, limit: int = LIMIT
                  ) -> list[dict[str, Any]]:
    """The project's audit events after sequence number ``since`` (owners)."""
    return runtime_of(request).audit.events(project_id=project, since=since, limit=limit)


@router.get("/audit", response_model=list[AuditEventOut], dependencies=[administrator],
            tags=["audit"])
def audit(request: Request, since: int = SINCE, limit: int = LIMIT) -> list[dict[str, Any]]:
    """Every audit event after sequence number ``since`` (administrators)."""
    return runtime_of(request).audit.events(since=since, limit=limit)
