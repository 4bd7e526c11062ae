"""The quarantine's retry and discard through the REST API (decision 0030), the upload's
study IDs, and the pages of uploads, quarantine and jobs as HTML: escaping, who sees what."""

from __future__ import annotations

import uuid
from typing import Any

from apiworld import World, problem
from fastapi.testclient import TestClient
from sqlalchemy import text

from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
from imagebank.domain.ids import quarantine_object_key
from imagebank.index import repo

API = "/api/v1"
ALPHA = f"{API}/projects/alpha"
DICOM = {"Content-Type": "application/dicom"}
HOSTILE = '<script>alert("x")</script>.dcm'


def _dicom(patient: int) -> bytes:
    spec = SeriesSpec(modality="CT", slices=1, rows=8, columns=8)
    return to_bytes(next(iter(make_study(SyntheticPatient.make(patient), series=[spec]))))


def _held(world: World, project: str, data: bytes, source: str = "held.dcm",
          kept: bool = True) -> str:
    """A quarantine item made directly (kept bytes ``data``, or none kept)."""
    archive = world.runtime.archive
    item_id = uuid.uuid4().hex
    key = quarantine_object_key(project, item_id) if kept else None
    if key:
        archive.store.put(key, data)
    with archive.sessions.begin() as session:
        repo.add_quarantine(session, [{
            "id": item_id, "project_id": project, "reason": "not_dicom" if kept else "too_large",
            "message": "Held.", "source": source, "size_bytes": len(data), "sha256": None,
            "object_key": key, "instance_id": None}])
    return item_id


def _audit_since(world: World, seq: int) -> list[dict[str, Any]]:
    return world.runtime.audit.events(since=seq, limit=1000)


def _head(world: World) -> int:
    with world.runtime.archive.sessions.begin() as session:
        return int(session.execute(text("SELECT seq FROM audit_head")).scalar_one())


def test_retry_and_discard_through_the_api(world: World, client: TestClient) -> None:
    owner = world.headers("owner")
    bad = client.post(f"{ALPHA}/instances", content=b"plain text", headers={**owner, **DICOM})
    assert bad.status_code == 400 and problem(bad)["code"] == "rejected"
    listed = client.get(f"{ALPHA}/quarantine", headers=owner).json()
    assert [(i["reason"], i["kept"], i["source"]) for i in listed] == [
        ("not_dicom", True, "upload")]
    item = listed[0]["id"]
    start = _head(world)

    again = client.post(f"{ALPHA}/quarantine/{item}/retry", headers=owner)
    assert again.status_code == 200
    body = again.json()
    assert (body["item_id"], body["outcome"], body["archived"], body["reason"]) == (
        item, "quarantined", False, "not_dicom")
    assert [i["id"] for i in client.get(f"{ALPHA}/quarantine", headers=owner).json()] == [item]

    good = _held(world, "alpha", _dicom(40))
    stored = client.post(f"{ALPHA}/quarantine/{good}/retry", headers=owner).json()
    assert (stored["outcome"], stored["archived"]) == ("stored", True)
    study = client.get(f"{ALPHA}/studies/{stored['study_id']}", headers=owner)
    assert study.status_code == 200 and study.json()["num_instances"] == 1

    gone = client.delete(f"{ALPHA}/quarantine/{item}", headers=owner)
    assert gone.status_code == 204 and gone.content == b""
    assert client.get(f"{ALPHA}/quarantine", headers=owner).json() == []
    missing = client.delete(f"{ALPHA}/quarantine/{item}", headers=owner)
    assert missing.status_code == 404
    assert problem(missing)["detail"] == f"No quarantine item {item} in project 'alpha'."

    events = [e for e in _audit_since(world, start) if e["level"] == "quarantine"]
    assert [(e["action"], e["object_id"], e["status"]) for e in events] == [
        ("quarantine_retry", item, 200), ("quarantine_retry", good, 200),
        ("quarantine_discard", item, 204), ("quarantine_discard", item, 404)]
    assert '"outcome": "quarantined"' in (events[0]["detail"] or "")


def test_retry_problems(sqlite_world: World, sqlite_client: TestClient) -> None:
    world, client = sqlite_world, sqlite_client
    owner = world.headers("owner")
    unkept = _held(world, "alpha", b"x" * 10, kept=False)
    refused = client.post(f"{ALPHA}/quarantine/{unkept}/retry", headers=owner)
    assert refused.status_code == 409
    body = problem(refused)
    assert body["code"] == "bytes_not_kept" and "not kept" in body["detail"]
    # another project's item is not found, in the words of a missing one
    beta_item = _held(world, "beta", b"beta's")
    ghost = uuid.uuid4().hex
    for method in ("POST", "DELETE"):
        suffix = "/retry" if method == "POST" else ""
        hidden = client.request(method, f"{ALPHA}/quarantine/{beta_item}{suffix}",
                                headers=owner)
        absent = client.request(method, f"{ALPHA}/quarantine/{ghost}{suffix}", headers=owner)
        assert hidden.status_code == absent.status_code == 404
        assert problem(hidden)["detail"].replace(beta_item, "?") == problem(
            absent)["detail"].replace(ghost, "?")
    # a member may upload but not manage the quarantine; an ID that is no ID is a 422
    assert client.delete(f"{ALPHA}/quarantine/{unkept}",
                         headers=world.headers("member")).status_code == 403
    assert client.delete(f"{ALPHA}/quarantine/not-an-id", headers=owner).status_code == 422
    assert client.get(f"{API}/projects/beta/quarantine", headers=world.headers("admin")
                      ).json()[0]["id"] == beta_item


def test_an_upload_answers_the_study_that_holds_it(sqlite_world: World,
                                                   sqlite_client: TestClient) -> None:
    world, client = sqlite_world, sqlite_client
    member = {**world.headers("member"), **DICOM}
    data = _dicom(41)
    first = client.post(f"{ALPHA}/instances", content=data, headers=member).json()
    assert first["stored"] == 1 and len(first["study_ids"]) == 1
    study = world.runtime.archive.get("study", first["study_ids"][0])
    assert study["project_id"] == "alpha"
    again = client.post(f"{ALPHA}/instances", content=data, headers=member).json()
    assert (again["duplicates"], again["instance_ids"], again["study_ids"]) == (
        1, [], first["study_ids"])
    bad = client.post(f"{ALPHA}/instances", content=b"nope", headers=member)
    assert problem(bad)["summary"]["study_ids"] == []


# -- the pages ----------------------------------------------------------------------------------
def test_the_quarantine_page_escapes_what_it_shows(sqlite_world: World,
                                                   sqlite_client: TestClient) -> None:
    world, client = sqlite_world, sqlite_client
    item = _held(world, "alpha", b"<b>bytes</b>", source=HOSTILE)
    unkept = _held(world, "alpha", b"big", source="huge.dcm", kept=False)
    page = client.get("/ui/projects/alpha/quarantine", headers=world.headers("owner"))
    assert page.status_code == 200
    html = page.text
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;.dcm" in html
    assert f'data-item="{item}"' in html and f'data-item="{unkept}"' in html
    row = html[html.index(f'data-item="{unkept}"'):]
    row = row[:row.index("</tr>")]
    assert "Bytes not kept" in row and 'data-action="retry"' not in row
    assert 'data-reason="too_large"' in html and 'data-reason="not_dicom"' in html
    assert page.headers["cache-control"] == "no-store"


def test_who_sees_the_pages(sqlite_world: World, sqlite_client: TestClient) -> None:
    world, client = sqlite_world, sqlite_client
    html = {"Accept": "text/html"}

    def get(path: str, user: str | None) -> Any:
        return client.get(path, headers={**world.headers(user), **html})

    assert get("/ui/projects/alpha/upload", "member").status_code == 200
    assert get("/ui/projects/alpha/upload", "viewer").status_code == 403
    assert get("/ui/projects/alpha/quarantine", "member").status_code == 403
    for path in ("/ui/projects/alpha/upload", "/ui/projects/alpha/quarantine"):
        hidden, ghost = get(path, "outsider"), get(path.replace("alpha", "nosuch"), "outsider")
        assert hidden.status_code == ghost.status_code == 404
        assert "Not found" in hidden.text
    # a research project takes no uploads: the page says so instead of offering them
    lab = get("/ui/projects/lab/upload", "owner")
    assert lab.status_code == 200 and "research project" in lab.text
    assert 'id="upload-files"' not in lab.text
    assert 'id="upload-files"' in get("/ui/projects/alpha/upload", "member").text


def test_the_jobs_pages_show_ones_own_jobs_only(sqlite_world: World,
                                                sqlite_client: TestClient) -> None:
    world, client = sqlite_world, sqlite_client
    runtime = world.runtime
    member = runtime.accounts.get_user("member")
    job = runtime.jobs.submit("export", "alpha", {"level": "study",
                                                  "ids": [world.ids["study"]]}, member["id"])
    runtime.jobs.run_pending()
    mine = client.get("/ui/jobs", headers=world.headers("member"))
    assert mine.status_code == 200 and f'data-job="{job["id"]}"' in mine.text
    assert f'href="/api/v1/jobs/{job["id"]}/result"' in mine.text
    assert 'max="2" value="2"' in mine.text  # the study's two instances, all written
    theirs = client.get("/ui/jobs", headers=world.headers("viewer"))
    assert theirs.status_code == 200 and job["id"] not in theirs.text
    assert "No jobs yet" in theirs.text
    detail = client.get(f"/ui/jobs/{job['id']}", headers=world.headers("member"))
    assert detail.status_code == 200 and "instances" in detail.text and "succeeded" in detail.text
    hidden = client.get(f"/ui/jobs/{job['id']}", headers=world.headers("viewer"))
    ghost = client.get(f"/ui/jobs/{uuid.uuid4().hex}", headers=world.headers("viewer"))
    assert hidden.status_code == ghost.status_code == 404
    # alpha's owner (who manages the project) sees it, as the API shows it to them
    assert client.get(f"/ui/jobs/{job['id']}", headers=world.headers("owner")).status_code == 200
