"""``POST /projects/{p}/clinical-imports`` (decision 0025): FHIR files uploaded, staged in the
data folder and imported by a job with progress; any problem fails the job with a summary,
the rest being imported; the staged files are gone when the job ends."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from apiworld import World, make_client, problem
from fastapi.testclient import TestClient

from imagebank.ingest.fhir import FhirReader
from testkit import SHARED_DATA

V1 = "/api/v1"
BUNDLES = sorted((SHARED_DATA / "synthea-fhir-r4").glob("*.json"))
NDJSON = SHARED_DATA / "synthea-bulk-ndjson-10"


def _multipart(parts: list[tuple[str, bytes]]) -> tuple[bytes, dict[str, str]]:
    boundary = uuid.uuid4().hex
    body = b"".join(f"--{boundary}\r\nContent-Type: {media}\r\n\r\n".encode() + content
                    + b"\r\n" for media, content in parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/related; boundary={boundary}"}


def _expected(paths: list[Path]) -> tuple[Counter[str], int]:
    """Facts by kind and resources as the reader counts them in ``paths``."""
    reader = FhirReader()
    for _ in reader.records(paths):
        pass
    return Counter({str(k): n for k, n in reader.facts.items()}), sum(reader.resources.values())


def _wait(client: TestClient, world: World, job_id: str, user: str = "member",
          timeout: float = 60.0) -> dict[str, Any]:
    """Poll the job until it ends (the server's runner runs it)."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"{V1}/jobs/{job_id}",
                                         headers=world.headers(user)).json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def test_bundles_and_ndjson_are_imported_by_a_job_with_progress(sqlite_world: World) -> None:
    world = sqlite_world
    archive = world.runtime.archive
    # NDJSON parts in an order where the facts come before their patients: staging names
    # the Patient file so that the reader takes it first.
    ndjson = [NDJSON / "Condition.000.ndjson", NDJSON / "Encounter.000.ndjson",
              NDJSON / "Patient.000.ndjson", NDJSON / "Organization.000.ndjson"]
    parts = ([("application/fhir+json", p.read_bytes()) for p in BUNDLES[:2]]
             + [("application/fhir+ndjson", p.read_bytes()) for p in ndjson])
    body, headers = _multipart(parts)
    by_kind, resources = _expected([*BUNDLES[:2], *ndjson])
    with make_client(world, background=True) as client:
        started = client.post(f"{V1}/projects/alpha/clinical-imports",
                              headers={**world.headers("member"), **headers}, content=body)
        assert started.status_code == 202, started.text
        job = started.json()
        assert job["kind"] == "clinical_import" and job["project_id"] == "alpha"
        assert job["params"] == {"strict": False, "files": 6}
        ended = _wait(client, world, job["id"])
    assert ended["state"] == "succeeded", ended
    result = ended["result"]
    assert result["resources"] == resources == ended["progress_done"] == ended["progress_total"]
    assert result["facts"] == result["added"] == sum(by_kind.values()) > 1500
    assert result["patients"] == result["new_subjects"] == 15  # 2 bundles, 13 NDJSON patients
    assert result["problems"] == {} and result["problem_list"] == []
    stats = archive.stats()
    assert stats["clinical_facts_by_kind"] == dict(by_kind) == result["facts_by_kind"]
    assert stats["clinical_facts"] == result["facts"]
    # The staged files are gone; the import is audited under its job.
    assert list(archive.spool_dir().iterdir()) == []
    [event] = [e for e in world.runtime.audit.events(project_id="alpha", limit=1000)
               if e["action"] == "clinical_import"]
    assert event["actor"] == "member" and event["object_id"] == job["id"]
    assert event["status"] == 202 and json.loads(event["detail"])["files"] == 6


def test_one_ndjson_body_and_again_adds_nothing(sqlite_world: World,
                                                sqlite_client: TestClient) -> None:
    world, client = sqlite_world, sqlite_client
    patients = (NDJSON / "Patient.000.ndjson").read_bytes()
    headers = {**world.headers("owner"), "Content-Type": "application/fhir+ndjson"}
    for round_no in range(2):
        started = client.post(f"{V1}/projects/alpha/clinical-imports", headers=headers,
                              content=patients, params={"strict": "true"})
        assert started.status_code == 202, started.text
        assert started.json()["params"]["strict"] is True
        assert world.runtime.jobs.run_pending() == 1
        ended = _wait(client, world, started.json()["id"], user="owner")
        assert ended["state"] == "succeeded", ended
        assert ended["result"]["patients"] == 13 and ended["result"]["facts"] == 0
        assert ended["result"]["new_subjects"] == (13 if round_no == 0 else 0)
    assert len(world.runtime.archive.subjects("alpha", limit=1000)) == 13 + 2  # + the images'


def test_a_bad_file_fails_the_job_with_a_summary_and_the_rest_is_imported(
        sqlite_world: World, sqlite_client: TestClient) -> None:
    world, client = sqlite_world, sqlite_client
    bundle = BUNDLES[0].read_bytes()
    body, headers = _multipart([("application/fhir+json", bundle),
                                ("application/fhir+json", b'{"resourceType": "Bundle", "ent'),
                                ("application/fhir+ndjson", b'{"resourceType": "Condition"}\n'
                                 b"not json at all\n")])
    started = client.post(f"{V1}/projects/alpha/clinical-imports",
                          headers={**world.headers("member"), **headers}, content=body)
    assert started.status_code == 202, started.text
    folder = world.runtime.jobs.clinical_spool(started.json()["id"])
    assert sorted(p.name for p in folder.iterdir()) == ["0001.json", "0002.json",
                                                         "0003.ndjson"]
    assert world.runtime.jobs.run_pending() == 1
    ended = _wait(client, world, started.json()["id"])
    assert ended["state"] == "failed"
    error = ended["error"]
    assert error.startswith("3 problems in the upload (invalid 1, not_json 2); first: 0002.json: "
                            "the file is not JSON"), error
    assert "\n" not in error and "Traceback" not in error and str(folder) not in error
    result = ended["result"]
    assert result["problems"] == {"invalid": 1, "not_json": 2}
    assert [p["source"] for p in result["problem_list"]] == ["0002.json", "0003.ndjson:1",
                                                             "0003.ndjson:2"]
    by_kind, _ = _expected([BUNDLES[0]])
    assert result["facts"] == sum(by_kind.values()) > 50
    assert world.runtime.archive.stats()["clinical_facts_by_kind"] == dict(by_kind)
    assert not folder.exists()


def test_who_may_import_and_what_is_refused(sqlite_world: World,
                                            sqlite_client: TestClient) -> None:
    world, client = sqlite_world, sqlite_client
    bundle = {"Content-Type": "application/fhir+json"}
    url = f"{V1}/projects/alpha/clinical-imports"
    content = BUNDLES[0].read_bytes()
    viewer = client.post(url, headers={**world.headers("viewer"), **bundle}, content=content)
    assert viewer.status_code == 403 and problem(viewer)["code"]
    collaborator = client.post(url, headers={**world.headers("collaborator"), **bundle},
                               content=content)
    assert collaborator.status_code == 403
    research = client.post(f"{V1}/projects/lab/clinical-imports",
                           headers={**world.headers("owner"), **bundle}, content=content)
    assert research.status_code == 403
    assert "research project" in problem(research)["detail"]
    dicom = client.post(url, headers={**world.headers("member"),
                                      "Content-Type": "application/dicom"}, content=content)
    assert dicom.status_code == 415 and "application/fhir+json" in problem(dicom)["detail"]
    body, headers = _multipart([("application/fhir+json", content), ("text/csv", b"a,b\n")])
    mixed = client.post(url, headers={**world.headers("member"), **headers}, content=body)
    assert mixed.status_code == 415 and "Part 2" in problem(mixed)["detail"]
    empty = client.post(url, headers={**world.headers("member"), **bundle}, content=b"")
    assert empty.status_code == 400
    # Nothing refused became a job or left a file behind.
    assert world.runtime.jobs.list() == []
    assert list(world.runtime.archive.spool_dir().iterdir()) == []


def test_cancelling_a_queued_import_removes_its_files(sqlite_world: World,
                                                      sqlite_client: TestClient) -> None:
    world, client = sqlite_world, sqlite_client
    body, headers = _multipart([
        ("application/fhir+ndjson", (NDJSON / "Condition.000.ndjson").read_bytes()),
        ("application/fhir+ndjson", (NDJSON / "Patient.000.ndjson").read_bytes()),
        ("application/fhir+json", BUNDLES[1].read_bytes())])
    started = client.post(f"{V1}/projects/alpha/clinical-imports",
                          headers={**world.headers("member"), **headers}, content=body)
    job_id = started.json()["id"]
    folder = world.runtime.jobs.clinical_spool(job_id)
    # Named by their place, a Patient file as the reader takes it first; no client name.
    assert sorted(p.name for p in folder.iterdir()) == ["0001.ndjson", "0003.json",
                                                        "Patient.0002.ndjson"]
    cancelled = client.delete(f"{V1}/jobs/{job_id}", headers=world.headers("member"))
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert not folder.exists()
    assert world.runtime.jobs.run_pending() == 0
    assert world.runtime.archive.stats()["clinical_facts"] == 0
