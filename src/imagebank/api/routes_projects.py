"""Projects, their members, their quarantine, change feed and audit events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from imagebank.api.schemas import (
    AuditEventOut,
    AuditVerificationOut,
    ChangesPage,
    MemberIn,
    MemberOut,
    ProjectIn,
    ProjectOut,
    QuarantineOut,
    QuarantineRetryOut,
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
OFFSET = Query(0, ge=0, le=10_000_000)
QUARANTINE_ITEM = Path(pattern=r"^[0-9a-f]{32}$", description="A quarantine item's ID")


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
def quarantine(request: Request, project: str, limit: int = LIMIT, offset: int = OFFSET
               ) -> list[dict[str, Any]]:
    """What was received for the project and not archived, with the reason (owners), oldest
    first."""
    from imagebank.services.quarantine import list_items

    return list_items(runtime_of(request).archive, project, limit=limit, offset=offset)


@router.post("/projects/{project}/quarantine/{item}/retry", response_model=QuarantineRetryOut,
             dependencies=[project_access(Permission.MANAGE, "quarantine_retry")],
             responses={403: {}, 404: {}, 409: {}})
def retry_quarantined(request: Request, project: str, item: str = QUARANTINE_ITEM
                      ) -> dict[str, Any]:
    """Ingest a quarantined item's kept bytes again, as a new upload to the project would be
    (owners). Archived now, the item and its bytes leave the quarantine; refused again, the
    item stays with the new reason. 409 when its bytes were not kept."""
    from imagebank.services.quarantine import retry

    set_audit(request, level="quarantine", object_id=item)
    result = retry(runtime_of(request).archive, item, project)
    set_audit(request, detail={"outcome": result.outcome.value})
    return result.as_dict()


@router.delete("/projects/{project}/quarantine/{item}", status_code=204,
               dependencies=[project_access(Permission.MANAGE, "quarantine_discard")],
               responses={403: {}, 404: {}})
def discard_quarantined(request: Request, project: str, item: str = QUARANTINE_ITEM
                        ) -> Response:
    """Discard a quarantined item: its record, and its kept bytes (owners)."""
    from imagebank.services.quarantine import discard

    set_audit(request, level="quarantine", object_id=item)
    discard(runtime_of(request).archive, item, project)
    return Response(status_code=204)


@router.get("/projects/{project}/changes", response_model=ChangesPage,
            dependencies=[project_access(Permission.READ)], responses={404: {}})
def changes(request: Request, project: str, since: int = SINCE, limit: int = LIMIT
            ) -> dict[str, Any]:
    """What arrived in the project after the cursor ``since`` (0: from the start)."""
    rows, latest = runtime_of(request).archive.changes(project, since=since, limit=limit)
    last = rows[-1]["seq"] if rows else max(since, 0)
    return {"changes": rows, "last": last, "done": last >= latest}


#: An ISO 8601 date or time, as the audit's time filters take it (a number is not a time:
#: pydantic would read it as seconds since 1970).
ISO_TIME = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
            r"(Z|[+-][0-9]{2}:?[0-9]{2})?)?$")


def _utc_text(text: str | None) -> str | None:
    """A time as the trail stores it (UTC ISO text, so that texts compare as times)."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInputError("A time filter is not a date or time (ISO 8601, e.g. "
                                "2026-11-30 or 2026-11-30T09:00:00Z).") from None
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    try:
        return aware.astimezone(UTC).isoformat(timespec="microseconds")
    except OverflowError:  # e.g. 0001-01-01T00:00+05:00
        raise InvalidInputError("A time filter is out of range.") from None


def audit_filters(
    before: int | None = Query(None, ge=1, le=2**62, description="Only events before this "
                               "sequence number (the next page, newest first)."),
    actor: str | None = Query(None, min_length=1, max_length=64, description="Only this "
                              "user's events (a username, or a command's OS account)."),
    action: str | None = Query(None, pattern=r"^[a-z0-9_ -]{1,32}$", description="Only this "
                               "action: read, search, download, write, grant, login, ..."),
    outcome: Literal["ok", "denied", "rejected", "error"] | None = Query(None),
    at_from: Annotated[str | None, Query(
        alias="from", pattern=ISO_TIME, max_length=40, description="Only events at or after "
        "this time (ISO 8601; UTC when it has no zone).")] = None,
    at_to: Annotated[str | None, Query(
        alias="to", pattern=ISO_TIME, max_length=40, description="Only events before this "
        "time (ISO 8601; UTC when it has no zone).")] = None,
    order: Literal["asc", "desc"] = Query("asc", description="asc: oldest first (a feed "
                                          "read after `since`); desc: newest first."),
) -> dict[str, Any]:
    """The audit trail's filters (none of them patient data: the trail holds none)."""
    return {"before": before, "actor": actor, "action": action, "outcome": outcome,
            "at_from": _utc_text(at_from), "at_to": _utc_text(at_to),
            "newest_first": order == "desc"}


AUDIT_FILTERS = Depends(audit_filters)


@router.get("/projects/{project}/audit", response_model=list[AuditEventOut],
            dependencies=[project_access(Permission.AUDIT, "audit")],
            responses={400: {}, 403: {}, 404: {}})
def project_audit(request: Request, project: str, since: int = SINCE, limit: int = LIMIT,
                  filters: dict[str, Any] = AUDIT_FILTERS) -> list[dict[str, Any]]:
    """The project's audit events after sequence number ``since`` (owners), oldest first
    unless ``order=desc``, narrowed by the filters given."""
    return runtime_of(request).audit.events(project_id=project, since=since, limit=limit,
                                            **filters)


@router.get("/audit", response_model=list[AuditEventOut], dependencies=[administrator],
            tags=["audit"], responses={400: {}})
def audit(request: Request, since: int = SINCE, limit: int = LIMIT,
          filters: dict[str, Any] = AUDIT_FILTERS) -> list[dict[str, Any]]:
    """Every audit event after sequence number ``since`` (administrators), oldest first
    unless ``order=desc``, narrowed by the filters given."""
    return runtime_of(request).audit.events(since=since, limit=limit, **filters)


@router.get("/audit/verification", response_model=AuditVerificationOut,
            dependencies=[administrator], tags=["audit"])
async def verify_audit(request: Request) -> dict[str, Any]:
    """Walk the whole hash chain now (as `imagebank audit verify`): whether any event was
    edited, inserted or deleted (administrators). It reads every event (about 12,000 a
    second on SQLite: over a minute for a million)."""
    report = await run_in_threadpool(runtime_of(request).audit.verify)
    return {"ok": report.ok, "events": report.events, "head_seq": report.head_seq,
            "unknown_key_events": report.unknown_key_events,
            "problems": list(report.problems)}
