"""``imagebank share`` and ``imagebank export``: a research project made from sites' policies,
a share of a PHI-laden site project into it, exports (zip, folder; as stored and through the
pipeline), every refusal as one line with exit 2, and a share killed part way then run again.

Most commands run ``main()`` in this process; the JSON lines and the kill run the real
console script (the kill: its process pool too)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

import pydicom
import pytest
from clikit import IMAGEBANK, assert_one_line_error, cli, cli_json, run

from deidkit import OUTPUT_NAME, PATIENTS, PhiFile, output_files, read, write_phi_folder
from imagebank.dicom.deid import residual_identifiers
from imagebank.domain.pseudonyms import Pseudonymiser
from imagebank.services.archive import Archive
from imagebank.services.jobs import Jobs
from imagebank.storage.keys import fingerprint
from testkit import REPO, optout_list

POLICIES = REPO / "docs" / "policies"
LEEDS, OXFORD = POLICIES / "leeds.yaml", POLICIES / "oxford.yaml"


def _identifiers(files: list[PhiFile]) -> list[str]:
    """What identifies the inputs: the patients' values and the original UIDs."""
    values = ["Acacia Avenue", "01134960123", "FOSTERCARE", "RADIOGRAPH"]
    for name, patient_id, birth in PATIENTS:
        values += [patient_id, birth, f"RR{patient_id[:8]}", *name.split("^")]
    for f in files:
        values += [f.dataset.StudyInstanceUID, f.dataset.SeriesInstanceUID,
                   f.dataset.SOPInstanceUID]
    return values


def _assert_nothing_identifying(text: str, files: list[PhiFile], where: str) -> None:
    found = [v for v in _identifiers(files) if v in text]
    assert not found, f"{len(found)} identifying values in {where}"


def _site(tmp_path: Path, patients: int = 2, slices: int = 2) -> tuple[Path, list[PhiFile]]:
    """A data folder whose identifiable project "site" holds PHI-laden patients."""
    data = tmp_path / "data"
    files = write_phi_folder(tmp_path / "site-export", patients=patients, slices=slices)
    cli("project", "create", "site", data=data)
    ingested = cli("ingest", tmp_path / "site-export", "-p", "site", data=data)
    assert f"{len(files)} stored" in ingested.stdout
    listed = cli("optout", "import", optout_list(tmp_path), "--date", "2026-11-01", data=data)
    assert "Opt-out list of 2026-11-01 imported: 0 NHS numbers" in listed.stdout
    return data, files


def _research(data: Path, project: str = "lab", *extra: str | Path) -> None:
    made = cli("project", "create", project, "--research", "--policy", LEEDS, *extra, data=data)
    assert made.stdout.startswith(f"Created research project {project}.")


def _jobs(data: Path) -> list[dict[str, Any]]:
    with Archive.open(data, workers=1) as archive:
        return Jobs(archive).list()


def _instances(archive: Archive, project: str) -> list[dict[str, Any]]:
    return [i for st in archive.studies(project) for se in archive.series(st["id"])
            for i in archive.instances(se["id"])]


def _lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


# -- share -------------------------------------------------------------------------------------
def test_share_into_a_research_project_made_from_two_sites_policies(tmp_path: Path) -> None:
    data, files = _site(tmp_path)
    made = cli("project", "create", "lab", "--research", "--policy", LEEDS, "--policy", OXFORD,
               "--option", "retain_long_modified_dates", data=data)
    assert made.stdout.strip() == ("Created research project lab. Policy: the strictest merge "
                                   "of 2 site(s).")
    shared = cli("share", "--from", "site", "--to", "lab", data=data)
    key = bytes.fromhex((data / "keys" / "deid" / "lab.key").read_text())  # the project's key
    [job] = _jobs(data)
    summary = shared.stdout.strip()
    assert summary == (f"4 of 4 objects released (2 patients, 0 there already); key "
                       f"fingerprint {fingerprint(key)}. Manifest: {data}/releases/"
                       f"{job['id']}.json"), summary
    assert job["kind"] == "share" and job["state"] == "succeeded" and job["project_id"] == "site"
    assert job["result"]["written"] == job["result"]["files"] == 4
    assert job["params"]["target"] == "lab" and job["params"]["key_file"] is None
    assert job["progress_done"] == job["progress_total"] == 4
    manifest_text = (data / "releases" / f"{job['id']}.json").read_text()
    manifest = json.loads(manifest_text)
    assert manifest["to"] == "lab" and manifest["from_project"] == "site"
    assert manifest["key_fingerprint"] == fingerprint(key)
    assert manifest["profile"]["options"] == ["retain_long_modified_dates"]
    assert "strictest merge of" in manifest["policy"]["text"]  # the project's, as stored
    assert manifest["counts"]["written"] == 4 and manifest["patients"] == 2
    for where, text in (("stdout", shared.stdout), ("stderr", shared.stderr),
                        ("the manifest", manifest_text)):
        _assert_nothing_identifying(text.replace(str(tmp_path), ""), files, where)
    assert key.hex() not in shared.stdout + shared.stderr + manifest_text
    # The research project holds the objects under the key's pseudonyms.
    pseudonyms = Pseudonymiser(key)
    studies = cli_json("ls", "studies", "-p", "lab", data=data)
    assert sorted(s["patient_id"] for s in studies) == sorted(
        pseudonyms.patient_id(patient_id, "NHS") for _, patient_id, _ in PATIENTS[:2])
    assert set(manifest["released"]) == {s["patient_id"] for s in studies}
    with Archive.open(data, workers=1) as archive:
        stored = [pydicom.dcmread(io.BytesIO(archive.instance_bytes(i["id"])))
                  for i in _instances(archive, "lab")]
    assert len(stored) == 4
    for ds in stored:
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
        _assert_nothing_identifying(str(ds), files, "a shared object")
    # The command line's share is audited, naming the job.
    events = [e for e in cli_json("audit", "ls", data=data) if e["action"] == "share"]
    assert [(e["project_id"], e["object_id"]) for e in events] == [("site", job["id"])]


def test_share_with_json_lines_through_the_console_script(tmp_path: Path) -> None:
    data, files = _site(tmp_path)
    _research(data)
    first = run("share", "--from", "site", "--to", "lab", "--jsonl", data=data)
    again = cli("share", "--from", "site", "--to", "lab", "--jsonl", data=data)
    for result, unchanged in ((first, 0), (again, 4)):
        lines = _lines(result.stdout)  # every line is JSON
        progress, summary = lines[:-1], lines[-1]
        assert progress and all(p["event"] == "progress" for p in progress)
        assert (progress[0]["done"], progress[0]["total"]) == (0, 4)
        assert (progress[-1]["done"], progress[-1]["total"]) == (4, 4)
        assert summary["event"] == "summary" and summary["ok"] is True
        assert summary["written"] == summary["files"] == 4
        assert summary["unchanged"] == unchanged and summary["to"] == "lab"
        assert {line["job"] for line in lines} == {summary["job"]}
        assert (data / "releases" / f"{summary['job']}.json").exists()
        _assert_nothing_identifying(result.stdout + result.stderr, files, "the output")
    assert [j["state"] for j in _jobs(data)] == ["succeeded", "succeeded"]
    assert cli_json("project", "list", data=data)[0]["instances"] == 4  # nothing twice


def test_share_of_chosen_studies(tmp_path: Path) -> None:
    data, _ = _site(tmp_path)
    _research(data)
    study = cli_json("ls", "studies", "-p", "site", data=data)[0]
    result = cli("share", "--from", "site", "--to", "lab", "--study", study["id"], "--jsonl",
                 data=data)
    assert _lines(result.stdout)[-1]["written"] == study["num_instances"] == 2
    [lab] = [p for p in cli_json("project", "list", data=data) if p["id"] == "lab"]
    assert (lab["studies"], lab["instances"]) == (1, 2)


# -- export ------------------------------------------------------------------------------------
def test_export_a_research_project_as_stored_to_a_zip_and_a_folder(tmp_path: Path) -> None:
    data, files = _site(tmp_path)
    _research(data)
    cli("share", "--from", "site", "--to", "lab", data=data)
    with Archive.open(data, workers=1) as archive:
        stored = {archive.instance_bytes(i["id"]) for i in _instances(archive, "lab")}
    zipped = cli("export", "lab", tmp_path / "out" / "lab.zip", data=data)
    assert "4 of 4 objects released" in zipped.stdout
    assert "sent as stored (already de-identified)" in zipped.stdout
    job = next(j for j in _jobs(data) if j["kind"] == "release")
    with zipfile.ZipFile(tmp_path / "out" / "lab.zip") as zf:
        dicoms = [n for n in zf.namelist() if n.endswith(".dcm")]
        assert sorted(set(zf.namelist()) - set(dicoms)) == [f"manifest-{job['id']}.json"]
        assert len(dicoms) == 4 and all(OUTPUT_NAME.match(n) for n in dicoms)
        assert {zf.read(n) for n in dicoms} == stored
        manifest = json.loads(zf.read(f"manifest-{job['id']}.json"))
    assert manifest["deidentified_here"] is False and manifest["to"] == {"zip": "lab.zip"}
    assert manifest["key_fingerprint"] is None
    assert list(tmp_path.joinpath("out").iterdir()) == [tmp_path / "out" / "lab.zip"]
    folder = tmp_path / "lab-folder"
    cli("export", "lab", folder, data=data)
    assert {p.read_bytes() for p in output_files(folder)} == stored
    assert len(list(folder.glob("manifest-*.json"))) == 1
    assert not (folder / ".imagebank-partial").exists()
    _assert_nothing_identifying(
        "".join(p.read_text() for p in (data / "releases").iterdir()), files, "the manifests")


def test_export_an_identifiable_project_through_the_pipeline(tmp_path: Path) -> None:
    data, files = _site(tmp_path)
    key = os.urandom(32)
    key_file = tmp_path / "release.key"
    key_file.write_text(key.hex())
    key_file.chmod(0o600)
    target = tmp_path / "site.zip"
    result = cli("export", "site", target, "--policy", LEEDS, "--option", "clean_descriptors",
                 "--key-file", key_file, "--jsonl", data=data)
    summary = _lines(result.stdout)[-1]
    assert summary["written"] == summary["files"] == 4 and summary["to"] == {"zip": "site.zip"}
    pseudonyms = Pseudonymiser(key)
    with zipfile.ZipFile(target) as zf:
        dicoms = [n for n in zf.namelist() if n.endswith(".dcm")]
        assert {n.split("/")[0] for n in dicoms} == {
            pseudonyms.patient_id(patient_id, "NHS") for _, patient_id, _ in PATIENTS[:2]}
        released = [pydicom.dcmread(io.BytesIO(zf.read(n))) for n in dicoms]
        manifest_text = zf.read(summary["manifest"]).decode()
    for ds in released:
        assert ds.StudyDescription.startswith("CT chest for")  # cleaned, not removed
        for source in files:
            assert residual_identifiers(source.dataset, ds) == []
    manifest = json.loads(manifest_text)
    assert manifest["deidentified_here"] and manifest["key_fingerprint"] == fingerprint(key)
    assert manifest["profile"]["options"] == ["clean_descriptors"]
    _assert_nothing_identifying(manifest_text, files, "the manifest")
    _assert_nothing_identifying(result.stdout + result.stderr, files, "the output")
    # To a folder, under a research project's key: the same pseudonyms and UIDs as its share.
    _research(data)
    cli("share", "--from", "site", "--to", "lab", data=data)
    folder = tmp_path / "site-folder"
    cli("export", "site", folder, "--policy", LEEDS, "--key", "lab", data=data)
    exported = {read(p).SOPInstanceUID for p in output_files(folder)}
    with Archive.open(data, workers=1) as archive:
        assert exported == {i["sop_instance_uid"] for i in _instances(archive, "lab")}
    assert len(exported) == 4 and not (data / "keys" / "deid" / "default.key").exists()


# -- refusals ----------------------------------------------------------------------------------
BROKEN_POLICY = "version: 1\nsite: {name: Broken\nallowed_options: []\n"


@pytest.mark.parametrize(("args", "words"), [
    (["export", "lab", "{tmp}/x.zip", "--option", "clean_descriptors"], "as stored"),
    (["export", "lab", "{tmp}/x.zip", "--policy", str(LEEDS)], "as stored"),
    (["share", "--from", "site", "--to", "other"], "not a research project"),
    (["share", "--from", "lab", "--to", "lab"], "is a research project"),
    (["share", "--from", "site", "--to", "absent"], "No project 'absent'"),
    (["export", "site", "{tmp}/x.zip", "--policy", str(LEEDS), "--option", "retain_uids"],
     "does not allow retain_uids"),
    (["export", "site", "{tmp}/x.zip", "--policy", "{tmp}/broken.yaml"], "not valid YAML"),
    (["export", "site", "{tmp}/x.zip", "--option", "retain_everything"], "unknown option"),
    (["export", "site", "{tmp}/x.zip", "--key", "lab", "--key-file", "{tmp}/k"], "not both"),
    (["export", "lab", "{tmp}/exists.zip"], "never replaced"),
    (["export", "lab", "{tmp}/data/x.zip"], "inside the data folder"),
    (["export", "lab", "{tmp}/data"], "inside the data folder"),
    (["export", "site", "{tmp}/x.zip", "--study", "0" * 32], "No study"),
    (["project", "create", "p2", "--policy", str(LEEDS)], "add --research"),
    (["project", "create", "p2", "--research"], "needs its sites' policies"),
    (["project", "create", "p2", "--research", "--policy", str(LEEDS), "--option",
      "retain_uids"], "does not allow retain_uids"),
    (["ingest", "{tmp}/site-export", "-p", "lab"], "research project"),
])
def test_refusals_are_one_line_and_change_nothing(tmp_path: Path, args: list[str],
                                                  words: str) -> None:
    data, _ = _site(tmp_path, patients=1, slices=1)
    _research(data)
    cli("project", "create", "other", data=data)
    (tmp_path / "exists.zip").write_bytes(b"kept")
    (tmp_path / "broken.yaml").write_text(BROKEN_POLICY)
    argv = [a.format(tmp=tmp_path) for a in args]
    assert_one_line_error(cli(*argv, data=data, expect=2), words)
    assert _jobs(data) == []  # refused before a job was queued
    assert not (data / "releases").exists() and not (tmp_path / "x.zip").exists()
    assert (tmp_path / "exists.zip").read_bytes() == b"kept"
    projects = {p["id"]: p["instances"] for p in cli_json("project", "list", data=data)}
    assert projects == {"site": 1, "lab": 0, "other": 0}


# -- a share killed part way -------------------------------------------------------------------
def _session_processes(session: int) -> list[int]:
    """The processes still alive in a session (the killed command's pool, forkserver...)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def test_a_share_killed_part_way_then_run_again(tmp_path: Path) -> None:
    data, files = _site(tmp_path, patients=3, slices=32)
    total = len(files)
    _research(data)
    proc = subprocess.Popen(
        [str(IMAGEBANK), "--data", str(data), "share", "--from", "site", "--to", "lab",
         "--jsonl"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "IMAGEBANK_WORKERS": "2"}, start_new_session=True)
    try:
        assert proc.stdout is not None
        while True:  # a progress line comes after each task's objects are stored
            line = json.loads(proc.stdout.readline())
            if line["done"] > 0:
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    assert 0 < line["done"] < total
    # The killed command's worker processes end too (they are not the caller's children).
    deadline = time.monotonic() + 15
    while _session_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _session_processes(proc.pid) == []
    with Archive.open(data, workers=1) as archive:
        before = len(_instances(archive, "lab"))
        [killed] = Jobs(archive).list()
    assert line["done"] <= before < total
    # Its job stays "running": nothing is left to say otherwise (a server requeues it).
    assert killed["state"] == "running" and killed["finished_at"] is None
    again = cli("share", "--from", "site", "--to", "lab", "--jsonl", data=data)
    summary = _lines(again.stdout)[-1]
    assert summary["written"] == summary["files"] == total and summary["ok"]
    assert summary["unchanged"] == before
    with Archive.open(data, workers=1) as archive:
        instances = _instances(archive, "lab")
        uids = [i["sop_instance_uid"] for i in instances]
        assert len(uids) == len(set(uids)) == total  # every object once
        jobs = {j["id"]: j for j in Jobs(archive).list()}
        assert jobs[summary["job"]]["state"] == "succeeded"
        assert jobs[killed["id"]]["state"] == "running"
        # A server starting requeues the killed job; run again, it finds everything there.
        runner = Jobs(archive)
        assert runner.requeue_interrupted() == 1
        assert runner.run_pending() == 1
        ended = runner.get(killed["id"])
        assert ended["state"] == "succeeded"
        assert ended["result"]["unchanged"] == ended["result"]["written"] == total
        assert len(_instances(archive, "lab")) == total
    manifest = json.loads((data / "releases" / f"{summary['job']}.json").read_text())
    assert sum(len(i) for p in manifest["released"].values() for st in p.values()
               for i in st.values()) == total
    checked = cli("check", "--json", data=data)
    assert json.loads(checked.stdout)["ok"] is True


def test_ctrl_c_cancels_the_job_with_one_line(tmp_path: Path) -> None:
    data, files = _site(tmp_path, patients=3, slices=32)
    _research(data)
    proc = subprocess.Popen(
        [str(IMAGEBANK), "--data", str(data), "share", "--from", "site", "--to", "lab",
         "--jsonl"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "IMAGEBANK_WORKERS": "2"}, start_new_session=True)
    try:
        assert proc.stdout is not None
        while json.loads(proc.stdout.readline())["done"] == 0:
            pass
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: to the whole group
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    [job] = _jobs(data)
    assert stderr.strip().splitlines() == [
        f"interrupted: the share job {job['id']} is cancelled; what was released is whole (a "
        "zip only once complete); run the same command again to finish."]
    assert job["state"] == "cancelled"
    deadline = time.monotonic() + 15
    while _session_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _session_processes(proc.pid) == []
    with Archive.open(data, workers=1) as archive:
        assert 0 < len(_instances(archive, "lab")) < len(files)
        assert Jobs(archive).requeue_interrupted() == 0  # a server does not run it again
