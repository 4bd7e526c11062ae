"""The audit trail seen from the API: one event per request with who, what and how it ended;
no patient data in any event; who may read the trail; nothing served when it cannot be
written."""

from __future__ import annotations

import io
import json
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pydicom
import pytest
from apiworld import PASSWORD, World, problem
from fastapi.testclient import TestClient
from sqlalchemy import text

from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
from imagebank.domain.errors import StorageError

API = "/api/v1"
ALPHA = f"{API}/projects/alpha"
DICOM = {"Content-Type": "application/dicom"}


def head_seq(world: World) -> int:
    with world.runtime.archive.sessions.begin() as session:
        return int(session.execute(text("SELECT seq FROM audit_head")).scalar_one())


def events_after(world: World, seq: int) -> list[dict[str, Any]]:
    return world.runtime.audit.events(since=seq, limit=1000)


def token_id(world: World, user: str) -> str:
    return world.tokens[user].split("_")[1]


def user_id(world: World, user: str) -> str:
    return str(world.runtime.accounts.get_user(user)["id"])


def new_instance(patient: int) -> bytes:
    spec = SeriesSpec(slices=1, rows=32, columns=32)
    return to_bytes(next(make_study(SyntheticPatient.make(patient), series=[spec])))


# -- one event per request --------------------------------------------------------------------
def test_every_request_leaves_exactly_one_event(world: World, client: TestClient) -> None:
    ids = world.ids
    h = world.headers
    # (method, url, kwargs, expected status, expected event fields)
    studies = f"{API}/projects/{{project}}/studies"
    study_route = f"{studies}/{{study}}"
    # (method, url, request arguments, expected status, expected event fields)
    steps: list[tuple[str, str, dict[str, Any], int, dict[str, Any]]] = [
        ("GET", f"{ALPHA}/studies/{ids['study']}", {"headers": h("viewer")}, 200,
         {"actor": "viewer", "via": "token", "action": "read", "project_id": "alpha",
          "route": study_route, "level": "study", "object_id": ids["study"], "outcome": "ok"}),
        ("GET", f"{ALPHA}/studies", {"headers": h("viewer"),
                                     "params": {"ModalitiesInStudy": "CT"}}, 200,
         {"actor": "viewer", "via": "token", "action": "search", "project_id": "alpha",
          "route": studies, "object_id": None, "outcome": "ok"}),
        ("GET", f"{ALPHA}/instances/{ids['instance']}/file", {"headers": h("collaborator")},
         200, {"actor": "collaborator", "via": "token", "action": "download",
               "project_id": "alpha", "level": "instance", "object_id": ids["instance"],
               "route": f"{API}/projects/{{project}}/instances/{{instance}}/file",
               "outcome": "ok"}),
        ("GET", f"{ALPHA}/studies/{ids['study']}/archive", {"headers": h("owner")}, 200,
         {"actor": "owner", "via": "token", "action": "download", "project_id": "alpha",
          "level": "study", "object_id": ids["study"], "route": f"{study_route}/archive",
          "outcome": "ok"}),
        ("POST", f"{ALPHA}/instances", {"headers": {**h("member"), **DICOM},
                                        "content": new_instance(20)}, 200,
         {"actor": "member", "via": "token", "action": "write", "project_id": "alpha",
          "object_id": None, "route": f"{API}/projects/{{project}}/instances",
          "outcome": "ok"}),
        ("GET", f"{ALPHA}/studies/{ids['study']}", {"headers": h("outsider")}, 404,
         {"actor": "outsider", "via": "token", "action": "read", "project_id": "alpha",
          "route": study_route, "object_id": ids["study"], "outcome": "denied"}),
        ("GET", f"{ALPHA}/studies", {}, 401,
         {"actor": None, "actor_id": None, "via": None, "token_id": None, "action": "search",
          "project_id": "alpha", "route": studies, "outcome": "denied"}),
        ("GET", f"{ALPHA}/quarantine", {"headers": h("viewer")}, 403,
         {"actor": "viewer", "via": "token", "action": "manage", "project_id": "alpha",
          "route": f"{API}/projects/{{project}}/quarantine", "outcome": "denied"}),
        ("GET", f"{ALPHA}/studies", {"headers": h("viewer"), "params": {"StudyDate": "2020"}},
         400, {"actor": "viewer", "action": "search", "project_id": "alpha", "route": studies,
               "outcome": "rejected"}),
        ("GET", f"{ALPHA}/subjects", {"headers": h("viewer"), "params": {"limit": 0}}, 422,
         {"actor": "viewer", "action": "read", "project_id": "alpha",
          "route": f"{API}/projects/{{project}}/subjects", "outcome": "rejected"}),
        ("POST", f"{API}/session", {"json": {"username": "owner", "password": "wrong " * 3}},
         401, {"actor": "owner", "actor_id": user_id(world, "owner"), "via": None,
               "action": "login", "project_id": None, "object_id": None,
               "route": f"{API}/session", "outcome": "denied"}),
        # What is typed as an unknown username is not recorded (it could be anything).
        ("POST", f"{API}/session", {"json": {"username": "Jane Q Patient",
                                             "password": "wrong " * 3}},
         401, {"actor": None, "actor_id": None, "via": None, "action": "login",
               "route": f"{API}/session", "outcome": "denied"}),
        ("POST", f"{API}/session", {"json": {"username": "owner", "password": PASSWORD}}, 200,
         {"actor": "owner", "actor_id": user_id(world, "owner"), "via": "password",
          "token_id": None, "action": "login", "project_id": None, "route": f"{API}/session",
          "outcome": "ok"}),
        ("GET", f"{API}/no/such/thing", {"headers": h("viewer")}, 404,
         {"route": "(no route)", "project_id": None, "outcome": "denied"}),
        # A page of the web UI is audited as what it shows (its style sheet is not).
        ("GET", f"/ui/projects/alpha/studies/{ids['study']}",
         {"headers": {**h("viewer"), "Accept": "text/html"}}, 200,
         {"actor": "viewer", "via": "token", "action": "read", "project_id": "alpha",
          "route": "/ui/projects/{project}/studies/{study}", "level": "study",
          "object_id": ids["study"], "outcome": "ok"}),
    ]
    before = head_seq(world)
    for method, url, kwargs, status, _ in steps:
        response = client.request(method, url, **kwargs)
        assert response.status_code == status, (method, url, response.text[:300])
    # The unaudited addresses: the health check, the sign-in form and the UI's static files.
    assert client.get(f"{API}/health").status_code == 200
    assert client.get("/ui/sign-in").status_code == 200
    assert client.get("/ui/static/ui.css").status_code == 200
    events = events_after(world, before)
    assert len(events) == len(steps)
    assert [e["seq"] for e in events] == list(range(before + 1, before + len(steps) + 1))
    for event, (method, url, _kwargs, status, expected) in zip(events, steps, strict=True):
        assert event["method"] == method
        assert event["status"] == status
        for name, value in expected.items():
            assert event[name] == value, (url, name, event[name])
        if event["actor"] in ("viewer", "collaborator", "member", "owner", "outsider") and \
                event["via"] == "token":
            assert event["token_id"] == token_id(world, event["actor"])
            assert event["actor_id"] == user_id(world, event["actor"])
    upload = events[4]
    assert json.loads(upload["detail"])["stored"] == 1


def test_session_requests_are_audited_as_the_session_user(sqlite_world: World,
                                                          sqlite_client: TestClient) -> None:
    signed = sqlite_client.post(f"{API}/session", json={"username": "member",
                                                        "password": PASSWORD})
    assert signed.status_code == 200
    csrf = signed.json()["csrf_token"]
    before = head_seq(sqlite_world)
    assert sqlite_client.get(f"{ALPHA}/studies").status_code == 200
    denied = sqlite_client.post(f"{ALPHA}/instances", content=new_instance(21), headers=DICOM)
    assert denied.status_code == 403  # no CSRF token
    stored = sqlite_client.post(f"{ALPHA}/instances", content=new_instance(21),
                                headers={**DICOM, "X-CSRF-Token": csrf})
    assert stored.status_code == 200
    events = events_after(sqlite_world, before)
    assert [(e["actor"], e["via"], e["token_id"], e["status"], e["outcome"]) for e in events] == [
        ("member", "session", None, 200, "ok"),
        ("member", "session", None, 403, "denied"),
        ("member", "session", None, 200, "ok")]


# -- no patient data --------------------------------------------------------------------------
def _identifiers(folders: list[Path], extra: list[bytes]) -> set[str]:
    """Every identifying value of the synthetic data: PatientID, names, UIDs, accession."""
    found: set[str] = set()
    datasets = [pydicom.dcmread(p, stop_before_pixels=True)
                for folder in folders for p in folder.glob("*.dcm")]
    datasets += [pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True) for data in extra]
    for ds in datasets:
        name = str(ds.PatientName)
        family = name.split("^", maxsplit=1)[0]
        found |= {str(ds.PatientID), name, family, str(ds.StudyInstanceUID),
                  str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID),
                  str(ds.FrameOfReferenceUID), str(ds.AccessionNumber),
                  str(ds.PatientBirthDate)}
    return found


def test_events_hold_no_patient_data(world: World, client: TestClient, tmp_path: Path) -> None:
    owner = world.headers("owner")
    upload = new_instance(22)
    ds = pydicom.dcmread(io.BytesIO(upload))
    patient_zero = SyntheticPatient.make(0)
    study = world.runtime.archive.studies("alpha")[0]
    before = head_seq(world)
    searched = client.get(f"{ALPHA}/studies", params={"PatientID": patient_zero.patient_id},
                          headers=owner)
    assert searched.status_code == 200 and len(searched.json()["items"]) == 1
    for params in ({"StudyInstanceUID": study["study_instance_uid"]},
                   {"AccessionNumber": study["accession_number"],
                    "StudyDate": study["study_date"]},
                   {"PatientID": str(ds.PatientID)},
                   {"PatientID": patient_zero.patient_id * 10}):  # too long: 422
        assert client.get(f"{ALPHA}/studies", params=params, headers=owner).status_code in (
            200, 422)
    assert client.post(f"{ALPHA}/instances", content=upload,
                       headers={**owner, **DICOM}).status_code == 200
    ds.ContentTime = "111111"
    assert client.post(f"{ALPHA}/instances", content=to_bytes(ds),
                       headers={**owner, **DICOM}).status_code == 409
    assert client.post(f"{ALPHA}/instances", content=b"PatientID=" + upload[:300],
                       headers={**owner, **DICOM}).status_code == 400
    assert client.get(f"{ALPHA}/instances/{world.ids['instance']}/metadata",
                      headers=owner).status_code == 200

    forbidden = _identifiers([tmp_path / "alpha", tmp_path / "beta"], [upload])
    assert patient_zero.patient_id in forbidden and ds.SOPInstanceUID in forbidden
    with world.runtime.archive.sessions.begin() as session:
        rows = [dict(r._mapping) for r in session.execute(text("SELECT * FROM audit_events"))]
    assert len(rows) >= 9
    for row in rows:
        for column, value in row.items():
            if value is None:
                continue
            for secret in forbidden:
                assert secret.upper() not in str(value).upper(), (row["seq"], column)

    search = events_after(world, before)[0]
    assert search["action"] == "search"
    assert json.loads(search["detail"]) == {"filters": ["PatientID"]}
    details = [json.loads(e["detail"]) for e in events_after(world, before)[1:4]]
    assert details == [{"filters": ["StudyInstanceUID"]},
                       {"filters": ["AccessionNumber", "StudyDate"]},
                       {"filters": ["PatientID"]}]


# -- who reads the trail ----------------------------------------------------------------------
def test_project_audit_is_for_owners_and_the_site_audit_for_administrators(
        world: World, client: TestClient) -> None:
    h = world.headers
    assert client.get(f"{API}/projects/beta/studies", headers=h("admin")).status_code == 200
    assert client.get(f"{ALPHA}/studies", headers=h("viewer")).status_code == 200

    response = client.get(f"{ALPHA}/audit", headers=h("owner"))
    assert response.status_code == 200
    alpha_events = response.json()
    assert alpha_events and {e["project_id"] for e in alpha_events} == {"alpha"}
    assert any(e["actor"] == "viewer" and e["action"] == "search" for e in alpha_events)
    assert {"hash", "seq", "route"} <= set(alpha_events[0])
    since = client.get(f"{ALPHA}/audit", params={"since": alpha_events[0]["seq"]},
                       headers=h("owner")).json()
    assert [e["seq"] for e in since][:len(alpha_events) - 1] == [
        e["seq"] for e in alpha_events[1:]]
    assert all(e["seq"] > alpha_events[0]["seq"] for e in since)

    for user, status in (("member", 403), ("collaborator", 403), ("viewer", 403),
                         ("outsider", 404)):
        denied = client.get(f"{ALPHA}/audit", headers=h(user))
        assert denied.status_code == status, user
        problem(denied)
    assert client.get(f"{API}/projects/beta/audit", headers=h("owner")).status_code == 404
    assert client.get(f"{ALPHA}/audit", headers=h("admin")).status_code == 200

    everything = client.get(f"{API}/audit", params={"limit": 1000}, headers=h("admin"))
    assert everything.status_code == 200
    projects = {e["project_id"] for e in everything.json()}
    assert {"alpha", "beta"} <= projects
    for user in ("owner", "viewer", "outsider"):
        assert client.get(f"{API}/audit", headers=h(user)).status_code == 403, user
    assert client.get(f"{API}/audit").status_code == 401
    # An administrator's token without the admin scope reads projects, not the site trail.
    token, _ = world.runtime.accounts.create_token("admin", scopes=["read"])
    read_only = {"Authorization": f"Bearer {token}"}
    assert client.get(f"{API}/audit", headers=read_only).status_code == 403
    assert client.get(f"{ALPHA}/audit", headers=read_only).status_code == 200


# -- unaudited means unserved -----------------------------------------------------------------
def _failed(event: dict[str, Any]) -> Future[int]:
    future: Future[int] = Future()
    future.set_exception(StorageError("The audit trail could not be written."))
    return future


def test_no_data_is_served_when_the_audit_cannot_be_written(
        sqlite_world: World, sqlite_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    world, client = sqlite_world, sqlite_client
    owner = world.headers("owner")
    instance, study = world.ids["instance"], world.ids["study"]
    data = world.runtime.archive.instance_bytes(instance)
    before = head_seq(world)
    monkeypatch.setattr(world.runtime.audit, "record", _failed)
    for url in (f"{ALPHA}/instances/{instance}/file", f"{ALPHA}/studies/{study}/archive",
                f"{ALPHA}/instances/{instance}/metadata", f"{ALPHA}/studies"):
        response = client.get(url, headers=owner)
        assert response.status_code == 503, url
        assert problem(response)["code"] == "audit_unavailable"
        assert data[-256:] not in response.content
        assert b"PK\x03\x04" not in response.content
        assert b"SYN" not in response.content
    # An upload is refused too; what it stored stays stored, but the client is told 503.
    refused = client.post(f"{ALPHA}/instances", content=new_instance(23),
                          headers={**owner, **DICOM})
    assert refused.status_code == 503
    monkeypatch.undo()
    assert head_seq(world) == before
    response = client.get(f"{ALPHA}/instances/{instance}/file", headers=owner)
    assert response.status_code == 200 and response.content == data
    assert world.runtime.audit.verify().ok


def test_a_real_write_failure_in_the_writer_thread_refuses_the_request(
        sqlite_world: World, sqlite_client: TestClient) -> None:
    """The audit table cannot be written (renamed away): the writer thread fails the batch."""
    owner = sqlite_world.headers("owner")
    instance = sqlite_world.ids["instance"]
    assert sqlite_client.get(f"{ALPHA}/studies", headers=owner).status_code == 200
    engine = sqlite_world.runtime.archive.engine
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_events RENAME TO audit_events_away"))
    try:
        response = sqlite_client.get(f"{ALPHA}/instances/{instance}/file", headers=owner)
        assert response.status_code == 503
        assert problem(response)["code"] == "audit_unavailable"
        assert b"DICM" not in response.content
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_events_away RENAME TO audit_events"))
    assert sqlite_client.get(f"{ALPHA}/instances/{instance}/file",
                             headers=owner).status_code == 200
    report = sqlite_world.runtime.audit.verify()
    assert report.ok, report.problems
