"""Jobs: imports from the spool, exports to a zip, failures, cancelling, surviving a restart;
and once over HTTP (POST imports/exports, poll the job, download the result)."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
from imagebank.domain.errors import ConflictError, NotFoundError
from imagebank.index import jobs as jobs_sql
from imagebank.services.archive import Archive
from imagebank.services.jobs import TERMINAL, Cancelled, JobContext, Jobs
from imagebank.services.runtime import Runtime

GARBAGE = b"not a DICOM file\n" * 10


def dicom_files(patient: int, slices: int, modality: str = "CT") -> list[bytes]:
    spec = SeriesSpec(modality=modality, slices=slices, rows=32, columns=32)
    return [to_bytes(ds) for ds in make_study(SyntheticPatient.make(patient), series=[spec])]


def zip_of(files: list[bytes], *, bad: int = 0) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i, data in enumerate(files):
            archive.writestr(f"in/{i:03d}.dcm", data)
        for i in range(bad):
            archive.writestr(f"in/bad-{i}.dcm", GARBAGE + bytes([i]))
    return buffer.getvalue()


def queue_import(jobs: Jobs, project: str, body: bytes, created_by: str | None = None
                 ) -> str:
    """As the API does: the upload goes to the spool first, then the job is queued."""
    job_id = jobs.new_id()
    jobs.spool_path(job_id).write_bytes(body)
    job = jobs.submit("import", project, {}, created_by, job_id)
    assert job["state"] == "queued" and job["id"] == job_id
    return job_id


def instance_count(archive: Archive, project: str = "alpha") -> int:
    return int(archive.project_summary(project)["counts"]["instances"])


def poll(read: Callable[[], dict[str, Any]], timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = read()
        if job["state"] in TERMINAL or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


@pytest.fixture
def runtime(archive: Archive) -> Runtime:
    archive.create_project("alpha")
    return Runtime.for_archive(archive)


@pytest.fixture
def sqlite_runtime(sqlite_archive: Archive) -> Runtime:
    sqlite_archive.create_project("alpha")
    return Runtime.for_archive(sqlite_archive)


# -- imports ----------------------------------------------------------------------------------
def test_an_import_job_ingests_the_spooled_zip(runtime: Runtime,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = runtime.jobs
    written: list[dict[str, Any]] = []
    update = jobs_sql.update_job

    def recording(session: Any, job_id: str, **values: Any) -> bool:
        written.append(values)
        return update(session, job_id, **values)

    monkeypatch.setattr(jobs_sql, "update_job", recording)
    job_id = queue_import(jobs, "alpha", zip_of(dicom_files(30, 4), bad=1))
    assert jobs.get(job_id)["progress_done"] == 0

    assert jobs.run_pending() == 1
    job = jobs.get(job_id)
    assert job["state"] == "succeeded", job["error"]
    assert job["error"] is None
    assert job["result"]["stored"] == 4
    assert job["result"]["quarantined"] == 1
    assert job["result"]["reasons"] == {"not_dicom": 1}
    assert (job["progress_done"], job["progress_total"]) == (5, 5)
    assert job["attempts"] == 1
    assert job["started_at"] <= job["finished_at"]
    assert "spool" not in job["params"]
    assert not jobs.spool_path(job_id).exists()
    assert instance_count(runtime.archive) == 4
    progress = [w["progress_done"] for w in written if "progress_done" in w]
    assert len(progress) >= 2 and progress == sorted(progress)
    assert progress[0] == 0 and progress[-1] == 5
    assert jobs.run_pending() == 0  # nothing left


def test_an_import_whose_upload_is_gone_fails_with_a_reason(
        sqlite_runtime: Runtime) -> None:
    jobs = sqlite_runtime.jobs
    job_id = queue_import(jobs, "alpha", zip_of(dicom_files(31, 1)))
    jobs.spool_path(job_id).unlink()
    assert jobs.run_pending() == 1
    job = jobs.get(job_id)
    assert job["state"] == "failed"
    assert "spool" in job["error"]
    assert job["result"] is None


# -- exports ----------------------------------------------------------------------------------
def test_an_export_job_writes_a_zip_of_the_objects(sqlite_runtime: Runtime,
                                                   corpus: Path) -> None:
    archive, jobs = sqlite_runtime.archive, sqlite_runtime.jobs
    archive.ingest([corpus], "alpha", workers=1)
    studies = archive.studies("alpha")
    assert len(studies) == 4
    chosen = [studies[0]["id"], studies[2]["id"]]
    job = jobs.submit("export", "alpha", {"level": "study", "ids": chosen}, None)
    with pytest.raises(ConflictError):
        jobs.result_path(job)  # not run yet
    assert jobs.run_pending() == 1
    job = jobs.get(job["id"])
    assert job["state"] == "succeeded", job["error"]
    path = jobs.result_path(job)
    expected = {}
    for study in chosen:
        for series in archive.series(study):
            for instance in archive.instances(series["id"]):
                expected[f"{study}/{series['id']}/{instance['id']}.dcm"] = instance["id"]
    assert job["result"]["instances"] == len(expected) == 8
    assert job["result"]["size_bytes"] == path.stat().st_size
    assert (job["progress_done"], job["progress_total"]) == (8, 8)
    with zipfile.ZipFile(path) as zipped:
        assert zipped.testzip() is None
        assert sorted(zipped.namelist()) == sorted(expected)
        for name, instance_id in expected.items():
            assert zipped.read(name) == archive.instance_bytes(instance_id)
    assert not list(path.parent.glob("*.partial"))

    series_id = archive.series(chosen[1])[0]["id"]
    one = jobs.submit("export", "alpha", {"level": "series", "ids": [series_id]}, None)
    jobs.run_pending()
    with zipfile.ZipFile(jobs.result_path(jobs.get(one["id"]))) as zipped:
        assert {n.split("/")[1] for n in zipped.namelist()} == {series_id}
        assert len(zipped.namelist()) == 4

    path.unlink()
    with pytest.raises(NotFoundError):
        jobs.result_path(job)


# -- failures and cancelling ------------------------------------------------------------------
def test_a_job_of_unknown_kind_fails_clearly(sqlite_runtime: Runtime) -> None:
    jobs = sqlite_runtime.jobs
    job = jobs.submit("frobnicate", "alpha", {}, None)
    assert jobs.run_pending() == 1
    job = jobs.get(job["id"])
    assert job["state"] == "failed"
    assert "frobnicate" in job["error"]
    assert job["finished_at"] is not None and job["result"] is None


def test_an_unexpected_error_fails_the_job_without_its_details(sqlite_runtime: Runtime) -> None:
    jobs = sqlite_runtime.jobs

    def explode(context: JobContext) -> dict[str, Any]:
        raise RuntimeError("details that may name SYN0000001")

    jobs.handlers["explode"] = explode
    failing = jobs.submit("explode", "alpha", {}, None)
    after = jobs.submit("frobnicate", "alpha", {}, None)
    assert jobs.run_pending() == 2  # the runner goes on after a failure
    job = jobs.get(failing["id"])
    assert job["state"] == "failed"
    assert "RuntimeError" in job["error"] and "SYN" not in job["error"]
    assert jobs.get(after["id"])["state"] == "failed"


def test_cancelling(sqlite_runtime: Runtime) -> None:
    jobs = sqlite_runtime.jobs
    queued = jobs.submit("export", "alpha", {"level": "study", "ids": []}, None)
    cancelled = jobs.cancel(queued["id"])
    assert cancelled["state"] == "cancelled" and cancelled["finished_at"] is not None
    with pytest.raises(ConflictError):
        jobs.cancel(queued["id"])
    assert jobs.run_pending() == 0  # a cancelled job is never run
    assert jobs.get(queued["id"])["state"] == "cancelled"
    with pytest.raises(NotFoundError):
        jobs.cancel(jobs.new_id())

    seen: list[str] = []

    def cancelled_while_running(context: JobContext) -> dict[str, Any]:
        seen.append(jobs.get(context.job["id"])["state"])
        jobs.cancel(context.job["id"])
        try:
            context.progress(1, 10, "working", force=True)
        except Cancelled:
            seen.append("stopped")
            raise
        return {"finished": True}

    jobs.handlers["long"] = cancelled_while_running
    running = jobs.submit("long", "alpha", {}, None)
    assert jobs.run_pending() == 1
    assert seen == ["running", "stopped"]
    job = jobs.get(running["id"])
    assert job["state"] == "cancelled" and job["result"] is None

    done = jobs.submit("frobnicate", "alpha", {}, None)
    jobs.run_pending()
    with pytest.raises(ConflictError):
        jobs.cancel(done["id"])


# -- a restart --------------------------------------------------------------------------------
def test_a_job_left_running_by_a_dead_server_is_requeued_and_completes(
        runtime: Runtime) -> None:
    archive, jobs = runtime.archive, runtime.jobs
    files = dicom_files(32, 4)
    job_id = queue_import(jobs, "alpha", zip_of(files))
    # The dead server had claimed the job and stored half of the files.
    with archive.engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET state = 'running', attempts = 1 WHERE id = :id"),
                     {"id": job_id})
    archive.ingest_bytes([(data, "earlier") for data in files[:2]], "alpha")
    assert jobs.run_pending() == 0  # a running job is not claimed twice

    jobs.start()  # the real runner thread; it requeues first
    try:
        job = poll(lambda: jobs.get(job_id))
    finally:
        jobs.stop()
    assert job["state"] == "succeeded", job["error"]
    assert job["attempts"] == 2
    assert (job["result"]["stored"], job["result"]["duplicates"]) == (2, 2)
    assert instance_count(archive) == 4
    assert not jobs.spool_path(job_id).exists()

    # Requeueing touches running jobs only.
    with archive.engine.begin() as conn:
        states = dict(conn.execute(text("SELECT id, state FROM jobs")).all())
    assert states == {job_id: "succeeded"}
    assert jobs.requeue_interrupted() == 0


# -- over HTTP --------------------------------------------------------------------------------
@pytest.fixture
def http(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, TestClient]]:
    """The API world (tests/api/apiworld.py) with the job runner on."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "api"))
    import apiworld

    archive = Archive.open(tmp_path / "data", workers=1)
    try:
        world = apiworld.build_world(Runtime.for_archive(archive), tmp_path)
        with apiworld.make_client(world, background=True) as client:
            yield world, client
    finally:
        archive.close()


def test_imports_and_exports_over_http(http: tuple[Any, TestClient]) -> None:
    world, client = http
    h = world.headers
    alpha = "/api/v1/projects/alpha"
    body = zip_of(dicom_files(33, 3), bad=1)

    denied = client.post(f"{alpha}/imports", content=body,
                         headers={**h("viewer"), "Content-Type": "application/zip"})
    assert denied.status_code == 403
    started = client.post(f"{alpha}/imports", content=body,
                          headers={**h("member"), "Content-Type": "application/zip"})
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]
    assert started.json()["kind"] == "import" and started.json()["state"] in (
        "queued", "running", "succeeded")

    job = poll(lambda: client.get(f"/api/v1/jobs/{job_id}", headers=h("member")).json())
    assert job["state"] == "succeeded", job
    assert (job["result"]["stored"], job["result"]["quarantined"]) == (3, 1)
    assert world.runtime.archive.project_summary("alpha")["counts"]["instances"] == 5 + 3
    for user, status in (("outsider", 404), ("viewer", 404), ("collaborator", 404),
                         ("owner", 200), ("admin", 200)):
        assert client.get(f"/api/v1/jobs/{job_id}", headers=h(user)).status_code == status, user
    assert job_id in {j["id"] for j in client.get("/api/v1/jobs", headers=h("member")).json()}
    assert client.get("/api/v1/jobs", headers=h("outsider")).json() == []

    study = world.ids["study"]
    refused = client.post(f"{alpha}/exports", json={"level": "study",
                                                    "ids": [world.ids["beta_study"]]},
                          headers=h("collaborator"))
    assert refused.status_code == 400
    started = client.post(f"{alpha}/exports", json={"level": "study", "ids": [study]},
                          headers=h("collaborator"))
    assert started.status_code == 202, started.text
    export_id = started.json()["id"]
    job = poll(lambda: client.get(f"/api/v1/jobs/{export_id}",
                                  headers=h("collaborator")).json())
    assert job["state"] == "succeeded", job
    result = client.get(f"/api/v1/jobs/{export_id}/result", headers=h("collaborator"))
    assert result.status_code == 200
    assert result.headers["content-type"] == "application/zip"
    archive = world.runtime.archive
    with zipfile.ZipFile(io.BytesIO(result.content)) as zipped:
        names = zipped.namelist()
        rows = archive.instance_objects("study", [study])
        assert sorted(names) == sorted(f"{study}/{r['series_id']}/{r['id']}.dcm" for r in rows)
        for r in rows:
            assert zipped.read(f"{study}/{r['series_id']}/{r['id']}.dcm") == archive.store.get(
                r["object_key"])
    assert client.get(f"/api/v1/jobs/{export_id}/result",
                      headers=h("outsider")).status_code == 404
    assert client.get(f"/api/v1/jobs/{job_id}/result",
                      headers=h("member")).status_code == 409  # an import has no file
