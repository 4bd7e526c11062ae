"""The quarantine's retry and discard through the REST API (decision 0030), a retry racing a
discard, the upload's study IDs and source names, and the pages of uploads, quarantine and
jobs as HTML: escaping, who sees what."""

from __future__ import annotations

import io
import threading
import uuid
import zipfile
from typing import Any
from urllib.parse import quote

import pytest
from apiworld import World, problem
from fastapi.testclient import TestClient
from pydicom import dcmread
from sqlalchemy import text

from imagebank.api.routes_data import upload_source
from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
from imagebank.domain.errors import NotFoundError
from imagebank.domain.ids import quarantine_object_key
from imagebank.index import quarantine as sql
from imagebank.index import repo
from imagebank.services import quarantine as items
from imagebank.services.archive import Archive

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


# -- a retry racing a discard (SQLite and PostgreSQL) --------------------------------------------
def _archived(archive: Archive, data: bytes) -> bool:
    return bool(archive.find(str(dcmread(io.BytesIO(data)).SOPInstanceUID)))


def _instance_objects(archive: Archive) -> set[str]:
    return {key for key in archive.store.keys() if "quarantine" not in key}


def test_a_discard_committed_during_a_retry_wins(world: World,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    archive = world.runtime.archive
    data = _dicom(50)
    item = _held(world, "alpha", data)
    before = _instance_objects(archive)
    group = archive._group
    real = group.commit

    def discard_first(project: str, parsed: Any) -> Any:
        items.discard(archive, item, "alpha")  # commits while the retry is under way
        return real(project, parsed)

    monkeypatch.setattr(group, "commit", discard_first)
    with pytest.raises(NotFoundError, match="discarded while it was being retried"):
        items.retry(archive, item, "alpha")
    assert not _archived(archive, data)
    assert _instance_objects(archive) == before  # the bytes published for it went again
    with pytest.raises(NotFoundError):
        items.get_item(archive, item)


def test_a_retry_waits_for_a_discard_in_progress_and_archives_nothing(world: World) -> None:
    archive = world.runtime.archive
    data = _dicom(51)
    item = _held(world, "alpha", data)
    outcome: dict[str, Any] = {}

    def retry() -> None:
        try:
            outcome["result"] = items.retry(archive, item, "alpha")
        except Exception as error:
            outcome["error"] = error

    # A discard's transaction, not committed yet: the row is deleted and locked.
    session = archive.sessions()
    try:
        assert sql.delete_quarantine_item(session, item)
        thread = threading.Thread(target=retry)
        thread.start()
        thread.join(1.5)
        assert thread.is_alive() and not outcome  # the retry's commit waits for it
        session.commit()
    finally:
        session.close()
    thread.join(30)
    assert isinstance(outcome.get("error"), NotFoundError), outcome
    assert not _archived(archive, data)


def test_a_discard_after_a_retry_archived_the_item_finds_it_gone(world: World) -> None:
    archive = world.runtime.archive
    data = _dicom(52)
    item = _held(world, "alpha", data)
    assert items.retry(archive, item, "alpha").archived
    with pytest.raises(NotFoundError):
        items.discard(archive, item, "alpha")
    assert _archived(archive, data)


def test_a_retry_refused_again_keeps_the_item_once(world: World) -> None:
    archive = world.runtime.archive
    item = _held(world, "alpha", b"still not DICOM")
    again = items.retry(archive, item, "alpha")
    assert (again.archived, again.reason) == (False, "not_dicom")
    assert [i["id"] for i in items.list_items(archive, "alpha", limit=1000)].count(item) == 1


# -- uploads ------------------------------------------------------------------------------------
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


def test_an_upload_records_the_file_name_sent_in_its_header(sqlite_world: World,
                                                           sqlite_client: TestClient) -> None:
    world, client = sqlite_world, sqlite_client
    member = {**world.headers("member"), **DICOM}
    name = "scans/Ünï cödé #1?.txt"
    named = client.post(f"{ALPHA}/instances", content=b"not DICOM",
                        headers={**member, "X-Imagebank-Filename": quote(name, safe="")})
    unnamed = client.post(f"{ALPHA}/instances", content=b"not DICOM either", headers=member)
    assert named.status_code == unnamed.status_code == 400
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive_file:
        archive_file.writestr("inside/notes.txt", "no DICOM here")
    zipped = client.post(f"{ALPHA}/instances", content=buffer.getvalue(), headers={
        **world.headers("member"), "Content-Type": "application/zip",
        "X-Imagebank-Filename": quote("folder/batch.zip", safe="")})
    assert zipped.status_code == 200 and zipped.json()["quarantined"] == 1
    sources = [i["source"] for i in items.list_items(world.runtime.archive, "alpha")]
    assert sorted(sources) == sorted([f"upload: {name}", "upload",
                                      "upload: folder/batch.zip!inside/notes.txt"])
    # What the upload answers and audits does not carry the name.
    assert name not in named.text and "batch.zip" not in zipped.text
    events = world.runtime.audit.events(since=0, limit=10_000)
    assert not [e for e in events if "scans/" in (e["detail"] or "")]
    # Too long a header is refused.
    long = client.post(f"{ALPHA}/instances", content=b"x", headers={
        **member, "X-Imagebank-Filename": "a" * 4097})
    assert long.status_code == 422


def test_the_uploads_source_name_is_cleaned() -> None:
    assert upload_source(None) == upload_source("") == upload_source("%00%0A ") == "upload"
    assert upload_source(quote("a/b c.dcm", safe="")) == "upload: a/b c.dcm"
    # control characters (C0, C1), bidirectional overrides and line separators are dropped
    assert upload_source("evil%0D%0Aname%E2%80%AEfdp.exe%C2%85%E2%80%A8") == (
        "upload: evilnamefdp.exe")
    assert upload_source("bad%ZZ%FF") == "upload: bad%ZZ\ufffd"  # not UTF-8: replaced
    long = upload_source(quote("x" * 300 + "/IM0001.dcm", safe=""))
    assert long.startswith("upload: …x") and long.endswith("/IM0001.dcm")
    assert len(long) == len("upload: ") + 255


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


def test_a_research_projects_quarantine_offers_no_retry_and_says_why(
        sqlite_world: World, sqlite_client: TestClient) -> None:
    world, client = sqlite_world, sqlite_client
    lab_item = _held(world, "lab", b"released, then refused")
    alpha_item = _held(world, "alpha", b"uploaded, then refused")
    owner = {**world.headers("owner"), "Accept": "text/html"}
    lab = client.get("/ui/projects/lab/quarantine", headers=owner).text
    assert f'data-item="{lab_item}"' in lab and 'data-action="discard"' in lab
    assert 'data-action="retry"' not in lab and "Bytes not kept" not in lab
    assert 'id="no-retry"' in lab and "run the share again" in lab
    # ... where the API would refuse it: a research project takes no upload
    refused = client.post(f"{API}/projects/lab/quarantine/{lab_item}/retry",
                          headers=world.headers("owner"))
    assert refused.status_code == 403
    alpha = client.get("/ui/projects/alpha/quarantine", headers=owner).text
    assert 'data-action="retry"' in alpha and 'id="no-retry"' not in alpha
    assert f'data-item="{alpha_item}"' in alpha


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
