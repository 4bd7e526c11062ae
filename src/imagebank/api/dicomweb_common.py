"""What every DICOMweb resource shares: the projects a request may reach, its base URL, the
UID path parameters and the instances under them.

DICOMweb is served at two places (PS3.18 calls each a *service*): ``/dicomweb`` reaches every
project the principal may read, ``/projects/{project}/dicomweb`` one project. Under the
project's address the route's access dependency has already checked the permission (404 for
a project the user has no role on); under ``/dicomweb`` the route only needs a signed-in user
and the queries are restricted here to the projects the principal's roles and scopes allow.

UIDs appear in paths and queries only: the audit records internal IDs, never UIDs (the path
parameters are named ``*_uid`` so that the audit middleware does not take them for IDs).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fastapi import Path, Request

from imagebank.api.security import resolve_principal, runtime_of, set_audit
from imagebank.domain.access import Permission
from imagebank.domain.errors import NotFoundError, PermissionDeniedError
from imagebank.services.query import Queries

UID_PATTERN = r"^[0-9]+(\.[0-9]+)*$"
STUDY_UID = Path(pattern=UID_PATTERN, max_length=64, description="StudyInstanceUID")
SERIES_UID = Path(pattern=UID_PATTERN, max_length=64, description="SeriesInstanceUID")
SOP_UID = Path(pattern=UID_PATTERN, max_length=64, description="SOPInstanceUID")
GLOBAL_BASE = "/dicomweb"
PROJECT_BASE = "/projects/{project}/dicomweb"
#: The index is read in slices of this many instances' headers (study metadata).
METADATA_CHUNK = 200
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)


def dumps(value: Any) -> bytes:
    return _COMPACT.encode(value).encode("utf-8")


def queries(request: Request) -> Queries:
    return Queries(runtime_of(request).archive)


def project_of(request: Request) -> str | None:
    """The project of a ``/projects/{project}/dicomweb`` request; None under ``/dicomweb``."""
    project = request.path_params.get("project")
    return str(project) if project is not None else None


def projects_in_scope(request: Request, permission: Permission) -> list[str] | None:
    """The projects the request may reach with ``permission``: the path's project, or (under
    ``/dicomweb``) every project the principal's roles and token scopes allow; None means
    every project (an administrator)."""
    project = project_of(request)
    if project is not None:
        return [project]  # the route's access dependency has checked the permission
    principal = resolve_principal(request)
    if principal is None:  # pragma: no cover - the access dependency refused it already
        return []
    if principal.is_admin:
        return None if principal.can("*", permission) else []
    return sorted(p for p in principal.roles if principal.can(p, permission))


def _root(request: Request) -> str:
    """The server's URL as the client addressed it (its Host header).

    A Host without a port that names the very address the connection came in on gets the
    port it came in on: dicomweb-client sends ``Host: 127.0.0.1`` to ``127.0.0.1:8470``, and
    the URLs in its answers (RetrieveURL, BulkDataURI) must still work. Behind a proxy the
    Host names the site, not the backend's address, and is used as it is.
    """
    root = str(request.base_url).rstrip("/")
    host = request.headers.get("host", "")
    server = request.scope.get("server")
    if host and server and ":" not in host.rsplit("]", 1)[-1]:
        address, port = server[0], server[1]
        default = 443 if request.url.scheme == "https" else 80
        if port and port != default and host.strip("[]") == address:
            root = f"{request.url.scheme}://{host}:{port}{request.scope.get('root_path', '')}"
    return root.rstrip("/")


def base_url(request: Request) -> str:
    """The absolute URL of the DICOMweb service the request was made to."""
    root = _root(request)
    project = project_of(request)
    return f"{root}/projects/{project}/dicomweb" if project else f"{root}{GLOBAL_BASE}"


def warning(request: Request, text: str) -> str:
    """A ``Warning`` header value (RFC 7234 5.5; PS3.18 uses code 299 for what a search
    ignored or cut short)."""
    host = request.url.netloc or "imagebank"
    return f'299 {host}: "{text}"'


def instances(request: Request, permission: Permission, study_uid: str,
              series_uid: str | None = None, sop_uid: str | None = None
              ) -> list[dict[str, Any]]:
    """The instance rows under the UIDs, in the request's projects; NotFoundError (404) when
    there are none, PermissionDeniedError (403) when the principal may only read them.

    Under ``/dicomweb`` the same instance may be in two projects: it is sent once.
    """
    readable = projects_in_scope(request, Permission.READ)
    what = "instance" if sop_uid else "series" if series_uid else "study"
    missing = NotFoundError(f"No such {what} in the projects you can read.")
    if readable == []:
        raise missing
    rows = queries(request).instances(readable, study_uid=study_uid, series_uid=series_uid,
                                      sop_uids=[sop_uid] if sop_uid else ())
    if not rows:
        raise missing
    if permission is not Permission.READ and project_of(request) is None:
        allowed = projects_in_scope(request, permission)
        if allowed is not None:
            rows = [r for r in rows if r["project_id"] in allowed]
        if not rows:
            raise PermissionDeniedError(
                f"Your role, or this token's scopes, do not allow this ({permission.value}) "
                f"on the project of this {what}.")
    unique: dict[str, dict[str, Any]] = {}
    for row in rows:
        unique.setdefault(row["sop_instance_uid"], row)
    rows = list(unique.values())
    _audit_rows(request, rows, what)
    return rows


def _audit_rows(request: Request, rows: Sequence[dict[str, Any]], what: str) -> None:
    """The audit event names the object by internal ID (and its project when only one)."""
    projects = {r["project_id"] for r in rows}
    column = {"study": "study_id", "series": "series_id", "instance": "id"}[what]
    ids = {r[column] for r in rows}
    values: dict[str, Any] = {"level": what, "object_id": next(iter(ids)) if len(ids) == 1
                              else None}
    if len(projects) == 1:
        values["project_id"] = next(iter(projects))
    set_audit(request, **values)
