"""DICOMweb's rules, through the application in this process: who may do what at
``/dicomweb`` and ``/projects/{project}/dicomweb``, the audit trail (no UIDs, no patient data),
refusals of bad requests (nothing half-stored), and STOW-RS's per-instance outcomes."""

from __future__ import annotations

import email
import json
from typing import Any

import pytest
from apiworld import PASSWORD, World, problem
from dicomwebkit import ALPHA, GLOBAL, multipart_body, new_study, uids_of
from fastapi.testclient import TestClient
from sqlalchemy import text

from imagebank.api import dicomweb_wado
from imagebank.api.security import CSRF_HEADER
from imagebank.dicom.synthetic import to_bytes

JSON = "application/dicom+json"
DICOM_PARTS = 'multipart/related; type="application/dicom"'


def _alpha_instance(world: World) -> dict[str, Any]:
    rows = uids_of(world)
    return next(r for r in rows if r["sop_class_uid"].endswith(".1.2"))


def _paths(row: dict[str, Any]) -> dict[str, str]:
    study = f"/studies/{row['study_instance_uid']}"
    series = f"{study}/series/{row['series_instance_uid']}"
    instance = f"{series}/instances/{row['sop_instance_uid']}"
    return {"search": "/studies", "series": f"{study}/series", "retrieve": study,
            "metadata": f"{study}/metadata", "frames": f"{instance}/frames/1",
            "rendered": f"{instance}/rendered", "thumbnail": f"{series}/thumbnail",
            "bulkdata": f"{instance}/bulkdata/7FE00010"}


def _store(client: TestClient, base: str, parts: list[bytes], headers: dict[str, str],
           suffix: str = "/studies", **kwargs: Any) -> Any:
    body, content_type = multipart_body(parts, **kwargs)
    return client.post(f"{base}{suffix}", content=body,
                       headers={**headers, "Content-Type": content_type, "Accept": JSON})


def _stored(world: World) -> tuple[int, int]:
    """(instances, quarantined objects) in the index."""
    with world.runtime.archive.sessions.begin() as session:
        instances = session.execute(text("SELECT count(*) FROM instances")).scalar_one()
        held = session.execute(text("SELECT count(*) FROM quarantine")).scalar_one()
    return int(instances), int(held)


# -- access -----------------------------------------------------------------------------------
def test_access_follows_the_rest_api_rules(world: World, client: TestClient) -> None:
    paths = _paths(_alpha_instance(world))
    reads = ("search", "series", "metadata")
    downloads = ("retrieve", "frames", "rendered", "thumbnail", "bulkdata")
    expected = {  # user: (status of a read, status of a download) under /projects/alpha
        None: (401, 401), "outsider": (404, 404), "viewer": (200, 403),
        "collaborator": (200, 200), "owner": (200, 200), "admin": (200, 200)}
    for user, (read, download) in expected.items():
        for name in (*reads, *downloads):
            response = client.get(f"{ALPHA}{paths[name]}", headers=world.headers(user))
            want = read if name in reads else download
            assert response.status_code == want, (user, name, response.status_code)
            if want >= 400:
                assert problem(response)["code"] == {
                    401: "unauthenticated", 403: "forbidden", 404: "not_found"}[want]
    assert problem(client.get(f"{ALPHA}/studies", headers=world.headers("outsider")))[
        "detail"] == "No project 'alpha'."

    # /dicomweb: restricted to the projects each principal may read (or download)
    for user, (read, download) in expected.items():
        for name in (*reads, *downloads):
            response = client.get(f"{GLOBAL}{paths[name]}", headers=world.headers(user))
            if user is None:
                assert response.status_code == 401
            elif user == "outsider":  # alpha is not theirs: its study is nowhere for them
                searched = name in ("search", "series")  # a search finds nothing
                assert response.status_code == (200 if searched else 404), name
                if searched:
                    assert response.json() == []
            else:
                assert response.status_code == (read if name in reads else download), (
                    user, name, response.status_code)

    # beta (the administrator's only) is invisible to alpha's owner, everywhere
    beta = next(r for r in uids_of(world, "beta"))
    beta_paths = _paths(beta)
    owner = world.headers("owner")
    for name in ("retrieve", "metadata", "thumbnail"):
        assert client.get(f"{GLOBAL}{beta_paths[name]}", headers=owner).status_code == 404
        assert client.get(f"{ALPHA}{beta_paths[name]}", headers=owner).status_code == 404
        assert client.get(f"/projects/beta/dicomweb{beta_paths[name]}",
                          headers=owner).status_code == 404
    study_filter = {"StudyInstanceUID": beta["study_instance_uid"]}
    assert client.get(f"{GLOBAL}/studies", params=study_filter, headers=owner).json() == []
    assert len(client.get(f"{GLOBAL}/studies", params=study_filter,
                          headers=world.headers("admin")).json()) == 1

    # storing needs WRITE: viewers and collaborators are refused, members store
    part = [to_bytes(new_study(80, slices=1)[0])]
    for user, status in (("viewer", 403), ("collaborator", 403), ("outsider", 404),
                         (None, 401), ("member", 200)):
        assert _store(client, ALPHA, part, world.headers(user)).status_code == status, user


def test_token_scopes_apply(sqlite_world: World, sqlite_client: TestClient) -> None:
    world, client = sqlite_world, sqlite_client
    accounts = world.runtime.accounts
    write_only, _ = accounts.create_token("owner", scopes=["write"])
    read_only, _ = accounts.create_token("owner", scopes=["read"])
    bearer = {"write": {"Authorization": f"Bearer {write_only}"},
              "read": {"Authorization": f"Bearer {read_only}"}}
    for base in (ALPHA, GLOBAL):
        assert client.get(f"{base}/studies", headers=bearer["write"]).status_code == 403
        assert client.get(f"{base}/studies", headers=bearer["read"]).status_code == 200
    part = [to_bytes(new_study(81, slices=1)[0])]
    assert _store(client, ALPHA, part, bearer["read"]).status_code == 403
    assert _store(client, ALPHA, part, bearer["write"]).status_code == 200


def test_a_browser_session_needs_its_csrf_token_to_store(sqlite_world: World,
                                                         sqlite_client: TestClient) -> None:
    world, client = sqlite_world, sqlite_client
    signed = client.post("/api/v1/session", json={"username": "member", "password": PASSWORD})
    csrf = signed.json()["csrf_token"]
    assert client.get(f"{ALPHA}/studies").status_code == 200  # the cookie reads
    part = [to_bytes(new_study(82, slices=1)[0])]
    before = _stored(world)
    refused = _store(client, ALPHA, part, {})
    assert refused.status_code == 403 and problem(refused)["code"] == "csrf"
    assert _stored(world) == before
    assert _store(client, ALPHA, part, {CSRF_HEADER: csrf}).status_code == 200


# -- audit ------------------------------------------------------------------------------------
def _events_after(world: World, seq: int) -> list[dict[str, Any]]:
    return world.runtime.audit.events(since=seq, limit=1000)


def _head(world: World) -> int:
    with world.runtime.archive.sessions.begin() as session:
        return int(session.execute(text("SELECT seq FROM audit_head")).scalar_one())


def test_every_request_is_audited_without_uids_or_patient_data(sqlite_world: World,
                                                               sqlite_client: TestClient
                                                               ) -> None:
    world, client = sqlite_world, sqlite_client
    row = _alpha_instance(world)
    paths = _paths(row)
    subject = world.runtime.archive.get("subject", world.ids["subject"])
    stow = new_study(83, slices=2)
    secrets = [row["study_instance_uid"], row["series_instance_uid"], row["sop_instance_uid"],
               subject["patient_id"], subject["patient_name"], stow[0].StudyInstanceUID,
               stow[0].SOPInstanceUID, stow[0].PatientID, str(stow[0].PatientName)]
    project_route = "/projects/{project}/dicomweb"
    h = world.headers
    steps: list[tuple[str, str, dict[str, Any], int, dict[str, Any]]] = [
        ("GET", f"{ALPHA}/studies", {"headers": h("viewer"), "params": {
            "PatientID": subject["patient_id"], "PatientName": subject["patient_name"],
            "includefield": "StudyDescription"}}, 200,
         {"actor": "viewer", "action": "search", "project_id": "alpha", "outcome": "ok",
          "route": f"{project_route}/studies", "object_id": None}),
        ("GET", f"{GLOBAL}{paths['retrieve']}", {"headers": h("collaborator")}, 200,
         {"actor": "collaborator", "action": "download", "project_id": "alpha",
          "level": "study", "object_id": row["study_id"],
          "route": "/dicomweb/studies/{study_uid}", "outcome": "ok"}),
        ("GET", f"{ALPHA}{paths['frames']}", {"headers": h("owner")}, 200,
         {"action": "download", "project_id": "alpha", "level": "instance",
          "object_id": row["id"], "outcome": "ok"}),
        ("GET", f"{ALPHA}{paths['metadata']}", {"headers": h("outsider")}, 404,
         {"actor": "outsider", "action": "read", "project_id": "alpha", "outcome": "denied",
          "object_id": None}),
        ("GET", f"{ALPHA}{paths['retrieve']}", {"headers": h("viewer")}, 403,
         {"actor": "viewer", "action": "download", "outcome": "denied"}),
        ("GET", f"{GLOBAL}/studies", {"params": {"StudyDate": "2020"},
                                      "headers": h("viewer")}, 400,
         {"actor": "viewer", "route": "/dicomweb/studies", "project_id": None,
          "outcome": "rejected"}),
        ("POST", f"{ALPHA}/studies", {"stow": stow}, 200,
         {"actor": "member", "action": "write", "project_id": "alpha", "outcome": "ok",
          "route": f"{project_route}/studies"}),
    ]
    before = _head(world)
    for method, url, kwargs, status, _ in steps:
        if "stow" in kwargs:
            response = _store(client, ALPHA, [to_bytes(d) for d in kwargs["stow"]],
                              h("member"))
        else:
            response = client.request(method, url, **kwargs)
        assert response.status_code == status, (url, response.status_code, response.text[:200])
    events = _events_after(world, before)
    assert len(events) == len(steps)
    for event, (_, url, _, status, fields) in zip(events, steps, strict=True):
        assert event["status"] == status, url
        for name, want in fields.items():
            assert event[name] == want, (url, name, event[name])
    search = json.loads(events[0]["detail"])
    assert search["filters"] == ["PatientID", "PatientName"]
    stored = json.loads(events[-1]["detail"])
    assert (stored["parts"], stored["stored"], stored["failed"]) == (2, 2, 0)
    everything = json.dumps(events, default=str)
    for secret in secrets:
        assert secret not in everything


# -- refusals ---------------------------------------------------------------------------------
def test_bad_requests_are_refused_clearly_and_store_nothing(sqlite_world: World,
                                                            sqlite_client: TestClient) -> None:
    world, client = sqlite_world, sqlite_client
    member = world.headers("member")
    good = [to_bytes(d) for d in new_study(84, slices=2)]
    before = _stored(world)

    body, content_type = multipart_body(good)
    cut = client.post(f"{ALPHA}/studies", content=body[:-30],
                      headers={**member, "Content-Type": content_type})
    assert cut.status_code == 400 and problem(cut)["code"] == "bad_multipart"
    assert "cut short" in cut.json()["detail"]
    wrong_boundary = client.post(f"{ALPHA}/studies", content=body, headers={
        **member, "Content-Type": f"{DICOM_PARTS}; boundary=another"})
    assert wrong_boundary.status_code == 400
    single = client.post(f"{ALPHA}/studies", content=good[0],
                         headers={**member, "Content-Type": "application/dicom"})
    assert single.status_code == 415 and problem(single)["code"] == "unsupported_media_type"
    json_parts = client.post(f"{ALPHA}/studies", content=body, headers={
        **member, "Content-Type": content_type.replace("application/dicom", JSON)})
    assert json_parts.status_code == 415
    mixed, mixed_type = multipart_body(good, part_type="application/dicom+xml")
    assert client.post(f"{ALPHA}/studies", content=mixed, headers={
        **member, "Content-Type": mixed_type}).status_code == 415
    empty, empty_type = multipart_body([])
    assert client.post(f"{ALPHA}/studies", content=empty, headers={
        **member, "Content-Type": empty_type}).status_code == 400
    xml = client.post(f"{ALPHA}/studies", content=body, headers={
        **member, "Content-Type": content_type, "Accept": "application/dicom+xml"})
    assert xml.status_code == 406 and problem(xml)["code"] == "not_acceptable"
    everywhere = _store(client, GLOBAL, good, member)
    assert everywhere.status_code == 400 and problem(everywhere)["code"] == "project_required"
    assert "/projects/{project}/dicomweb/studies" in everywhere.json()["detail"]
    assert _stored(world) == before  # nothing stored, nothing quarantined

    # searches: a bad value names the attribute and never echoes the value
    secret = "SECRET^PATIENT"
    for params, words in (({"StudyDate": "2020-01-"}, "StudyDate"),
                          ({"StudyDate": secret}, "StudyDate"),
                          ({"StudyInstanceUID": secret}, "StudyInstanceUID"),
                          ({"NoSuchKeyword": "1"}, "NoSuchKeyword"),
                          ({"includefield": "Nonsense"}, "Nonsense"),
                          ({"SOPInstanceUID": "1.2.3"}, "SOPInstanceUID")):  # below studies
        response = client.get(f"{ALPHA}/studies", params=params, headers=member)
        assert response.status_code == 400, params
        assert words in problem(response)["detail"] and secret not in response.text
    assert client.get(f"{ALPHA}/studies", params={"limit": "0"},
                      headers=member).status_code == 422
    assert client.get(f"{ALPHA}/studies", headers={**member, "Accept": "image/png"}
                      ).status_code == 406
    paths = _paths(_alpha_instance(world))
    assert client.get(f"{ALPHA}/studies/not-a-uid/metadata", headers=member).status_code == 422
    assert client.get(f"{ALPHA}/studies/1.2.3/metadata", headers=member).status_code == 404
    assert client.get(f"{ALPHA}{paths['frames'][:-1]}9", headers=member).status_code == 404
    missing_tag = client.get(f"{ALPHA}{paths['bulkdata'][:-8]}00091001", headers=member)
    assert missing_tag.status_code == 404 and problem(missing_tag)["code"] == "not_found"
    bad_window = client.get(f"{ALPHA}{paths['rendered']}", params={"window": "a,b"},
                            headers=member)
    assert bad_window.status_code == 400 and problem(bad_window)["code"] == "invalid_window"
    frames_as_png = client.get(f"{ALPHA}{paths['frames']}", headers={
        **member, "Accept": "image/png"})
    assert frames_as_png.status_code == 406


def test_unsupported_filters_are_ignored_with_a_warning(sqlite_world: World,
                                                        sqlite_client: TestClient) -> None:
    world, client = sqlite_world, sqlite_client
    response = client.get(f"{ALPHA}/studies", headers=world.headers("viewer"), params={
        "InstitutionalDepartmentName": "WARD*", "PatientID": "*"})
    assert response.status_code == 200 and len(response.json()) == 2
    assert response.headers["Warning"] == (
        '299 testserver: "The following attributes are not supported for matching: '
        'InstitutionalDepartmentName"')
    assert "Warning" not in client.get(f"{ALPHA}/studies", headers=world.headers("viewer")
                                       ).headers


# -- STOW-RS outcomes -------------------------------------------------------------------------
def _sequence(body: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    return list(body.get(tag, {}).get("Value", []))


def test_store_reports_each_instance(world: World, client: TestClient) -> None:
    member = world.headers("member")
    study = new_study(85, slices=2)
    other = new_study(86, slices=1)
    target = study[0].StudyInstanceUID
    parts = [to_bytes(d) for d in (*study, *other)]
    before = _stored(world)

    # one of another study sent to this study's URL: the others are stored, it is not
    mixed = _store(client, ALPHA, parts, member, suffix=f"/studies/{target}")
    assert mixed.status_code == 202 and mixed.headers["content-type"] == JSON
    body = mixed.json()
    assert body["00081190"]["Value"] == [f"https://testserver{ALPHA}/studies/{target}"]
    assert [r["00081155"]["Value"][0] for r in _sequence(body, "00081199")] == [
        d.SOPInstanceUID for d in study]
    failed = _sequence(body, "00081198")
    assert [(f["00081155"]["Value"][0], f["00081197"]["Value"][0]) for f in failed] == [
        (other[0].SOPInstanceUID, 0xA900)]
    assert _stored(world) == (before[0] + 2, before[1])

    # nothing storable: 409, each failure with its reason; unreadable parts are quarantined
    junk = b"this is not a DICOM file"
    refused = _store(client, ALPHA, [junk, to_bytes(other[0])], member,
                     suffix=f"/studies/{target}")
    assert refused.status_code == 409
    reasons = [f["00081197"]["Value"][0] for f in _sequence(refused.json(), "00081198")]
    assert reasons == [0xC000, 0xA900]
    assert "00081199" not in refused.json()
    assert _stored(world) == (before[0] + 2, before[1] + 1)

    # identical re-send: success; then the remaining one, stored without a study in the URL
    again = _store(client, ALPHA, parts, member)
    assert again.status_code == 200 and "00081198" not in again.json()
    assert len(_sequence(again.json(), "00081199")) == 3
    assert again.json()["00081190"] == {"vr": "UR"}  # two studies: no one study URL
    assert _stored(world) == (before[0] + 3, before[1] + 1)


# -- large and shared studies -----------------------------------------------------------------
def test_study_metadata_is_streamed_slice_by_slice(sqlite_world: World,
                                                  sqlite_client: TestClient,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    world, client = sqlite_world, sqlite_client
    row = _alpha_instance(world)
    url = f"{ALPHA}/studies/{row['study_instance_uid']}/metadata"
    whole = client.get(url, headers=world.headers("viewer"))
    monkeypatch.setattr(dicomweb_wado, "METADATA_CHUNK", 2)  # 3 instances: two slices
    streamed = client.get(url, headers=world.headers("viewer"))
    assert streamed.status_code == 200 and "content-length" not in streamed.headers
    assert "content-length" in whole.headers
    assert streamed.json() == whole.json()
    assert len(whole.json()) == sum(r["study_id"] == row["study_id"] for r in uids_of(world))


def test_an_instance_in_two_projects_is_retrieved_once_under_dicomweb(
        sqlite_world: World, sqlite_client: TestClient) -> None:
    world, client = sqlite_world, sqlite_client
    archive = world.runtime.archive
    row = _alpha_instance(world)
    in_study = [r for r in uids_of(world) if r["study_id"] == row["study_id"]]
    summary, _ = archive.store_objects(
        [(archive.instance_bytes(r["id"]), "copy") for r in in_study], "beta")
    assert summary.stored == len(in_study)
    admin = world.headers("admin")
    study = f"/studies/{row['study_instance_uid']}"
    retrieved = client.get(f"{GLOBAL}{study}", headers=admin)
    head = f"Content-Type: {retrieved.headers['content-type']}\r\n\r\n".encode()
    parts = email.message_from_bytes(head + retrieved.content).get_payload()
    assert len(parts) == len(in_study)
    assert len(client.get(f"{GLOBAL}{study}/metadata", headers=admin).json()) == len(in_study)
    # a search lists the study once per project it is in (each is a study of its project)
    found = client.get(f"{GLOBAL}/studies", headers=admin,
                       params={"StudyInstanceUID": row["study_instance_uid"]}).json()
    assert len(found) == 2
    # alpha's owner does not know beta: for them it is alpha's study only
    assert len(client.get(f"{GLOBAL}/studies", headers=world.headers("owner"), params={
        "StudyInstanceUID": row["study_instance_uid"]}).json()) == 1
