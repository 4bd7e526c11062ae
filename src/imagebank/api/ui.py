"""The web UI (issue 7, decision 0027): server-rendered pages (Jinja2, autoescaped) on the
same data and permissions as the REST API, and a little JavaScript that calls the API.

Pages hold no patient data in their URLs. A page asked for without a session (by a browser:
it accepts text/html) is sent to the sign-in page instead of an API problem. Static files are
served by an ordinary route from a fixed list, so every route of the application still has
exactly one access dependency (decision 0007).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from imagebank.api.routes_projects import visible_projects
from imagebank.api.security import (
    SESSION_COOKIE,
    project_access,
    public,
    resolve_principal,
    runtime_of,
    signed_in,
)
from imagebank.domain.access import Permission
from imagebank.domain.errors import NotFoundError

router = APIRouter(include_in_schema=False)
HERE = Path(__file__).resolve().parent
TEMPLATES = Jinja2Templates(directory=HERE / "templates")


def human_size(size: int | None) -> str:
    """A number of bytes for people: 512 bytes, 1.5 KiB, 4 GiB."""
    if size is None:
        return ""
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            break
        value /= 1024
    if unit == "bytes":
        return f"{int(value):,} bytes"
    return f"{value:,.1f} {unit}".replace(".0 ", " ")


def dicom_date(value: str | None) -> str:
    """A DICOM date (DA, YYYYMMDD: PS3.5 6.2) as YYYY-MM-DD; any other value as it is (an
    old-style or partial date, a range), None as nothing."""
    if value is None:
        return ""
    if len(value) == 8 and value.isascii() and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value


TEMPLATES.env.filters["size"] = human_size
TEMPLATES.env.filters["dicom_date"] = dicom_date
STATIC_DIR = HERE / "static"
#: The media types of the static files served (by their suffix; nothing but the files in
#: api/static/ with these suffixes is served under /ui/static/).
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml",
                ".png": "image/png"}
SIGN_IN = "/ui/sign-in"


def page(request: Request, template: str, **context: Any) -> HTMLResponse:
    """``template`` rendered for the request's user. Every page gets ``user`` (the username,
    or None), ``is_admin`` and ``csrf_token`` (the session's, for the page's scripts: they
    send it in X-CSRF-Token with every request that changes something)."""
    principal = resolve_principal(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    csrf = (runtime_of(request).accounts.csrf_token(cookie)
            if principal is not None and principal.via == "session" and cookie else "")
    response = TEMPLATES.TemplateResponse(request, template, {
        "user": principal.username if principal else None,
        "is_admin": bool(principal and principal.can_administer()),
        "csrf_token": csrf, **context})
    # Pages are per user and may list what only they may see: never cached.
    response.headers["Cache-Control"] = "no-store"
    return response


def project_page(request: Request, template: str, project: str, *, section: str,
                 **context: Any) -> HTMLResponse:
    """A page of one project: ``template`` with ``project`` (its row; the pages that show
    its counts pass ``counts``, the index's most costly question), ``can`` (the user's
    permissions on it, by name: read, download, write, delete, manage, audit) and
    ``section`` (which entry of the project's menu, _project_nav.html, is this page:
    studies, subjects, search, cohort, upload, quarantine, members, policy, audit)."""
    principal = resolve_principal(request)
    row = runtime_of(request).archive.ensure_project(project)
    can = {p.value: bool(principal and principal.can(project, p)) for p in Permission}
    return page(request, template, project=row, can=can, section=section, **context)


@router.get("/", dependencies=[public])
def home() -> RedirectResponse:
    """The UI's front page."""
    return RedirectResponse("/ui/projects", status_code=303)


@router.get(SIGN_IN, response_class=HTMLResponse, dependencies=[public])
def sign_in_page(request: Request) -> HTMLResponse:
    """The sign-in form (it posts to /api/v1/session)."""
    return page(request, "sign_in.html")


@router.get("/ui/projects", response_class=HTMLResponse, dependencies=[signed_in])
def projects_page(request: Request) -> HTMLResponse:
    """The projects the user has a role on, with their counts."""
    return page(request, "projects.html", projects=visible_projects(request))


#: Studies listed on a project's page (newest first).
PAGE_STUDIES = 100


@router.get("/ui/projects/{project}", response_class=HTMLResponse,
            dependencies=[project_access(Permission.READ)])
def project_home(request: Request, project: str) -> HTMLResponse:
    """A project: its counts and its newest studies."""
    archive = runtime_of(request).archive
    studies = archive.studies(project, limit=PAGE_STUDIES + 1)
    return project_page(request, "project.html", project, section="studies",
                        studies=studies[:PAGE_STUDIES], more=len(studies) > PAGE_STUDIES,
                        counts=archive.project_summary(project)["counts"])


def problem_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    """An error as a page, for a browser (the API's problem, in words)."""
    response = page(request, "problem.html", title=title, message=message)
    response.status_code = status
    return response


@router.get("/ui/static/{name}", dependencies=[public])
def static_file(name: str = PathParam(pattern=r"^[a-z0-9-]+\.(css|js|svg|png)$",
                                      max_length=64)) -> FileResponse:
    """The UI's style sheets, scripts and images (the files of api/static/, nothing else:
    the name's pattern admits no path)."""
    path = STATIC_DIR / name
    if not path.is_file():
        raise NotFoundError("There is nothing at this address.")
    return FileResponse(path, media_type=STATIC_TYPES[path.suffix],
                        headers={"Cache-Control": "no-cache"})

