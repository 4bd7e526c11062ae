"""Shares and exports (``services.release``): identifiable data leaves only through the
de-identification pipeline, into a research project, a folder, a zip, a DICOM node (DCMTK's
storescp) or a DICOMweb server (Orthanc with its DICOMweb plugin), on a process pool or a
real Dask cluster, with a manifest of pseudonyms only."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from deidkit import OUTPUT_NAME, PATIENTS, output_files, write_phi_folder
from imagebank.dicom.deid import residual_identifiers
from imagebank.domain.errors import InvalidInputError, PermissionDeniedError
from imagebank.services.archive import Archive
from imagebank.services.jobs import Jobs
from imagebank.services.release import ReleaseSpec, check_destination, run_release
from testkit import REPO, import_optout_list

POLICIES = REPO / "docs" / "policies"
KEY = bytes(range(32))
DCMTK_STORESCP = "/usr/bin/storescp"


def _identifiers() -> list[str]:
    """What identifies the synthetic patients (never in a released file or a manifest)."""
    values = []
    for name, patient_id, birth in PATIENTS:
        values += [patient_id, birth, *name.split("^")]
    return [*values, "Acacia Avenue", "01134960123", "FOSTERCARE", "RADIOGRAPH"]


def _world(archive: Archive, tmp_path: Path, patients: int = 2, slices: int = 3) -> list:
    files = write_phi_folder(tmp_path / "site-export", patients=patients, slices=slices)
    archive.create_project("site")
    archive.create_project("lab", zone="research",
                           policy=(POLICIES / "leeds.yaml").read_text(),
                           options=["retain_long_modified_dates"])
    summary = archive.ingest([tmp_path / "site-export"], "site", workers=1)
    assert summary.stored == len(files)
    import_optout_list(archive)
    return files


def _share(archive: Archive, job: str = "j1", **kwargs: object) -> dict:
    return run_release(archive, ReleaseSpec("share", "site", "lab"), job, workers=1,
                       **kwargs)  # type: ignore[arg-type]


def test_share_releases_every_instance_under_the_research_projects_policy(
        archive: Archive, tmp_path: Path) -> None:
    files = _world(archive, tmp_path)
    seen: list[tuple[int, int]] = []
    result = _share(archive, progress=lambda done, total, s: seen.append((done, total)))
    assert result["ok"] and result["written"] == result["files"] == len(files) == 6
    assert result["patients"] == 2 and seen[0] == (0, 6) and seen[-1] == (6, 6)
    # The research project holds de-identified copies, placed under pseudonyms.
    studies = archive.studies("lab")
    assert len(studies) == 2
    subjects = {s["patient_id"] for s in studies}
    assert all(p.startswith("IB") and len(p) == 18 for p in subjects)
    originals = {f.dataset.PatientID for f in files}
    for study in studies:
        for series in archive.series(study["id"]):
            for instance in archive.instances(series["id"]):
                ds = pydicom.dcmread(io.BytesIO(archive.instance_bytes(instance["id"])))
                assert ds.PatientIdentityRemoved == "YES"
                assert "113107" in [c.CodeValue for c in ds.DeidentificationMethodCodeSequence]
                text = str(ds)
                assert not any(v in text for v in _identifiers()), "an identifier was shared"
                assert ds.PatientID not in originals
    # A second share adds nothing: the same key gives the same bytes.
    again = _share(archive, "j2")
    assert again["written"] == again["unchanged"] == 6
    assert archive.project_summary("lab")["counts"]["instances"] == 6


def test_the_manifest_names_pseudonyms_policy_and_engine_never_an_identifier(
        archive: Archive, tmp_path: Path) -> None:
    _world(archive, tmp_path)
    result = _share(archive, "job42")
    text = (archive.settings.data / "releases" / "job42.json").read_text()
    manifest = json.loads(text)
    assert result["manifest"] == "manifest-job42.json"
    assert manifest["kind"] == "share" and manifest["to"] == "lab"
    assert manifest["engine"]["confidentiality_table"].startswith("PS3.15 20")
    assert manifest["policy"]["national_data_opt_out"] is True
    assert manifest["policy"]["text"] == (POLICIES / "leeds.yaml").read_text()
    assert manifest["profile"]["options"] == ["retain_long_modified_dates"]
    assert manifest["profile"]["method_codes"] == ["113100", "113107"]
    assert manifest["retention"]["retain_until"] is not None
    assert ":" in manifest["key_fingerprint"]
    released = manifest["released"]
    assert len(released) == 2
    assert sum(len(i) for st in released.values() for se in st.values()
               for i in se.values()) == 6
    assert not any(v in text for v in _identifiers())
    # The research project's studies are the manifest's.
    assert {s["study_instance_uid"] for s in archive.studies("lab")} == {
        study for patient in released.values() for study in patient}


def test_a_research_project_receives_nothing_but_shares(archive: Archive,
                                                          tmp_path: Path) -> None:
    files = _world(archive, tmp_path, patients=1, slices=1)
    with pytest.raises(PermissionDeniedError, match="research project"):
        archive.ingest([files[0].path], "lab")
    with pytest.raises(PermissionDeniedError, match="research project"):
        archive.receive([(files[0].path.read_bytes(), "upload")], "lab")
    with pytest.raises(PermissionDeniedError):
        archive.store_objects([(files[0].path.read_bytes(), "upload")], "lab")
    assert archive.project_summary("lab")["counts"]["instances"] == 0


@pytest.mark.parametrize(("spec", "words"), [
    (ReleaseSpec("share", "lab", "site"), "is a research project"),
    (ReleaseSpec("share", "site", "other"), "not a research project"),
    (ReleaseSpec("share", "site", "lab", options=("retain_uids",)), "own policy"),
    (ReleaseSpec("release", "lab", "/tmp/x", options=("retain_uids",)), "as stored"),
    (ReleaseSpec("release", "lab", "/tmp/x", key_name="lab"), "as stored"),
    (ReleaseSpec("release", "site", "/tmp/x", options=("retain_uids",),
                 policy=(POLICIES / "leeds.yaml").read_text()), "does not allow"),
    (ReleaseSpec("release", "site", "/tmp/x", options=("no_such_option",)), "option"),
])
def test_what_cannot_be_released_is_refused_before_anything_runs(
        sqlite_archive: Archive, tmp_path: Path, spec: ReleaseSpec, words: str) -> None:
    _world(sqlite_archive, tmp_path, patients=1, slices=1)
    sqlite_archive.create_project("other")
    with pytest.raises(InvalidInputError, match=words):
        run_release(sqlite_archive, spec, "j", workers=1)
    assert not (sqlite_archive.settings.data / "releases").exists()


def test_export_of_an_identifiable_project_to_a_folder_goes_through_the_pipeline(
        sqlite_archive: Archive, tmp_path: Path) -> None:
    files = _world(sqlite_archive, tmp_path)
    out = tmp_path / "released"
    spec = ReleaseSpec("release", "site", str(out), ("clean_descriptors",),
                       (POLICIES / "leeds.yaml").read_text())
    result = run_release(sqlite_archive, spec, "exp1", workers=2)
    assert result["ok"] and result["written"] == 6
    outputs = output_files(out)
    assert len(outputs) == 6
    assert all(OUTPUT_NAME.match(p.relative_to(out).as_posix()) for p in outputs)
    by_uid = {f.dataset.SOPInstanceUID: f.dataset for f in files}
    for path in outputs:
        ds = pydicom.dcmread(path)
        assert ds.StudyDescription.startswith("CT chest for")  # cleaned, not removed
        assert not any(v in str(ds) for v in _identifiers())
        # Checked again against every input: nothing identifying of any patient.
        for source in by_uid.values():
            assert residual_identifiers(source, ds) == []
    manifest = json.loads((out / "manifest-exp1.json").read_text())
    assert manifest["to"] == {"folder": "released"} and manifest["deidentified_here"]
    assert not (out / ".imagebank-partial").exists()
    # Run again into the same folder: every file is there already, none replaced.
    again = run_release(sqlite_archive, spec, "exp2", workers=1)
    assert again["written"] == again["unchanged"] == 6


def test_export_of_a_research_project_to_a_zip_sends_what_it_holds(
        sqlite_archive: Archive, tmp_path: Path) -> None:
    _world(sqlite_archive, tmp_path)
    _share(sqlite_archive)
    target = tmp_path / "out" / "lab.zip"
    result = run_release(sqlite_archive, ReleaseSpec("release", "lab", str(target)), "z1",
                         workers=1)
    assert result["ok"] and result["written"] == 6
    stored = {sqlite_archive.instance_bytes(i["id"])
              for st in sqlite_archive.studies("lab")
              for se in sqlite_archive.series(st["id"])
              for i in sqlite_archive.instances(se["id"])}
    with zipfile.ZipFile(target) as zf:
        names = zf.namelist()
        assert "manifest-z1.json" in names
        dicoms = [n for n in names if n.endswith(".dcm")]
        assert all(OUTPUT_NAME.match(n) for n in dicoms) and len(dicoms) == 6
        assert {zf.read(n) for n in dicoms} == stored  # as stored, byte for byte
        manifest = json.loads(zf.read("manifest-z1.json"))
    assert manifest["deidentified_here"] is False and manifest["policy"]["sha256"]
    assert not target.with_name("lab.zip.partial").exists()
    with pytest.raises(InvalidInputError, match="never replaced"):
        check_destination(sqlite_archive, str(target))
    with pytest.raises(InvalidInputError, match="inside the data folder"):
        check_destination(sqlite_archive, str(sqlite_archive.settings.data / "x.zip"))


def test_a_failed_export_leaves_no_partial_zip(sqlite_archive: Archive, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _world(sqlite_archive, tmp_path, patients=1, slices=2)
    target = tmp_path / "broken.zip"
    from imagebank.services import release

    def explode(self: object, released: list) -> list:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(release.ZipSink, "put", explode)
    with pytest.raises(OSError):
        run_release(sqlite_archive, ReleaseSpec("release", "site", str(target)), "b1",
                    workers=1)
    assert not target.exists() and not target.with_name("broken.zip.partial").exists()
    assert not (sqlite_archive.settings.data / "releases" / "b1.json").exists()


# -- real receivers ----------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """DCMTK's storescp on loopback, writing what it receives; stopped by its process ID."""
    port, folder = _free_port(), tmp_path / "received"
    folder.mkdir()
    proc = subprocess.Popen([DCMTK_STORESCP, "--aetitle", "RESEARCHPACS", "--output-directory",
                             str(folder), str(port)], env={**os.environ, "TCP_NODELAY": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        else:
            pytest.fail("storescp did not start")
        yield port, folder
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_export_to_a_dicom_node_with_c_store(sqlite_archive: Archive, tmp_path: Path,
                                             storescp: tuple[int, Path]) -> None:
    port, folder = storescp
    _world(sqlite_archive, tmp_path)
    destination = check_destination(sqlite_archive, f"dicom://RESEARCHPACS@127.0.0.1:{port}")
    result = run_release(sqlite_archive, ReleaseSpec("release", "site", destination), "c1",
                         workers=1)
    assert result["ok"] and result["written"] == 6
    received = [pydicom.dcmread(p) for p in folder.iterdir()]
    assert len(received) == 6
    assert all(ds.PatientIdentityRemoved == "YES" and ds.PatientID.startswith("IB")
               for ds in received)
    manifest = json.loads((sqlite_archive.settings.data / "releases" / "c1.json").read_text())
    assert manifest["to"] == {"dicom": f"RESEARCHPACS@127.0.0.1:{port}"}


def test_a_dicom_node_that_is_not_there_fails_each_object_with_a_reason(
        sqlite_archive: Archive, tmp_path: Path) -> None:
    _world(sqlite_archive, tmp_path, patients=1, slices=2)
    destination = f"dicom://NOBODY@127.0.0.1:{_free_port()}"
    result = run_release(sqlite_archive, ReleaseSpec("release", "site", destination), "c2",
                         workers=1)
    assert not result["ok"] and result["failed"] == 2
    assert result["reasons"] == {"association_refused": 2}


def test_export_to_a_dicomweb_server_with_stow_rs(sqlite_archive: Archive,
                                                  tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from ingest_throughput import OrthancServer
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    _world(sqlite_archive, tmp_path)
    (tmp_path / "orthanc").mkdir()
    with OrthancServer(tmp_path / "orthanc", dicomweb=True) as orthanc:
        url = f"{orthanc.url}/dicom-web"
        result = run_release(sqlite_archive, ReleaseSpec("release", "site", url), "w1",
                             workers=1)
        assert result["ok"] and result["written"] == 6
        stats = orthanc.statistics()
        assert stats["CountInstances"] == 6 and stats["CountPatients"] == 2
    manifest = json.loads((sqlite_archive.settings.data / "releases" / "w1.json").read_text())
    assert manifest["to"]["dicomweb"].endswith("/dicom-web")


# -- Dask --------------------------------------------------------------------------------------
def test_a_share_on_a_dask_cluster_gives_the_same_bytes_as_a_local_one(
        sqlite_archive: Archive, tmp_path: Path) -> None:
    from distributed import LocalCluster

    _world(sqlite_archive, tmp_path)
    local = tmp_path / "local"
    run_release(sqlite_archive, ReleaseSpec("release", "site", str(local)), "d0", workers=2)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      host="127.0.0.1", dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        remote = tmp_path / "remote"
        result = run_release(sqlite_archive, ReleaseSpec("release", "site", str(remote)), "d1",
                             scheduler=address)
        assert result["ok"] and result["written"] == 6
        shared = _share(sqlite_archive, "d2", scheduler=address)
        assert shared["written"] == 6
    local_files = {p.relative_to(local): p.read_bytes() for p in output_files(local)}
    remote_files = {p.relative_to(remote): p.read_bytes() for p in output_files(remote)}
    assert local_files == remote_files and len(local_files) == 6


def test_a_scheduler_that_is_not_there_is_a_clear_error(sqlite_archive: Archive,
                                                        tmp_path: Path) -> None:
    from imagebank.domain.errors import ConfigurationError

    _world(sqlite_archive, tmp_path, patients=1, slices=1)
    with pytest.raises(ConfigurationError, match="IMAGEBANK_JOBS"):
        run_release(sqlite_archive, ReleaseSpec("release", "site", str(tmp_path / "o")), "d3",
                    scheduler="http://127.0.0.1:1")


# -- as jobs -----------------------------------------------------------------------------------
def test_a_share_job_reports_progress_and_its_result(sqlite_archive: Archive,
                                                     tmp_path: Path) -> None:
    _world(sqlite_archive, tmp_path)
    jobs = Jobs(sqlite_archive)
    spec = ReleaseSpec("share", "site", "lab")
    job = jobs.submit("share", "site", spec.params(), None)
    reports: list[tuple[int, int | None, str]] = []
    ended = jobs.run(job["id"], lambda d, t, m: reports.append((d, t, m)))
    assert ended["state"] == "succeeded", ended
    assert ended["result"]["written"] == 6 and ended["progress_done"] == 6
    assert ended["progress_total"] == 6 and reports[-1][:2] == (6, 6)
    assert "6 released" in reports[-1][2]
    # A job that fails says why, in words.
    bad = jobs.submit("share", "site", ReleaseSpec("share", "lab", "site").params(), None)
    failed = jobs.run(bad["id"])
    assert failed["state"] == "failed" and "research project" in failed["error"]


def test_an_export_key_named_must_exist(sqlite_archive: Archive, tmp_path: Path) -> None:
    from imagebank.domain.errors import NotFoundError

    _world(sqlite_archive, tmp_path, patients=1, slices=1)
    spec = ReleaseSpec("release", "site", str(tmp_path / "o"), key_name="lab-typo")
    with pytest.raises(NotFoundError, match="no de-identification key 'lab-typo'"):
        run_release(sqlite_archive, spec, "k1", workers=1)
    assert not (sqlite_archive.settings.data / "keys" / "deid" / "lab-typo.key").exists()
