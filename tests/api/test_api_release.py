"""Shares and de-identified releases through the API (``/shares``, ``/releases``), research
projects made with ``POST /projects``, and what a research project refuses (anything but a
share). The jobs are run with the runtime's ``Jobs.run_pending`` (the server's runner)."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from collections.abc import Iterator
from typing import Any

import pydicom
import pytest
from apiworld import (
    DOCS_POLICIES,
    World,
    problem,
    sqlite_world_and_client,
)
from fastapi.testclient import TestClient

from deidkit import OUTPUT_NAME
from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes

V1 = "/api/v1"
LEEDS = (DOCS_POLICIES / "leeds.yaml").read_text()
OXFORD = (DOCS_POLICIES / "oxford.yaml").read_text()
BROKEN = "version: 1\nsite: {name: Broken\nallowed_options: []\n"


def _run(world: World, client: TestClient, job: dict[str, Any], user: str = "owner"
         ) -> dict[str, Any]:
    assert job["state"] == "queued"
    assert world.runtime.jobs.run_pending() == 1
    response = client.get(f"{V1}/jobs/{job['id']}", headers=world.headers(user))
    assert response.status_code == 200, response.text
    ended: dict[str, Any] = response.json()
    assert ended["state"] == "succeeded", ended
    return ended


def _dicom(n: int) -> bytes:
    spec = SeriesSpec(modality="CT", slices=1, rows=8, columns=8)
    return to_bytes(next(iter(make_study(SyntheticPatient.make(2000 + n), series=[spec]))))


def _stow(parts: list[bytes]) -> tuple[bytes, dict[str, str]]:
    boundary = uuid.uuid4().hex
    body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                    + part + b"\r\n" for part in parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f'multipart/related; type="application/dicom"; '
                                  f"boundary={boundary}"}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, TestClient]]:
    """One SQLite world for the refusals (which change nothing) and a new project."""
    with sqlite_world_and_client(tmp_path_factory.mktemp("release")) as shared:
        yield shared


def _unchanged(world: World) -> tuple[int, int, bool]:
    """Jobs, the research project's instances, whether a manifest was written."""
    archive = world.runtime.archive
    return (len(world.runtime.jobs.list()), archive.project_summary("lab")["counts"]["instances"],
            (archive.settings.data / "releases").exists())


# -- shares ------------------------------------------------------------------------------------
def test_share_into_the_research_project_as_a_job(world: World, client: TestClient) -> None:
    owner = world.headers("owner")
    archive = world.runtime.archive
    originals = {s["patient_id"] for s in archive.studies("alpha")}
    started = client.post(f"{V1}/projects/alpha/shares", json={"to": "lab"}, headers=owner)
    assert started.status_code == 202, started.text
    job = started.json()
    assert job["kind"] == "share" and job["project_id"] == "alpha"
    assert job["params"]["target"] == "lab" and job["params"]["policy"] is None
    ended = _run(world, client, job)
    result = ended["result"]
    assert result["written"] == result["files"] == 5 and result["ok"] is True
    assert result["patients"] == 2 and result["to"] == "lab"
    assert ended["progress_done"] == ended["progress_total"] == 5
    assert (archive.settings.data / "releases" / f"{job['id']}.json").exists()
    # The research project lists the studies under pseudonyms.
    listed = client.get(f"{V1}/projects/lab/studies", headers=owner)
    assert listed.status_code == 200, listed.text
    studies = listed.json()["items"]
    patients = {s["patient_id"] for s in studies}
    assert len(studies) == 2 and not patients & originals
    assert all(p.startswith("IB") and len(p) == 18 for p in patients)
    project = client.get(f"{V1}/projects/lab", headers=owner).json()
    assert project["zone"] == "research" and project["counts"]["instances"] == 5
    # Shared again: the same key, the same objects, nothing new.
    again = client.post(f"{V1}/projects/alpha/shares", json={"to": "lab"}, headers=owner)
    assert _run(world, client, again.json())["result"]["unchanged"] == 5
    assert client.get(f"{V1}/projects/lab", headers=owner).json()["counts"]["instances"] == 5


def test_a_research_project_receives_only_shares(shared: tuple[World, TestClient]) -> None:
    world, client = shared
    owner = world.headers("owner")
    before = _unchanged(world)
    upload = client.post(f"{V1}/projects/lab/instances", content=_dicom(1),
                         headers={**owner, "Content-Type": "application/dicom"})
    assert upload.status_code == 403
    assert "research project" in problem(upload)["detail"]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("a.dcm", _dicom(2))
    zipped = client.post(f"{V1}/projects/lab/instances", content=buffer.getvalue(),
                         headers={**owner, "Content-Type": "application/zip"})
    assert zipped.status_code == 403 and "research project" in problem(zipped)["detail"]
    body, headers = _stow([_dicom(3)])
    stowed = client.post("/projects/lab/dicomweb/studies", content=body,
                         headers={**owner, **headers})
    assert stowed.status_code == 403, stowed.text
    # An import job is refused too, before its upload is read: none waits in the spool.
    imported = client.post(f"{V1}/projects/lab/imports", content=buffer.getvalue(),
                           headers={**owner, "Content-Type": "application/zip"})
    assert imported.status_code == 403 and "research project" in problem(imported)["detail"]
    assert [p for p in world.runtime.archive.spool_dir().iterdir() if p.is_file()] == []
    assert _unchanged(world) == before


def test_shares_that_cannot_be_are_refused_before_a_job(shared: tuple[World, TestClient]
                                                        ) -> None:
    world, client = shared
    admin, owner = world.headers("admin"), world.headers("owner")
    before = _unchanged(world)
    into_beta = client.post(f"{V1}/projects/alpha/shares", json={"to": "beta"}, headers=admin)
    assert into_beta.status_code == 400
    assert "not a research project" in problem(into_beta)["detail"]
    from_lab = client.post(f"{V1}/projects/lab/shares", json={"to": "lab"}, headers=owner)
    assert from_lab.status_code == 400 and "is a research project" in problem(from_lab)["detail"]
    nowhere = client.post(f"{V1}/projects/alpha/shares", json={"to": "nowhere"}, headers=owner)
    assert nowhere.status_code == 404
    # A study of another project: refused at once, not by a job that fails later.
    other = client.post(f"{V1}/projects/alpha/shares",
                        json={"to": "lab", "study_ids": [world.ids["beta_study"]]},
                        headers=owner)
    assert other.status_code == 404 and "No study" in problem(other)["detail"]
    assert _unchanged(world) == before


def test_releases_that_cannot_be_are_problems_naming_why(shared: tuple[World, TestClient]
                                                         ) -> None:
    world, client = shared
    owner = world.headers("owner")
    before = _unchanged(world)
    cases = [
        ("alpha", {"policy": BROKEN}, 400, "the policy:3: not valid YAML"),
        ("alpha", {"policy": LEEDS, "options": ["retain_uids"]}, 400,
         "does not allow retain_uids"),
        ("alpha", {"options": ["retain_everything"]}, 400, "unknown option"),
        ("lab", {"options": ["clean_descriptors"]}, 400, "as stored"),
        ("lab", {"policy": LEEDS}, 400, "as stored"),
        ("alpha", {"study_ids": [world.ids["beta_study"]]}, 404, "No study"),
        ("alpha", {"destination": "ae:nobody"}, 404, "nobody"),
    ]
    for project, body, status, words in cases:
        response = client.post(f"{V1}/projects/{project}/releases", json=body, headers=owner)
        assert response.status_code == status, (body, response.text)
        assert words in problem(response)["detail"], (words, response.text)
    assert _unchanged(world) == before


def test_create_a_research_project_from_sites_policies(shared: tuple[World, TestClient]
                                                       ) -> None:
    world, client = shared
    admin = world.headers("admin")
    made = client.post(f"{V1}/projects", headers=admin, json={
        "id": "trial", "zone": "research", "policies": [LEEDS, OXFORD],
        "options": ["retain_long_modified_dates"]})
    assert made.status_code == 201, made.text
    assert made.json()["zone"] == "research"
    assert client.get(f"{V1}/projects/trial", headers=admin).json()["zone"] == "research"
    row = world.runtime.archive.ensure_project("trial")
    assert "strictest merge of site 1, site 2" in row["policy"]
    assert json.loads(row["deid_options"]) == ["retain_long_modified_dates"]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"id": "p1", "policies": [LEEDS]}, "Only a research project"),
        ({"id": "p2", "zone": "identifiable", "options": ["clean_descriptors"]},
         "Only a research project"),
        ({"id": "p3", "zone": "research"}, "needs its sites' policies"),
        ({"id": "p4", "zone": "research", "policies": [LEEDS, BROKEN]},
         "site 2:3: not valid YAML"),
        ({"id": "p5", "zone": "research", "policies": [LEEDS], "options": ["retain_uids"]},
         "does not allow retain_uids"),
    ]
    for body, words in cases:
        response = client.post(f"{V1}/projects", headers=admin, json=body)
        assert response.status_code == 400, (body, response.text)
        assert words in problem(response)["detail"], (words, response.text)
    assert client.post(f"{V1}/projects", headers=admin,
                       json={"id": "p6", "zone": "public"}).status_code == 422
    assert not {"p1", "p2", "p3", "p4", "p5", "p6"} & {
        p["id"] for p in world.runtime.archive.projects()}


# -- releases ----------------------------------------------------------------------------------
def _download(world: World, client: TestClient, job: dict[str, Any]
              ) -> tuple[list[pydicom.Dataset], dict[str, Any]]:
    got = client.get(f"{V1}/jobs/{job['id']}/result", headers=world.headers("owner"))
    assert got.status_code == 200, got.text
    assert got.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(got.content)) as zf:
        names = zf.namelist()
        dicoms = [n for n in names if n.endswith(".dcm")]
        assert sorted(set(names) - set(dicoms)) == [f"manifest-{job['id']}.json"]
        assert all(OUTPUT_NAME.match(n) for n in dicoms)
        datasets = [pydicom.dcmread(io.BytesIO(zf.read(n))) for n in dicoms]
        manifest = json.loads(zf.read(f"manifest-{job['id']}.json"))
    return datasets, manifest


def test_release_an_identifiable_project_to_a_download(sqlite_world: World,
                                                       sqlite_client: TestClient) -> None:
    world, client = sqlite_world, sqlite_client
    archive = world.runtime.archive
    originals = {s["patient_id"] for s in archive.studies("alpha")}
    started = client.post(f"{V1}/projects/alpha/releases",
                          json={"destination": "download", "policy": LEEDS,
                                "options": ["clean_descriptors"]},
                          headers=world.headers("owner"))
    assert started.status_code == 202, started.text
    job = started.json()
    assert job["kind"] == "release"
    ended = _run(world, client, job)
    assert ended["result"]["file"] == f"{job['id']}.zip"
    assert ended["result"]["to"] == {"zip": "download"}
    assert ended["result"]["written"] == 5
    datasets, manifest = _download(world, client, job)
    assert len(datasets) == 5
    for ds in datasets:
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.PatientID.startswith("IB") and ds.PatientID not in originals
        assert "113105" in [c.CodeValue for c in ds.DeidentificationMethodCodeSequence]
    assert manifest["deidentified_here"] is True and manifest["from_project"] == "alpha"
    assert manifest["policy"]["site"] == "Leeds Teaching Hospitals NHS Trust"
    assert manifest["profile"]["options"] == ["clean_descriptors"]
    assert (archive.settings.data / "releases" / f"{job['id']}.json").exists()
    exports = archive.settings.data / "exports"
    assert [p.name for p in exports.iterdir()] == [f"{job['id']}.zip"]  # no partial left


def test_share_some_studies_then_all_then_release_as_stored(sqlite_world: World,
                                                            sqlite_client: TestClient) -> None:
    world, client = sqlite_world, sqlite_client
    owner = world.headers("owner")
    archive = world.runtime.archive
    study = archive.get("study", world.ids["study"])
    some = client.post(f"{V1}/projects/alpha/shares",
                       json={"to": "lab", "study_ids": [study["id"]]}, headers=owner)
    assert some.status_code == 202, some.text
    assert _run(world, client, some.json())["result"]["written"] == study["num_instances"]
    assert len(archive.studies("lab")) == 1
    every = client.post(f"{V1}/projects/alpha/shares", json={"to": "lab"}, headers=owner)
    result = _run(world, client, every.json())["result"]
    assert (result["written"], result["unchanged"]) == (5, study["num_instances"])
    started = client.post(f"{V1}/projects/lab/releases", json={}, headers=owner)
    assert started.status_code == 202, started.text
    _run(world, client, started.json())
    datasets, manifest = _download(world, client, started.json())
    stored = {i["sop_instance_uid"] for st in archive.studies("lab")
              for se in archive.series(st["id"]) for i in archive.instances(se["id"])}
    assert {ds.SOPInstanceUID for ds in datasets} == stored and len(stored) == 5
    assert manifest["deidentified_here"] is False and manifest["key_fingerprint"] is None
