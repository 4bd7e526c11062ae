"""Clinical tables through the API (decision 0026): ``POST /shares`` and ``/releases`` with
``clinical`` and ``subject_ids``; the research project's tables are its resources, a
download's are in its zip, and the tables' patient is the images' pseudonym."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pydicom
from apiworld import DOCS_POLICIES, World, problem
from fastapi.testclient import TestClient

from testkit import add_clinical_patient, nhs_numbers

V1 = "/api/v1"
LEEDS = (DOCS_POLICIES / "leeds.yaml").read_text()


def _run(world: World, client: TestClient, job: dict[str, Any]) -> dict[str, Any]:
    assert world.runtime.jobs.run_pending() == 1
    ended = client.get(f"{V1}/jobs/{job['id']}", headers=world.headers("owner")).json()
    assert ended["state"] == "succeeded", ended
    return dict(ended["result"])


def _patient(world: World, tmp_path: Path) -> tuple[str, str]:
    """A subject of alpha with images and FHIR facts: (subject ID, NHS number)."""
    [nhs] = nhs_numbers(1)
    archive = world.runtime.archive
    add_clinical_patient(archive, tmp_path / "clinical", "alpha", nhs, patient=7)
    [subject] = [s for s in archive.subjects("alpha") if s["patient_id"] == nhs]
    return str(subject["id"]), nhs


def test_a_share_with_clinical_tables_for_chosen_subjects(world: World, client: TestClient,
                                                          tmp_path: Path) -> None:
    owner = world.headers("owner")
    subject, nhs = _patient(world, tmp_path)
    started = client.post(f"{V1}/projects/alpha/shares", headers=owner,
                          json={"to": "lab", "clinical": True, "subject_ids": [subject]})
    assert started.status_code == 202, started.text
    job = started.json()
    assert job["params"]["clinical"] is True and job["params"]["subject_ids"] == [subject]
    result = _run(world, client, job)
    assert result["ok"] and result["patients"] == 1 and result["written"] == 4
    assert result["clinical"]["patients"] == 1 and result["clinical"]["facts"] > 50
    [study] = client.get(f"{V1}/projects/lab/studies", headers=owner).json()["items"]
    listed = client.get(f"{V1}/projects/lab/resources", params={"level": "project"},
                        headers=owner)
    assert listed.status_code == 200, listed.text
    tables = {r["name"].split("-", 2)[2]: r for r in listed.json()}
    assert sorted(tables) == ["facts.csv", "facts.parquet", "subjects.csv",
                              "subjects.parquet"]
    assert tables["facts.parquet"]["content_type"] == "application/vnd.apache.parquet"
    got = client.get(f"{V1}/projects/lab/resources/{tables['facts.csv']['id']}/file",
                     headers=owner)
    assert got.status_code == 200
    rows = list(csv.DictReader(io.StringIO(got.content.decode("utf-8"))))
    assert len(rows) == result["clinical"]["facts"]
    assert {r["patient"] for r in rows} == {study["patient_id"]}
    # The research project's policy keeps no dates (no option): none leave.
    assert all(r["start"] == r["end"] == "" for r in rows)
    assert nhs not in got.text


def test_a_download_release_carries_the_tables(world: World, client: TestClient,
                                               tmp_path: Path) -> None:
    owner = world.headers("owner")
    subject, nhs = _patient(world, tmp_path)
    started = client.post(f"{V1}/projects/alpha/releases", headers=owner, json={
        "destination": "download", "policy": LEEDS, "clinical": True,
        "options": ["retain_long_modified_dates"], "subject_ids": [subject]})
    assert started.status_code == 202, started.text
    job = started.json()
    result = _run(world, client, job)
    assert result["ok"] and result["written"] == 4
    got = client.get(f"{V1}/jobs/{job['id']}/result", headers=owner)
    assert got.status_code == 200
    with zipfile.ZipFile(io.BytesIO(got.content)) as zf:
        names = set(zf.namelist())
        assert {n for n in names if n.startswith("clinical/")} == {
            "clinical/facts.csv", "clinical/facts.parquet", "clinical/subjects.csv",
            "clinical/subjects.parquet"}
        facts = pq.read_table(io.BytesIO(zf.read("clinical/facts.parquet"))).to_pylist()
        dicom = pydicom.dcmread(io.BytesIO(zf.read(next(n for n in names
                                                         if n.endswith(".dcm")))))
        manifest = json.loads(zf.read(f"manifest-{job['id']}.json"))
        assert nhs.encode() not in zf.read("clinical/facts.csv")
    assert {r["patient"] for r in facts} == {dicom.PatientID}
    assert all(r["start"] is not None for r in facts if r["kind"] == "condition")
    assert [t["path"] for t in manifest["clinical"]["tables"]] == [
        "clinical/facts.csv", "clinical/facts.parquet", "clinical/subjects.csv",
        "clinical/subjects.parquet"]


def test_an_unknown_subject_is_refused_before_a_job_exists(world: World,
                                                           client: TestClient) -> None:
    jobs = len(world.runtime.jobs.list())
    refused = client.post(f"{V1}/projects/alpha/shares", headers=world.headers("owner"),
                          json={"to": "lab", "clinical": True, "subject_ids": ["0" * 32]})
    assert refused.status_code == 404
    assert "No subject" in problem(refused)["detail"]
    # Another project's subject is not one of alpha's either.
    beta = world.ids["beta_subject"]
    refused = client.post(f"{V1}/projects/alpha/shares", headers=world.headers("owner"),
                          json={"to": "lab", "subject_ids": [beta]})
    assert refused.status_code == 404
    assert len(world.runtime.jobs.list()) == jobs
