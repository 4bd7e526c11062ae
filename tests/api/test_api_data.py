"""The data API: uploads, downloads (files and zips), the hierarchy reads, resources and the
change feed. The core behaviours run on SQLite and PostgreSQL (``world``/``client``); the rest
on SQLite only."""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from apiworld import PASSWORD, World, problem, sqlite_world_and_client
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset

from imagebank.api.app import create_app
from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
from imagebank.services.archive import Archive
from imagebank.services.runtime import Runtime

ALPHA = "/api/v1/projects/alpha"
DICOM = {"Content-Type": "application/dicom"}
ZIP = {"Content-Type": "application/zip"}
GARBAGE = b"this is a plain text file, not DICOM at all\n" * 8


def new_datasets(patient: int, *, slices: int = 2, modality: str = "CT") -> list[Dataset]:
    """A synthetic study of a patient the world does not hold (patients 0-2 are taken)."""
    spec = SeriesSpec(modality=modality, slices=slices, rows=32, columns=32)
    return list(make_study(SyntheticPatient.make(patient), series=[spec]))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def originals(folder: Path) -> dict[str, bytes]:
    """The files the world ingested from ``folder``, by SOPInstanceUID."""
    out = {}
    for path in sorted(folder.glob("*.dcm")):
        data = path.read_bytes()
        out[str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)] = data
    return out


def headers_of(folder: Path) -> list[Dataset]:
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.glob("*.dcm"))]


def count_instances(world: World, project: str = "alpha") -> int:
    return int(world.runtime.archive.project_summary(project)["counts"]["instances"])


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, TestClient]]:
    """One SQLite world for the tests that only read, and one that adds an instance (none of
    them depends on the counts of another)."""
    with sqlite_world_and_client(tmp_path_factory.mktemp("shared")) as shared:
        yield shared


# -- uploads ----------------------------------------------------------------------------------
def test_upload_one_file_then_duplicate_conflict_garbage_and_wrong_type(
        world: World, client: TestClient) -> None:
    owner = world.headers("owner")
    ds = new_datasets(7, slices=1)[0]
    data = to_bytes(ds)
    before = count_instances(world)

    response = client.post(f"{ALPHA}/instances", content=data, headers={**owner, **DICOM})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["stored"], body["duplicates"], body["conflicts"], body["quarantined"]) == (
        1, 0, 0, 0)
    assert body["bytes_stored"] == len(data)
    [instance_id] = body["instance_ids"]
    assert count_instances(world) == before + 1
    got = client.get(f"{ALPHA}/instances/{instance_id}", headers=owner)
    assert got.status_code == 200
    assert got.json()["sop_instance_uid"] == ds.SOPInstanceUID
    assert got.json()["sha256"] == sha256(data)

    again = client.post(f"{ALPHA}/instances", content=data, headers={**owner, **DICOM})
    assert again.status_code == 200, again.text
    assert (again.json()["stored"], again.json()["duplicates"]) == (0, 1)
    assert count_instances(world) == before + 1

    ds.ContentTime = "101010"  # other bytes, same SOPInstanceUID
    other = to_bytes(ds)
    assert other != data
    conflict = client.post(f"{ALPHA}/instances", content=other, headers={**owner, **DICOM})
    assert conflict.status_code == 409
    details = problem(conflict)
    assert details["code"] == "conflict"
    assert details["summary"]["conflicts"] == 1 and details["summary"]["stored"] == 0
    assert count_instances(world) == before + 1
    stored = client.get(f"{ALPHA}/instances/{instance_id}/file", headers=owner)
    assert stored.content == data  # the first stays

    garbage = client.post(f"{ALPHA}/instances", content=GARBAGE, headers={**owner, **DICOM})
    assert garbage.status_code == 400
    details = problem(garbage)
    assert details["summary"]["reasons"] == {"not_dicom": 1}
    assert "not_dicom" in details["detail"]
    quarantine = client.get(f"{ALPHA}/quarantine", headers=owner)
    assert quarantine.status_code == 200
    assert [q["reason"] for q in quarantine.json() if q["sha256"] == sha256(GARBAGE)] == [
        "not_dicom"]
    assert count_instances(world) == before + 1

    wrong = client.post(f"{ALPHA}/instances", content=data,
                        headers={**owner, "Content-Type": "image/png"})
    assert wrong.status_code == 415
    assert problem(wrong)["code"] == "unsupported_media_type"


def test_upload_needs_write_permission(shared: tuple[World, TestClient]) -> None:
    sqlite_world, sqlite_client = shared
    data = to_bytes(new_datasets(8, slices=1)[0])
    for user, status in (("collaborator", 403), ("viewer", 403), ("outsider", 404)):
        response = sqlite_client.post(f"{ALPHA}/instances", content=data,
                                      headers={**sqlite_world.headers(user), **DICOM})
        assert response.status_code == status, user
        problem(response)
    assert count_instances(sqlite_world) == 5
    response = sqlite_client.post(f"{ALPHA}/instances", content=data,
                                  headers={**sqlite_world.headers("member"), **DICOM})
    assert response.status_code == 200 and response.json()["stored"] == 1


def test_upload_zip_with_good_and_bad_files(sqlite_world: World,
                                            sqlite_client: TestClient) -> None:
    good = [to_bytes(ds) for ds in new_datasets(9, slices=3)]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i, data in enumerate(good):
            archive.writestr(f"dicom/{i}.dcm", data)
        archive.writestr("notes/readme.txt", GARBAGE)
        archive.writestr("dicom/broken.dcm", good[0][:200])
    response = sqlite_client.post(f"{ALPHA}/instances", content=buffer.getvalue(),
                                  headers={**sqlite_world.headers("owner"), **ZIP})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["stored"] == 3
    assert body["quarantined"] == 2
    assert sum(body["reasons"].values()) == 2
    assert len(body["problems"]) == 2
    assert count_instances(sqlite_world) == 5 + 3
    spool = sqlite_world.runtime.archive.settings.data / "spool"
    assert not spool.exists() or list(spool.iterdir()) == []


@pytest.fixture
def small_archive(tmp_path: Path) -> Iterator[tuple[Runtime, dict[str, str]]]:
    """An archive that accepts objects of at most 8 KiB, with an owner of project "alpha"."""
    archive = Archive.open(tmp_path / "small", workers=1, max_object_size=8192)
    runtime = Runtime.for_archive(archive)
    archive.create_project("alpha")
    runtime.accounts.add_user("owner", PASSWORD)
    runtime.accounts.grant("alpha", "owner", "owner")
    token, _ = runtime.accounts.create_token("owner", scopes=["read", "write"])
    try:
        yield runtime, {"Authorization": f"Bearer {token}"}
    finally:
        archive.close()


def test_bodies_over_the_size_limit_are_refused(
        small_archive: tuple[Runtime, dict[str, str]]) -> None:
    runtime, auth = small_archive
    big = to_bytes(new_datasets(10, slices=1)[0]).ljust(20_000, b"\0")
    small = to_bytes(next(make_study(SyntheticPatient.make(11),
                                     series=[SeriesSpec(slices=1, rows=16, columns=16)])))
    assert len(small) < 8192 < len(big)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.dcm", big)
    zipped = buffer.getvalue()

    def chunked(data: bytes) -> Iterator[bytes]:  # no Content-Length: counted as it streams
        for start in range(0, len(data), 1000):
            yield data[start:start + 1000]

    client = TestClient(create_app(runtime, background=False), base_url="https://testserver",
                        raise_server_exceptions=False)
    with client:
        for content, media in ((big, DICOM), (chunked(big), DICOM), (zipped, ZIP),
                               (chunked(zipped), ZIP)):
            response = client.post(f"{ALPHA}/instances", content=content,
                                   headers={**auth, **media})
            assert response.status_code == 400, response.text
            assert problem(response)["code"] == "too_large"
        spool = runtime.archive.settings.data / "spool"
        assert not spool.exists() or list(spool.iterdir()) == []
        assert runtime.archive.project_summary("alpha")["counts"]["instances"] == 0
        assert runtime.archive.quarantine("alpha") == []
        # The limit is the limit, not less: a small file goes in.
        response = client.post(f"{ALPHA}/instances", content=small, headers={**auth, **DICOM})
        assert response.status_code == 200 and response.json()["stored"] == 1
        # A small zip holding a big object: the object is refused, the rest stored.
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("big.dcm", big)
            archive.writestr("small.dcm", to_bytes(next(make_study(
                SyntheticPatient.make(12), series=[SeriesSpec(slices=1, rows=16, columns=16)]))))
        assert len(buffer.getvalue()) < 8192
        response = client.post(f"{ALPHA}/instances", content=buffer.getvalue(),
                               headers={**auth, **ZIP})
        assert response.status_code == 200, response.text
        assert (response.json()["stored"], response.json()["reasons"]) == (1, {"too_large": 1})
        assert runtime.archive.project_summary("alpha")["counts"]["instances"] == 2


# -- downloads --------------------------------------------------------------------------------
def _instances(client: TestClient, auth: dict[str, str], series: str) -> list[dict[str, Any]]:
    response = client.get(f"{ALPHA}/series/{series}/instances", headers=auth)
    assert response.status_code == 200
    rows: list[dict[str, Any]] = response.json()
    return rows


def test_downloads_are_the_original_bytes(world: World, client: TestClient,
                                          tmp_path: Path) -> None:
    auth = world.headers("collaborator")
    sent = originals(tmp_path / "alpha")
    study, series = world.ids["study"], world.ids["series"]
    rows = _instances(client, auth, series)
    assert rows
    for row in rows:
        response = client.get(f"{ALPHA}/instances/{row['id']}/file", headers=auth)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/dicom"
        assert row["id"] in response.headers["content-disposition"]
        assert sha256(response.content) == sha256(sent[row["sop_instance_uid"]])

    every_series = client.get(f"{ALPHA}/studies/{study}/series", headers=auth).json()
    expected: dict[str, bytes] = {}
    for item in every_series:
        for row in _instances(client, auth, item["id"]):
            expected[f"{study}/{item['id']}/{row['id']}.dcm"] = sent[row["sop_instance_uid"]]
    for url, wanted in (
            (f"{ALPHA}/studies/{study}/archive", expected),
            (f"{ALPHA}/series/{series}/archive",
             {k: v for k, v in expected.items() if k.split("/")[1] == series})):
        response = client.get(url, headers=auth)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            assert archive.testzip() is None
            names = archive.namelist()
            assert sorted(names) == sorted(wanted)
            for name in names:
                assert archive.read(name) == wanted[name]
    # Viewers read but do not download.
    response = client.get(f"{ALPHA}/studies/{study}/archive", headers=world.headers("viewer"))
    assert response.status_code == 403


def test_downloaded_instance_passes_dciodvfy(shared: tuple[World, TestClient],
                                             tmp_path: Path) -> None:
    sqlite_world, sqlite_client = shared
    dciodvfy = shutil.which("dciodvfy")
    assert dciodvfy, "dciodvfy is missing: apt-get install dicom3tools (.ci/run does)"
    response = sqlite_client.get(f"{ALPHA}/instances/{sqlite_world.ids['instance']}/file",
                                 headers=sqlite_world.headers("owner"))
    assert response.status_code == 200
    path = tmp_path / "downloaded.dcm"
    path.write_bytes(response.content)
    result = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, check=False)
    output = result.stdout + result.stderr
    assert "CTImage" in output or "MRImage" in output, output[:500]
    assert [line for line in output.splitlines() if line.startswith("Error")] == []


# -- the hierarchy ----------------------------------------------------------------------------
def _studies(client: TestClient, auth: dict[str, str], **params: Any) -> dict[str, Any]:
    response = client.get(f"{ALPHA}/studies", params=params, headers=auth)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def _uids(page: dict[str, Any]) -> set[str]:
    return {item["study_instance_uid"] for item in page["items"]}


def test_hierarchy_reads_counts_filters_and_pages(world: World, client: TestClient,
                                                  tmp_path: Path) -> None:
    auth = world.headers("viewer")
    files = headers_of(tmp_path / "alpha")
    studies: dict[str, Dataset] = {str(ds.StudyInstanceUID): ds for ds in files}
    assert len(studies) == 2

    summary = client.get(ALPHA, headers=auth)
    assert summary.status_code == 200
    counts = summary.json()["counts"]
    assert counts["subjects"] == len({ds.PatientID for ds in files})
    assert counts["studies"] == 2
    assert counts["series"] == len({ds.SeriesInstanceUID for ds in files})
    assert counts["instances"] == len(files)
    assert counts["bytes"] == sum(p.stat().st_size for p in (tmp_path / "alpha").glob("*.dcm"))
    assert summary.json()["role"] == "viewer"

    subjects = client.get(f"{ALPHA}/subjects", headers=auth).json()
    assert sorted(s["patient_id"] for s in subjects["items"]) == sorted(
        {ds.PatientID for ds in files})
    assert subjects["next_offset"] is None
    first = client.get(f"{ALPHA}/subjects", params={"limit": 1}, headers=auth).json()
    second = client.get(f"{ALPHA}/subjects", params={"limit": 1, "offset": 1},
                        headers=auth).json()
    assert (first["limit"], first["offset"], first["next_offset"]) == (1, 0, 1)
    assert second["next_offset"] is None
    assert [first["items"][0]["id"], second["items"][0]["id"]] == [
        s["id"] for s in subjects["items"]]

    every = _studies(client, auth)
    assert _uids(every) == set(studies) and every["next_offset"] is None
    dates = sorted(str(ds.StudyDate) for ds in studies.values())
    assert dates[0] != dates[1]

    def expect(predicate: Any) -> set[str]:
        return {uid for uid, ds in studies.items() if predicate(ds)}

    for uid, ds in studies.items():
        assert _uids(_studies(client, auth, PatientID=ds.PatientID)) == {uid}
        assert _uids(_studies(client, auth, AccessionNumber=ds.AccessionNumber)) == expect(
            lambda d, ds=ds: d.AccessionNumber == ds.AccessionNumber)
        assert _uids(_studies(client, auth, StudyDate=ds.StudyDate)) == {uid}
        assert _uids(_studies(client, auth, ModalitiesInStudy=ds.Modality)) == expect(
            lambda d, ds=ds: d.Modality == ds.Modality)
    early, late = dates
    for value, wanted in ((f"{early}-{late}", expect(lambda d: True)),
                          (f"{early}-", expect(lambda d: True)),
                          (f"-{early}", expect(lambda d: d.StudyDate == early)),
                          (f"{late}-", expect(lambda d: d.StudyDate == late)),
                          ("19000101-19000102", set())):
        assert _uids(_studies(client, auth, StudyDate=value)) == wanted, value
    assert _uids(_studies(client, auth, PatientID="SYN9999999")) == set()
    assert _uids(_studies(client, auth, ModalitiesInStudy="US")) == set()

    page_one = _studies(client, auth, limit=1)
    assert len(page_one["items"]) == 1 and page_one["next_offset"] == 1
    page_two = _studies(client, auth, limit=1, offset=page_one["next_offset"])
    assert len(page_two["items"]) == 1 and page_two["next_offset"] is None
    assert [page_one["items"][0]["study_date"], page_two["items"][0]["study_date"]] == [
        late, early]  # newest first
    assert _studies(client, auth, offset=5)["items"] == []

    instance = client.get(f"{ALPHA}/instances/{world.ids['instance']}", headers=auth).json()
    metadata = client.get(f"{ALPHA}/instances/{world.ids['instance']}/metadata", headers=auth)
    assert metadata.status_code == 200
    assert metadata.headers["content-type"].startswith("application/dicom+json")
    tags = metadata.json()
    assert tags["00080018"]["vr"] == "UI"
    assert tags["00080018"]["Value"] == [instance["sop_instance_uid"]]
    assert "7FE00010" not in tags  # no bulk data


def test_invalid_query_parameters_are_problems_that_do_not_echo(
        shared: tuple[World, TestClient]) -> None:
    sqlite_world, sqlite_client = shared
    auth = sqlite_world.headers("viewer")
    for value in ("2020-01-01", "20200101-2021", "abcdefgh", "-", "2020010-20200102"):
        echoed = len(value) > 1
        response = sqlite_client.get(f"{ALPHA}/studies", params={"StudyDate": value},
                                     headers=auth)
        assert response.status_code == 400, value
        assert problem(response)["code"] == "invalid_input"
        assert not echoed or value not in response.text
    for params, echo in (({"limit": 0}, None), ({"limit": 5000}, "5000"),
                         ({"limit": "seven7seven"}, "seven7seven"),
                         ({"offset": -3}, "-3"),
                         ({"PatientID": "SYN0000000" * 8}, "SYN0000000")):
        response = sqlite_client.get(f"{ALPHA}/studies", params=params, headers=auth)
        assert response.status_code == 422, params
        details = problem(response)
        assert details["code"] == "invalid_request"
        assert next(iter(params)) in details["detail"]
        if echo is not None:
            assert echo not in response.text, params
    response = sqlite_client.get(f"{ALPHA}/subjects", params={"limit": 1001}, headers=auth)
    assert response.status_code == 422 and "1001" not in response.text


def test_objects_of_another_project_are_not_found(shared: tuple[World, TestClient]) -> None:
    sqlite_world, sqlite_client = shared
    auth = sqlite_world.headers("owner")
    ids = sqlite_world.ids
    for url in (f"studies/{ids['beta_study']}", f"series/{ids['beta_series']}",
                f"instances/{ids['beta_instance']}", f"instances/{ids['beta_instance']}/file",
                f"subjects/{ids['beta_subject']}", f"studies/{ids['beta_study']}/archive",
                f"resources/{ids['beta_resource']}/file", f"studies/{'0' * 32}"):
        response = sqlite_client.get(f"{ALPHA}/{url}", headers=auth)
        assert response.status_code == 404, url
        assert problem(response)["code"] == "not_found"


# -- resources --------------------------------------------------------------------------------
def test_resources_attach_list_download(world: World, client: TestClient) -> None:
    owner = world.headers("owner")
    study = world.ids["study"]
    payload = bytes(range(256)) * 40
    response = client.post(f"{ALPHA}/resources", content=payload,
                           params={"level": "study", "parent_id": study, "name": "seg.nii.gz"},
                           headers={**owner, "Content-Type": "application/gzip"})
    assert response.status_code == 201, response.text
    created = response.json()
    assert (created["level"], created["parent_id"], created["name"]) == (
        "study", study, "seg.nii.gz")
    assert created["size_bytes"] == len(payload) and created["sha256"] == sha256(payload)

    listed = client.get(f"{ALPHA}/resources", params={"level": "study", "parent_id": study},
                        headers=owner)
    assert listed.status_code == 200
    assert created["id"] in {r["id"] for r in listed.json()}
    assert all(r["parent_id"] == study for r in listed.json())
    got = client.get(f"{ALPHA}/resources/{created['id']}", headers=owner)
    assert got.status_code == 200 and got.json()["name"] == "seg.nii.gz"
    download = client.get(f"{ALPHA}/resources/{created['id']}/file", headers=owner)
    assert download.status_code == 200
    assert download.content == payload
    assert download.headers["content-type"].startswith("application/gzip")

    before = len(world.runtime.archive.resources("beta"))
    elsewhere = client.post(f"{ALPHA}/resources", content=b"x",
                            params={"level": "study", "parent_id": world.ids["beta_study"],
                                    "name": "x.txt"}, headers=owner)
    assert elsewhere.status_code == 404
    problem(elsewhere)
    assert len(world.runtime.archive.resources("beta")) == before
    assert len(world.runtime.archive.resources("alpha")) == 2


# -- the change feed --------------------------------------------------------------------------
def _changes(client: TestClient, auth: dict[str, str], since: int, limit: int = 100
             ) -> dict[str, Any]:
    response = client.get(f"{ALPHA}/changes", params={"since": since, "limit": limit},
                          headers=auth)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def test_changes_feed_cursor(world: World, client: TestClient) -> None:
    auth = world.headers("viewer")
    everything = _changes(client, auth, 0)
    seqs = [c["seq"] for c in everything["changes"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert len(seqs) == 5 + 1  # the five instances and the resource
    assert everything["done"] is True and everything["last"] == seqs[-1]

    walked, cursor = [], 0  # one at a time: not done until the end
    while True:
        page = _changes(client, auth, cursor, limit=1)
        walked += [c["seq"] for c in page["changes"]]
        assert page["last"] >= cursor
        cursor = page["last"]
        if page["done"]:
            break
        assert len(walked) <= len(seqs)
    assert walked == seqs

    last = everything["last"]
    quiet = _changes(client, auth, last)
    assert quiet == {"changes": [], "last": last, "done": True}

    data = to_bytes(new_datasets(12, slices=1)[0])
    upload = client.post(f"{ALPHA}/instances", content=data,
                         headers={**world.headers("member"), **DICOM})
    assert upload.status_code == 200
    [instance_id] = upload.json()["instance_ids"]
    fresh = _changes(client, auth, last)
    assert [(c["change_type"], c["level"], c["resource_id"]) for c in fresh["changes"]] == [
        ("stored", "instance", instance_id)]
    assert fresh["last"] > last and fresh["done"] is True
    assert _changes(client, auth, fresh["last"])["changes"] == []
    # Beta's changes never show in alpha's feed.
    beta_ids = {world.ids["beta_instance"], world.ids["beta_resource"]}
    assert not beta_ids & {c["resource_id"] for c in _changes(client, auth, 0)["changes"]}

