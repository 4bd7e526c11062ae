"""Who may call which route: the whole route table against an explicit table of expectations.

Deny by default (decision 0007): no credentials -> 401; a user with no role on a project ->
404, exactly as if the project did not exist; a role (or a token's scopes) lacking the
permission -> 403; allowed -> the route's success status. Permissions per role: viewer reads;
collaborator reads and downloads; member also writes; owner does everything on the project
(members, quarantine, the project's audit); a site administrator does everything everywhere,
plus users, new projects and the whole audit trail.

Every route must declare exactly one access dependency (``ACCESS_ATTR``): a test walks the
route table, and another proves that walk catches a route without one.
"""

from __future__ import annotations

import io
import itertools
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from apiworld import PASSWORD, World, problem, sqlite_world_and_client
from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute

from imagebank.api.app import create_app
from imagebank.api.security import ACCESS_ATTR, administrator, public, signed_in
from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
from imagebank.services.archive import Archive
from imagebank.services.runtime import Runtime

V1 = "/api/v1"
P = f"{V1}/projects/{{project}}"
DW = "/dicomweb"  # DICOMweb over every project the principal may read
PDW = "/projects/{project}/dicomweb"  # DICOMweb of one project
DW_INSTANCE = "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"

#: The principals, least to most privileged (the order each route is tried in).
PRINCIPALS: tuple[str | None, ...] = (None, "outsider", "viewer", "collaborator", "member",
                                      "owner", "admin")
NAMES = tuple(p or "anonymous" for p in PRINCIPALS)


# Expected statuses, in the order of PRINCIPALS:
#   anonymous, outsider, viewer, collaborator, member, owner, admin
def anyone(ok: int) -> tuple[int, ...]:
    return (ok, ok, ok, ok, ok, ok, ok)


def signed_in_user(ok: int) -> tuple[int, ...]:
    return (401, ok, ok, ok, ok, ok, ok)


def site_admin(ok: int) -> tuple[int, ...]:
    return (401, 403, 403, 403, 403, 403, ok)


def reader(ok: int) -> tuple[int, ...]:
    return (401, 404, ok, ok, ok, ok, ok)


def downloader(ok: int) -> tuple[int, ...]:
    return (401, 404, 403, ok, ok, ok, ok)


def writer(ok: int) -> tuple[int, ...]:
    return (401, 404, 403, 403, ok, ok, ok)


def project_owner(ok: int) -> tuple[int, ...]:
    return (401, 404, 403, 403, 403, ok, ok)


def job_of_member(ok: int) -> tuple[int, ...]:
    """A job the member started on alpha: its starter, alpha's owner and the administrator
    see it; anyone else is told there is no such job."""
    return (401, 404, 404, 404, ok, ok, ok)


EXPECTED: dict[tuple[str, str], tuple[int, ...]] = {
    # -- server, session, tokens
    ("GET", f"{V1}/health"): anyone(200),
    ("POST", f"{V1}/session"): anyone(200),
    ("DELETE", f"{V1}/session"): signed_in_user(204),
    ("GET", f"{V1}/me"): signed_in_user(200),
    ("GET", f"{V1}/me/tokens"): signed_in_user(200),
    ("POST", f"{V1}/me/tokens"): signed_in_user(201),
    ("DELETE", f"{V1}/me/tokens/{{token_id}}"): signed_in_user(204),
    # -- users (site administration)
    ("GET", f"{V1}/users"): site_admin(200),
    ("POST", f"{V1}/users"): site_admin(201),
    ("GET", f"{V1}/users/{{username}}"): site_admin(200),
    ("POST", f"{V1}/users/{{username}}/tokens"): site_admin(201),
    ("PUT", f"{V1}/users/{{username}}/active"): site_admin(200),
    ("GET", f"{V1}/audit"): site_admin(200),
    ("GET", f"{V1}/audit/verification"): site_admin(200),
    # -- the web UI: pages (a browser without a session is sent to sign in; an API client
    # gets the 401 problem), and its static files
    ("GET", "/"): signed_in_user(200),
    ("GET", "/ui/sign-in"): anyone(200),
    ("GET", "/ui/projects"): signed_in_user(200),
    ("GET", "/ui/projects/{project}"): reader(200),
    # browsing, search and the cohort builder (decision 0028)
    ("GET", "/ui/projects/{project}/subjects"): reader(200),
    ("GET", "/ui/projects/{project}/subjects/{subject}"): reader(200),
    ("GET", "/ui/projects/{project}/studies/{study}"): reader(200),
    ("GET", "/ui/projects/{project}/search"): reader(200),
    ("GET", "/ui/projects/{project}/cohort"): reader(200),
    # the series viewer shows pixels: download (decision 0029)
    ("GET", "/ui/projects/{project}/series/{series}/view"): downloader(200),
    # the audit trail, policy, members, users and your account (decision 0031)
    ("GET", "/ui/projects/{project}/audit"): project_owner(200),
    ("GET", "/ui/audit"): site_admin(200),
    ("GET", "/ui/projects/{project}/policy"): reader(200),
    ("GET", "/ui/projects/{project}/members"): project_owner(200),
    ("GET", "/ui/users"): site_admin(200),
    ("GET", "/ui/account"): signed_in_user(200),
    # uploads (write), the quarantine (manage) and jobs (decision 0030)
    ("GET", "/ui/projects/{project}/upload"): writer(200),
    ("GET", "/ui/projects/{project}/quarantine"): project_owner(200),
    ("GET", "/ui/jobs"): signed_in_user(200),
    ("GET", "/ui/jobs/{job_id}"): job_of_member(200),
    ("GET", "/ui/static/{name}"): anyone(200),
    # OHIF (decision 0032): a static app, public; its page sends a browser without a session
    # to sign in (followed here: 200); its data comes from DICOMweb, under the rules above.
    # `make ohif` installs it (`make test` does); without it its files are a 503 page.
    # /ohif/ itself (OHIF's study list, which is off) is sent to /ui/projects (followed).
    ("GET", "/ohif/"): signed_in_user(200),
    ("GET", "/ohif/{path:path}"): anyone(200),
    # -- governance: consent and the National Data Opt-out
    ("GET", f"{V1}/optout-lists"): site_admin(200),
    ("POST", f"{V1}/optout-lists"): site_admin(201),
    ("POST", f"{V1}/consents"): site_admin(200),
    ("GET", f"{P}/policy"): reader(200),
    # -- projects
    ("GET", f"{V1}/projects"): signed_in_user(200),
    ("POST", f"{V1}/projects"): site_admin(201),
    ("GET", P): reader(200),
    ("GET", f"{P}/members"): project_owner(200),
    ("PUT", f"{P}/members/{{username}}"): project_owner(200),
    ("DELETE", f"{P}/members/{{username}}"): project_owner(204),
    ("GET", f"{P}/quarantine"): project_owner(200),
    ("POST", f"{P}/quarantine/{{item}}/retry"): project_owner(200),
    ("DELETE", f"{P}/quarantine/{{item}}"): project_owner(204),
    ("GET", f"{P}/changes"): reader(200),
    ("GET", f"{P}/audit"): project_owner(200),
    # cohort search: anyone who reads searches (exact counts for members and owners)
    ("POST", f"{P}/cohorts/search"): reader(200),
    # -- the data hierarchy
    ("GET", f"{P}/subjects"): reader(200),
    ("GET", f"{P}/subjects/{{subject}}"): reader(200),
    ("GET", f"{P}/subjects/{{subject}}/studies"): reader(200),
    ("GET", f"{P}/studies"): reader(200),
    ("POST", f"{P}/studies/search"): reader(200),
    ("GET", f"{P}/studies/{{study}}"): reader(200),
    ("GET", f"{P}/studies/{{study}}/series"): reader(200),
    ("GET", f"{P}/studies/{{study}}/archive"): downloader(200),
    ("GET", f"{P}/series/{{series}}"): reader(200),
    ("GET", f"{P}/series/{{series}}/instances"): reader(200),
    ("GET", f"{P}/series/{{series}}/archive"): downloader(200),
    ("GET", f"{P}/instances/{{instance}}"): reader(200),
    ("GET", f"{P}/instances/{{instance}}/metadata"): reader(200),
    ("GET", f"{P}/instances/{{instance}}/file"): downloader(200),
    ("POST", f"{P}/instances"): writer(200),
    ("GET", f"{P}/resources"): reader(200),
    ("POST", f"{P}/resources"): writer(201),
    ("GET", f"{P}/resources/{{resource}}"): reader(200),
    ("GET", f"{P}/resources/{{resource}}/file"): downloader(200),
    # -- jobs
    ("POST", f"{P}/imports"): writer(202),
    ("POST", f"{P}/clinical-imports"): writer(202),
    ("POST", f"{P}/exports"): downloader(202),
    # sharing needs manage on both projects; a de-identified release of an identifiable
    # project needs manage on it (a research project's, download)
    ("POST", f"{P}/shares"): project_owner(202),
    ("POST", f"{P}/releases"): project_owner(202),
    ("GET", f"{V1}/jobs"): signed_in_user(200),
    ("GET", f"{V1}/jobs/{{job_id}}"): job_of_member(200),
    ("DELETE", f"{V1}/jobs/{{job_id}}"): job_of_member(200),
    ("GET", f"{V1}/jobs/{{job_id}}/result"): job_of_member(200),
    # -- DICOMweb: searches and metadata read, retrieves download, STOW-RS writes. Under
    # /dicomweb anyone signed in searches (and finds only their projects' data); alpha's
    # objects are not found by an outsider there and not downloadable by its viewer.
    **{("GET", f"{DW}{path}"): signed_in_user(200) for path in (
        "/studies", "/series", "/instances", "/studies/{study_uid}/series",
        "/studies/{study_uid}/instances", "/studies/{study_uid}/series/{series_uid}/instances")},
    **{("GET", f"{PDW}{path}"): reader(200) for path in (
        "/studies", "/series", "/instances", "/studies/{study_uid}/series",
        "/studies/{study_uid}/instances", "/studies/{study_uid}/series/{series_uid}/instances")},
    **{("GET", f"{base}{path}"): reader(200) for base in (DW, PDW) for path in (
        "/studies/{study_uid}/metadata", "/studies/{study_uid}/series/{series_uid}/metadata",
        f"{DW_INSTANCE}/metadata")},
    **{("GET", f"{base}{path}"): downloader(200) for base in (DW, PDW) for path in (
        "/studies/{study_uid}", "/studies/{study_uid}/series/{series_uid}", DW_INSTANCE,
        f"{DW_INSTANCE}/frames/{{frame_list}}", f"{DW_INSTANCE}/bulkdata/{{tag}}",
        f"{DW_INSTANCE}/rendered", f"{DW_INSTANCE}/frames/{{frame}}/rendered",
        "/studies/{study_uid}/thumbnail", "/studies/{study_uid}/series/{series_uid}/thumbnail",
        f"{DW_INSTANCE}/thumbnail")},
    ("POST", f"{PDW}/studies"): writer(200),
    ("POST", f"{PDW}/studies/{{study_uid}}"): writer(200),
    # storing goes to a project's address: /dicomweb/studies tells where (400)
    ("POST", f"{DW}/studies"): signed_in_user(400),
    ("POST", f"{DW}/studies/{{study_uid}}"): signed_in_user(400),
}

#: Routes outside FastAPI's APIRoute (so without access dependencies): the API description.
DOCUMENTATION_ROUTES = {f"{V1}/openapi.json", "/api/docs", "/docs/oauth2-redirect"}


# -- the route-table walk ---------------------------------------------------------------------
def access_markers(dependant: Any) -> list[str]:
    """The ACCESS_ATTR labels of every dependency of ``dependant``, however deep."""
    labels: list[str] = []
    for dependency in dependant.dependencies:
        label = getattr(dependency.call, ACCESS_ATTR, None)
        if label is not None:
            labels.append(str(label))
        labels.extend(access_markers(dependency))
    return labels


def routes_without_single_access(routes: list[BaseRoute]) -> list[str]:
    """One line per route whose access cannot be shown: an APIRoute with no access dependency
    or more than one, or any other route but the API's description (a mount, a plain route,
    a router added with ``include_router``, which FastAPI keeps as one opaque entry)."""
    found = []
    for route in routes:
        if not isinstance(route, APIRoute):
            path = getattr(route, "path", None)
            if path not in DOCUMENTATION_ROUTES:
                found.append(f"{type(route).__name__} {path}: not an APIRoute, unchecked")
            continue
        labels = access_markers(route.dependant)
        if len(labels) != 1:
            what = "no access dependency" if not labels else f"several: {labels}"
            found.append(f"{','.join(sorted(route.methods))} {route.path}: {what}")
    return found


def route_keys(app: FastAPI) -> set[tuple[str, str]]:
    return {(method, route.path) for route in app.routes if isinstance(route, APIRoute)
            for method in route.methods}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    """An application over an empty archive (the route table is all these tests read)."""
    archive = Archive.open(tmp_path_factory.mktemp("routes") / "data", workers=1)
    try:
        yield create_app(Runtime.for_archive(archive), background=False)
    finally:
        archive.close()


def test_every_route_has_exactly_one_access_dependency(app: FastAPI) -> None:
    assert len([r for r in app.routes if isinstance(r, APIRoute)]) >= len(EXPECTED)
    assert routes_without_single_access(app.routes) == []


def test_the_walk_reports_a_route_without_access_or_with_two() -> None:
    router = APIRouter(prefix=V1)

    @router.get("/forgotten")
    def forgotten() -> dict[str, str]:
        return {}

    def helper(value: int = 0) -> int:  # a dependency that is not an access dependency
        return value

    @router.get("/helped", dependencies=[Depends(helper)])
    def helped() -> dict[str, str]:
        return {}

    @router.post("/twice", dependencies=[public, signed_in])
    def twice() -> dict[str, str]:
        return {}

    def nested(principal: Any = administrator) -> Any:
        return principal

    @router.get("/nested")
    def nested_route(who: Any = Depends(nested)) -> dict[str, str]:
        return {}

    @router.get("/fine", dependencies=[signed_in])
    def fine() -> dict[str, str]:
        return {}

    throwaway = FastAPI(openapi_url=f"{V1}/openapi.json", docs_url="/api/docs",
                        redoc_url=None)
    throwaway.router.routes.extend(router.routes)  # as create_app adds its routes
    # /nested (its access dependency one level down) and /fine pass
    assert routes_without_single_access(throwaway.routes) == [
        f"GET {V1}/forgotten: no access dependency",
        f"GET {V1}/helped: no access dependency",
        f"POST {V1}/twice: several: ['public', 'signed_in']",
    ]
    # a router added with include_router (this FastAPI keeps it as one opaque entry, older
    # ones copy its routes): either way its unguarded route is reported, not skipped
    hidden = APIRouter(prefix=f"{V1}/hidden")
    hidden.add_api_route("/open", forgotten, methods=["GET"])
    throwaway.include_router(hidden)
    extra = routes_without_single_access(throwaway.routes)[3:]
    assert len(extra) == 1, extra
    assert "not an APIRoute" in extra[0] or f"{V1}/hidden/open" in extra[0]


def test_the_expected_table_covers_every_route_exactly(app: FastAPI) -> None:
    routes = route_keys(app)
    assert sorted(routes - set(EXPECTED)) == [], "routes without a row in EXPECTED"
    assert sorted(set(EXPECTED) - routes) == [], "rows in EXPECTED for no route"
    assert all(len(row) == len(PRINCIPALS) for row in EXPECTED.values())


# -- making each request ------------------------------------------------------------------------
@dataclass
class Call:
    params: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] | None = None
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Ctx:
    """The world the matrix runs in, with what some routes need made once."""

    world: World
    client: TestClient
    export_job: str  # a finished export of alpha's study, started by the member
    counter: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    uids: dict[str, str] = field(default_factory=dict)  # DICOMweb path parameters

    def defaults(self) -> dict[str, str]:
        ids = self.world.ids
        return {"project": "alpha", "subject": ids["subject"], "study": ids["study"],
                "series": ids["series"], "instance": ids["instance"],
                "resource": ids["resource"], "username": "outsider",
                "job_id": self.export_job, "token_id": "0" * 16, **self.uids}


def make_ctx(world: World, client: TestClient) -> Ctx:
    runtime = world.runtime
    runtime.accounts.add_user("spare", PASSWORD)
    member = runtime.accounts.get_user("member")
    job = runtime.jobs.submit("export", "alpha", {"level": "study", "ids": [world.ids["study"]]},
                              member["id"])
    runtime.jobs.run_pending()
    assert runtime.jobs.get(job["id"])["state"] == "succeeded"
    archive = runtime.archive
    uids = {"study_uid": archive.get("study", world.ids["study"])["study_instance_uid"],
            "series_uid": archive.get("series", world.ids["series"])["series_instance_uid"],
            "sop_uid": archive.get("instance", world.ids["instance"])["sop_instance_uid"],
            "frame_list": "1", "frame": "1", "tag": "7FE00010"}
    return Ctx(world, client, job["id"], uids=uids)


def tiny_dicom(n: int) -> bytes:
    spec = SeriesSpec(modality="CT", slices=1, rows=8, columns=8)
    ds = next(iter(make_study(SyntheticPatient.make(1000 + n), series=[spec])))
    return to_bytes(ds)


def tiny_zip(n: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("one.dcm", tiny_dicom(n))
    return buffer.getvalue()


def stow(parts: list[bytes]) -> Call:
    """A STOW-RS request of ``parts``."""
    boundary = uuid.uuid4().hex
    body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                    + part + b"\r\n" for part in parts) + f"--{boundary}--\r\n".encode()
    return Call(content=body, headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})


def _own_token(ctx: Ctx, user: str | None) -> Call:
    _, row = ctx.world.runtime.accounts.create_token(user or "owner", scopes=["read"])
    return Call(params={"token_id": row["id"]})


def _fresh_job(ctx: Ctx, user: str | None) -> Call:
    member = ctx.world.runtime.accounts.get_user("member")
    job = ctx.world.runtime.jobs.submit(
        "export", "alpha", {"level": "study", "ids": [ctx.world.ids["study"]]}, member["id"])
    return Call(params={"job_id": job["id"]})


def _quarantined(ctx: Ctx, user: str | None) -> Call:
    """A fresh quarantine item of alpha (a discard removes the one before)."""
    archive = ctx.world.runtime.archive
    before = {i["id"] for i in archive.quarantine("alpha", limit=1000)}
    archive.ingest_bytes([(f"not DICOM {next(ctx.counter)}".encode(), "junk")], "alpha")
    (item,) = [i["id"] for i in archive.quarantine("alpha", limit=1000) if i["id"] not in before]
    return Call(params={"item": item})


def _spare_has_role(ctx: Ctx, user: str | None) -> Call:
    ctx.world.runtime.accounts.grant("alpha", "spare", "viewer")
    return Call(params={"username": "spare"})


RECIPES: dict[tuple[str, str], Callable[[Ctx, str | None], Call]] = {
    ("POST", f"{V1}/session"): lambda ctx, user: Call(
        json={"username": "viewer", "password": PASSWORD}),
    ("POST", f"{V1}/me/tokens"): lambda ctx, user: Call(json={"scopes": ["read"]}),
    ("DELETE", f"{V1}/me/tokens/{{token_id}}"): _own_token,
    ("POST", f"{V1}/users"): lambda ctx, user: Call(
        json={"username": f"newcomer{next(ctx.counter)}",
              "password": "granite harbour lily sunrise"}),
    ("POST", f"{V1}/users/{{username}}/tokens"): lambda ctx, user: Call(
        json={"scopes": ["read"]}),
    ("PUT", f"{V1}/users/{{username}}/active"): lambda ctx, user: Call(json={"active": True}),
    ("POST", f"{V1}/projects"): lambda ctx, user: Call(
        json={"id": f"gamma{next(ctx.counter)}"}),
    ("GET", "/ui/static/{name}"): lambda ctx, user: Call(params={"name": "ui.css"}),
    ("GET", "/ohif/{path:path}"): lambda ctx, user: Call(params={"path": "app-config.js"}),
    ("POST", f"{V1}/optout-lists"): lambda ctx, user: Call(
        content=b"9434765919\n", headers={"Content-Type": "text/plain"}),
    ("POST", f"{V1}/consents"): lambda ctx, user: Call(
        content=b"nhs_number,status,date\n9434765919,granted,2026-11-01\n",
        headers={"Content-Type": "text/csv"}),
    ("PUT", f"{P}/members/{{username}}"): lambda ctx, user: Call(
        params={"username": "spare"}, json={"role": "viewer"}),
    ("DELETE", f"{P}/members/{{username}}"): _spare_has_role,
    ("POST", f"{P}/instances"): lambda ctx, user: Call(
        content=tiny_dicom(next(ctx.counter)), headers={"Content-Type": "application/dicom"}),
    ("POST", f"{P}/resources"): lambda ctx, user: Call(
        query={"level": "study", "parent_id": ctx.world.ids["study"], "name": "notes.txt"},
        content=b"a note", headers={"Content-Type": "text/plain"}),
    ("POST", f"{P}/imports"): lambda ctx, user: Call(
        content=tiny_zip(next(ctx.counter)), headers={"Content-Type": "application/zip"}),
    ("POST", f"{P}/clinical-imports"): lambda ctx, user: Call(
        content=b'{"resourceType": "Patient", "id": "p1", "identifier": [{"system": '
                b'"urn:example:mrn", "value": "1"}]}\n',
        headers={"Content-Type": "application/fhir+ndjson"}),
    ("POST", f"{P}/exports"): lambda ctx, user: Call(json={"ids": [ctx.world.ids["study"]]}),
    ("POST", f"{P}/shares"): lambda ctx, user: Call(json={"to": "lab"}),
    ("POST", f"{P}/releases"): lambda ctx, user: Call(json={"destination": "download"}),
    ("POST", f"{P}/cohorts/search"): lambda ctx, user: Call(json={"query": "imaging[]"}),
    ("POST", f"{P}/studies/search"): lambda ctx, user: Call(json={"ModalitiesInStudy": "MR"}),
    ("DELETE", f"{V1}/jobs/{{job_id}}"): _fresh_job,
    ("POST", f"{P}/quarantine/{{item}}/retry"): _quarantined,
    ("DELETE", f"{P}/quarantine/{{item}}"): _quarantined,
    ("POST", f"{PDW}/studies"): lambda ctx, user: stow([tiny_dicom(next(ctx.counter))]),
    ("POST", f"{DW}/studies"): lambda ctx, user: stow([tiny_dicom(next(ctx.counter))]),
    # the study's own instance again: an identical re-send, stored (as it was)
    ("POST", f"{PDW}/studies/{{study_uid}}"): lambda ctx, user: stow(
        [ctx.world.runtime.archive.instance_bytes(ctx.world.ids["instance"])]),
}


def send(ctx: Ctx, method: str, template: str, user: str | None, project: str = "alpha"
         ) -> Any:
    call = RECIPES.get((method, template), lambda ctx, user: Call())(ctx, user)
    path = template.replace(":path}", "}").format(
        **{**ctx.defaults(), **call.params, "project": project})
    ctx.client.cookies.clear()  # only the token (or nothing) speaks for the principal
    return ctx.client.request(method, path, params=call.query, json=call.json,
                              content=call.content,
                              headers={**ctx.world.headers(user), **call.headers})


def walk(ctx: Ctx, method: str, template: str) -> tuple[dict[str, int], list[str]]:
    """Each principal's status on the route, and what is wrong with the refusals' bodies."""
    statuses: dict[str, int] = {}
    wrong: list[str] = []
    for user, name in zip(PRINCIPALS, NAMES, strict=True):
        response = send(ctx, method, template, user)
        statuses[name] = response.status_code
        if response.status_code in (401, 403, 404):
            body = problem(response)
            code = {401: "unauthenticated", 403: "forbidden", 404: "not_found"}
            if body["code"] != code[response.status_code]:
                wrong.append(f"{name}: code {body['code']!r}")
        if user == "outsider" and "{project}" in template:
            # exactly like a project that does not exist
            ghost = send(ctx, method, template, user, project="nosuchproject")
            if response.status_code != 404 or ghost.status_code != 404:
                wrong.append(f"outsider: {response.status_code}, on no project "
                             f"{ghost.status_code}")
            elif (problem(response)["detail"] != "No project 'alpha'."
                  or problem(ghost)["detail"] != "No project 'nosuchproject'."
                  or response.json()["code"] != ghost.json()["code"]):
                wrong.append("outsider: not told exactly what a missing project tells")
    return statuses, wrong


def check_route(ctx: Ctx, method: str, template: str) -> None:
    statuses, wrong = walk(ctx, method, template)
    expected = dict(zip(NAMES, EXPECTED[method, template], strict=True))
    differences = {name: f"got {statuses[name]}, expected {expected[name]}"
                   for name in NAMES if statuses[name] != expected[name]}
    assert not differences, f"{method} {template}: {differences}"
    assert not wrong, f"{method} {template}: {wrong}"


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ctx]:
    """One SQLite world for the whole module (the write routes leave it usable)."""
    with sqlite_world_and_client(tmp_path_factory.mktemp("matrix")) as (world, client):
        yield make_ctx(world, client)


@pytest.mark.parametrize(("method", "template"), sorted(EXPECTED),
                         ids=[f"{m} {t.removeprefix(V1)}" for m, t in sorted(EXPECTED)])
def test_route_access(matrix: Ctx, method: str, template: str) -> None:
    check_route(matrix, method, template)


#: A few routes, one of each kind of access, for both databases.
REPRESENTATIVE = [
    ("GET", P), ("GET", f"{P}/studies"), ("GET", f"{P}/instances/{{instance}}/file"),
    ("POST", f"{P}/resources"), ("PUT", f"{P}/members/{{username}}"),
    ("GET", f"{V1}/users"), ("GET", f"{V1}/jobs/{{job_id}}"), ("GET", f"{V1}/me"),
    ("GET", f"{PDW}/studies"), ("GET", f"{DW}/studies/{{study_uid}}/metadata"),
    ("POST", f"{PDW}/studies"),
]


def test_representative_routes_on_both_databases(world: World, client: TestClient) -> None:
    ctx = make_ctx(world, client)
    for method, template in REPRESENTATIVE:
        check_route(ctx, method, template)


# -- inferring another project's data ---------------------------------------------------------
OBJECT_PATHS = [
    ("subject", "/subjects/{id}"), ("subject", "/subjects/{id}/studies"),
    ("study", "/studies/{id}"), ("study", "/studies/{id}/series"),
    ("study", "/studies/{id}/archive"),
    ("series", "/series/{id}"), ("series", "/series/{id}/instances"),
    ("series", "/series/{id}/archive"),
    ("instance", "/instances/{id}"), ("instance", "/instances/{id}/metadata"),
    ("instance", "/instances/{id}/file"),
    ("resource", "/resources/{id}"), ("resource", "/resources/{id}/file"),
]


def _secrets_of_beta(world: World) -> list[str]:
    archive = world.runtime.archive
    ids = world.ids
    subject = archive.get("subject", ids["beta_subject"])
    study = archive.get("study", ids["beta_study"])
    series = archive.get("series", ids["beta_series"])
    instance = archive.get("instance", ids["beta_instance"])
    values = [subject["patient_id"], subject["patient_name"], study["study_instance_uid"],
              study["accession_number"], series["series_instance_uid"],
              instance["sop_instance_uid"]]
    assert all(values)
    return values


def _same_answer(beta: Any, ghost: Any, beta_id: str, ghost_id: str) -> None:
    assert beta.status_code == ghost.status_code, (beta.status_code, ghost.status_code)
    first, second = problem(beta), problem(ghost)
    assert first["code"] == second["code"]
    assert first["detail"].replace(beta_id, "<id>") == second["detail"].replace(ghost_id, "<id>")


def test_another_projects_objects_look_like_missing_ones(sqlite_world: World,
                                                         sqlite_client: TestClient) -> None:
    world, client = sqlite_world, sqlite_client
    owner = world.headers("owner")
    secrets = _secrets_of_beta(world)
    texts: list[str] = []
    for level, path in OBJECT_PATHS:
        beta_id, ghost_id = world.ids[f"beta_{level}"], uuid.uuid4().hex
        beta = client.get(f"{V1}/projects/alpha{path.format(id=beta_id)}", headers=owner)
        ghost = client.get(f"{V1}/projects/alpha{path.format(id=ghost_id)}", headers=owner)
        assert beta.status_code == 404, (level, path)
        _same_answer(beta, ghost, beta_id, ghost_id)
        assert problem(beta)["detail"] == f"No {level} {beta_id} in project 'alpha'."
        texts.append(beta.text)
        # under beta's own address: the project itself is unknown to alpha's owner
        hidden = client.get(f"{V1}/projects/beta{path.format(id=beta_id)}", headers=owner)
        missing = client.get(f"{V1}/projects/nosuchproject{path.format(id=ghost_id)}",
                             headers=owner)
        assert hidden.status_code == missing.status_code == 404
        assert problem(hidden)["detail"] == "No project 'beta'."
        assert problem(missing)["detail"] == "No project 'nosuchproject'."
        assert hidden.json()["code"] == missing.json()["code"]
        texts.append(hidden.text)

    # objects named in a body or a query: exports, new resources, filters
    for level in ("study", "series"):
        beta_id, ghost_id = world.ids[f"beta_{level}"], uuid.uuid4().hex
        beta = client.post(f"{V1}/projects/alpha/exports", headers=owner,
                           json={"level": level, "ids": [beta_id]})
        ghost = client.post(f"{V1}/projects/alpha/exports", headers=owner,
                            json={"level": level, "ids": [ghost_id]})
        assert beta.status_code in (400, 404)
        _same_answer(beta, ghost, beta_id, ghost_id)
        texts.append(beta.text)
    for level in ("subject", "study", "series"):
        beta_id, ghost_id = world.ids[f"beta_{level}"], uuid.uuid4().hex
        answers = [client.post(f"{V1}/projects/alpha/resources", headers=owner, content=b"x",
                               params={"level": level, "parent_id": object_id, "name": "n.txt"})
                   for object_id in (beta_id, ghost_id)]
        assert answers[0].status_code in (400, 404), (level, answers[0].status_code)
        _same_answer(answers[0], answers[1], beta_id, ghost_id)
        texts.append(answers[0].text)
    listed = client.get(f"{V1}/projects/alpha/resources", headers=owner,
                        params={"parent_id": world.ids["beta_study"]})
    assert listed.status_code == 200 and listed.json() == []
    for name, value in (("PatientID", secrets[0]), ("StudyInstanceUID", secrets[2]),
                        ("AccessionNumber", secrets[3])):
        found = client.get(f"{V1}/projects/alpha/studies", headers=owner, params={name: value})
        assert found.status_code == 200 and found.json()["items"] == [], name

    # a job on beta (the administrator's) is no job at all to alpha's owner
    admin = world.runtime.accounts.get_user("admin")
    job = world.runtime.jobs.submit("export", "beta", {"level": "study",
                                                       "ids": [world.ids["beta_study"]]},
                                    admin["id"])
    ghost_job = uuid.uuid4().hex
    for suffix in ("", "/result"):
        beta = client.get(f"{V1}/jobs/{job['id']}{suffix}", headers=owner)
        ghost = client.get(f"{V1}/jobs/{ghost_job}{suffix}", headers=owner)
        assert beta.status_code == 404
        _same_answer(beta, ghost, job["id"], ghost_job)
        texts.append(beta.text)
    cancel = client.delete(f"{V1}/jobs/{job['id']}", headers=owner)
    assert cancel.status_code == 404
    assert world.runtime.jobs.get(job["id"])["state"] == "queued"
    assert job["id"] not in {j["id"] for j in client.get(f"{V1}/jobs", headers=owner).json()}

    for text in texts:
        for secret in secrets:
            assert secret not in text

    # the same file in two projects is two objects: uploading beta's instance to alpha is
    # stored afresh, not reported as a duplicate or a conflict (which would reveal it)
    data = world.runtime.archive.instance_bytes(world.ids["beta_instance"])
    upload = client.post(f"{V1}/projects/alpha/instances", content=data,
                         headers={**world.headers("member"), "Content-Type": "application/dicom"})
    assert upload.status_code == 200, upload.text[:300]
    summary = upload.json()
    assert (summary["stored"], summary["duplicates"], summary["conflicts"]) == (1, 0, 0)


# -- token scopes -----------------------------------------------------------------------------
def _token(world: World, user: str, scopes: list[str]) -> dict[str, str]:
    token, _ = world.runtime.accounts.create_token(user, scopes=scopes)
    return {"Authorization": f"Bearer {token}"}


def test_a_tokens_scopes_limit_what_its_user_may_do(matrix: Ctx) -> None:
    world, client = matrix.world, matrix.client
    client.cookies.clear()
    ids = world.ids
    alpha = f"{V1}/projects/alpha"
    note = {"params": {"level": "study", "parent_id": ids["study"], "name": "n.txt"},
            "content": b"x"}

    read = _token(world, "owner", ["read"])
    assert client.get(f"{alpha}/studies", headers=read).status_code == 200
    assert client.get(f"{alpha}/instances/{ids['instance']}/file", headers=read
                      ).status_code == 200
    assert client.get(f"{alpha}/audit", headers=read).status_code == 200
    refused = [
        client.post(f"{alpha}/resources", headers=read, **note),
        client.post(f"{alpha}/instances", headers={**read, "Content-Type": "application/dicom"},
                    content=tiny_dicom(900)),
        client.get(f"{alpha}/members", headers=read),
        client.put(f"{alpha}/members/spare", headers=read, json={"role": "viewer"}),
        client.delete(f"{alpha}/members/viewer", headers=read),
        client.get(f"{alpha}/quarantine", headers=read),
    ]
    for response in refused:
        assert response.status_code == 403, (response.request.method, response.request.url)
        assert problem(response)["code"] == "forbidden"
        assert "scope" in response.json()["detail"]
    assert "viewer" in {m["username"] for m in world.runtime.accounts.members("alpha")}

    write = _token(world, "owner", ["write"])
    for path in ("", "/studies", f"/studies/{ids['study']}", f"/instances/{ids['instance']}/file",
                 "/audit"):
        response = client.get(f"{alpha}{path}", headers=write)
        assert response.status_code == 403, path
    # ... nor the names of its projects, its jobs or its own user (routes for anyone signed in)
    for path in ("/projects", "/jobs", "/me", "/me/tokens"):
        response = client.get(f"{V1}{path}", headers=write)
        assert response.status_code == 403, path
        assert "alpha" not in response.text
    listed = {p["id"]: p for p in client.get(f"{V1}/projects", headers=read).json()}
    summary = client.get(alpha, headers=read).json()
    assert set(listed) == {"alpha", "lab"}  # the owner owns the research lab too
    assert listed["alpha"]["counts"] == summary["counts"]
    assert summary["counts"]["studies"] >= 2
    assert client.post(f"{alpha}/resources", headers=write, **note).status_code == 201

    # an outsider's scoped token still cannot learn that alpha exists
    outsider = _token(world, "outsider", ["read"])
    assert client.get(alpha, headers=outsider).status_code == 404

    # site administration needs the admin scope, even for the administrator
    everyday = _token(world, "admin", ["read", "write"])
    assert client.get(f"{alpha}/studies", headers=everyday).status_code == 200
    for response in (client.get(f"{V1}/users", headers=everyday),
                     client.get(f"{V1}/users/owner", headers=everyday),
                     client.post(f"{V1}/users", headers=everyday,
                                 json={"username": "sneaky", "password": "amber river stone"}),
                     client.post(f"{V1}/projects", headers=everyday, json={"id": "sneaky"}),
                     client.get(f"{V1}/audit", headers=everyday),
                     client.put(f"{alpha}/members/spare", headers=everyday,
                                json={"role": "owner"})):
        assert response.status_code == 403, (response.request.method, response.request.url)
    assert "sneaky" not in {u["username"] for u in world.runtime.accounts.users()}
    admin_only = _token(world, "admin", ["admin"])
    assert client.get(f"{V1}/users", headers=admin_only).status_code == 200
    assert client.get(f"{alpha}/studies", headers=admin_only).status_code == 403


def test_a_token_cannot_mint_a_token_with_more_scopes(matrix: Ctx) -> None:
    world, client = matrix.world, matrix.client
    client.cookies.clear()
    read = _token(world, "member", ["read"])
    before = len(world.runtime.accounts.tokens("member"))
    for scopes in (["read", "write"], ["admin"], ["write"]):
        response = client.post(f"{V1}/me/tokens", headers=read, json={"scopes": scopes})
        assert response.status_code == 403, (scopes, response.status_code)
        assert problem(response)["code"] == "forbidden"
    assert len(world.runtime.accounts.tokens("member")) == before
    same = client.post(f"{V1}/me/tokens", headers=read, json={"scopes": ["read"]})
    assert same.status_code == 201 and same.json()["scopes"] == ["read"]


def test_revoking_someone_elses_token_is_refused_like_a_missing_one(matrix: Ctx) -> None:
    world, client = matrix.world, matrix.client
    client.cookies.clear()
    _, theirs = world.runtime.accounts.create_token("owner", scopes=["read"])
    response = client.delete(f"{V1}/me/tokens/{theirs['id']}", headers=world.headers("viewer"))
    ghost = client.delete(f"{V1}/me/tokens/{'f' * 16}", headers=world.headers("viewer"))
    assert response.status_code == ghost.status_code == 404
    _same_answer(response, ghost, theirs["id"], "f" * 16)
    still = {t["id"]: t for t in world.runtime.accounts.tokens("owner")}
    assert still[theirs["id"]]["revoked_at"] is None


def test_cancelling_a_job_needs_a_token_that_may_write(matrix: Ctx) -> None:
    """Cancelling changes something: a read-only token may see a job, not cancel it (not
    even the administrator's, whose role would otherwise allow anything)."""
    world, client = matrix.world, matrix.client
    client.cookies.clear()
    job = _fresh_job(matrix, None).params["job_id"]
    for user in ("member", "admin"):  # the job's starter; the site administrator
        read = _token(world, user, ["read"])
        assert client.get(f"{V1}/jobs/{job}", headers=read).status_code == 200
        refused = client.delete(f"{V1}/jobs/{job}", headers=read)
        assert refused.status_code == 403, (user, refused.status_code)
        assert problem(refused)["code"] == "forbidden"
    assert world.runtime.jobs.get(job)["state"] == "queued"
    cancelled = client.delete(f"{V1}/jobs/{job}", headers=_token(world, "member", ["write"]))
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
