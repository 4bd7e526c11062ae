"""``imagebank deid IN OUT`` and ``imagebank key``: the key store's key made once and reused,
key files, policies, what is reported (table, JSON lines) and the exit status, the audit
event, and a run killed part way leaving only whole files."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest
from clikit import IMAGEBANK, assert_one_line_error, cli, cli_json, run

from deidkit import OUTPUT_NAME, PATIENTS, output_files, read, write_phi_folder
from imagebank.dicom.deid import residual_identifiers
from imagebank.domain.pseudonyms import Pseudonymiser
from imagebank.storage.keys import fingerprint
from testkit import SHARED_DATA, write_study

POLICY = """\
version: 1
site:
  name: Test Site
allowed_options:
  - retain_long_modified_dates
  - clean_descriptors
  - retain_safe_private
safe_private:
  - creator: ACME 1.0
    element: "0x01"
    justification: Reviewed in error (it holds the patient's name).
  - creator: ACME 1.0
    element: "0x02"
    justification: A slice thickness; a number.
smallest_count: 10
national_data_opt_out: true
retention:
  days: 365
"""


def _key_file(path: Path, key: bytes) -> Path:
    path.write_text(key.hex() + "\n")
    path.chmod(0o600)
    return path


def _tree(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in output_files(out)}


def test_deid_makes_the_key_once_and_reuses_it(tmp_path: Path) -> None:
    files = write_phi_folder(tmp_path / "in", patients=2, slices=2)
    data = tmp_path / "data"
    first = cli("deid", tmp_path / "in", tmp_path / "out1", "--workers", "1", data=data)
    key_path = data / "keys" / "deid" / "default.key"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    key = bytes.fromhex(key_path.read_text())
    assert "Created the de-identification key 'default'" in first.stderr
    assert fingerprint(key) in first.stderr + first.stdout
    assert "4 of 4 files written" in first.stdout
    second = cli("deid", tmp_path / "in", tmp_path / "out2", "--workers", "1", data=data)
    assert "Created" not in second.stderr and fingerprint(key) in second.stdout
    assert bytes.fromhex(key_path.read_text()) == key
    one, two = _tree(tmp_path / "out1"), _tree(tmp_path / "out2")
    assert one == two and len(one) == 4  # the same key: the same bytes
    for name in one:
        assert OUTPUT_NAME.match(name)
    patient = Pseudonymiser(key).patient_id(PATIENTS[0][1], "NHS")
    assert any(name.startswith(patient + "/") for name in one)
    for result in (first, second):  # the key itself is never shown
        assert key.hex() not in result.stdout + result.stderr
    events = [e for e in cli_json("audit", "ls", data=data) if e["action"] == "deid"]
    assert [e["object_id"] for e in events] == [fingerprint(key)] * 2
    assert files


def test_a_key_file_and_a_project_key(tmp_path: Path) -> None:
    write_phi_folder(tmp_path / "in", patients=1, slices=2)
    data = tmp_path / "data"
    key = os.urandom(32)
    key_file = _key_file(tmp_path / "site.key", key)
    cli("deid", tmp_path / "in", tmp_path / "a", "--key-file", key_file, "--workers", "1",
        data=data)
    assert not (data / "keys" / "deid" / "default.key").exists()
    patient = Pseudonymiser(key).patient_id(PATIENTS[0][1], "NHS")
    assert {n.split("/")[0] for n in _tree(tmp_path / "a")} == {patient}
    # another site installs the shared project key, and gets the same pseudonyms
    other = tmp_path / "other-site"
    created = cli("key", "create", "trial-1", "--from-file", key_file, data=other)
    assert fingerprint(key) in created.stdout
    assert cli("key", "fingerprint", "trial-1", data=other).stdout.strip() == (
        f"trial-1: {fingerprint(key)}")
    cli("deid", tmp_path / "in", tmp_path / "b", "-p", "trial-1", "--workers", "1", data=other)
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    # a key is never replaced; a new random one is another key
    assert_one_line_error(cli("key", "create", "trial-1", data=other, expect=2),
                          "never replaced")
    made = cli("key", "create", "trial-2", data=other).stdout
    assert fingerprint(key) not in made and "trial-2" in made
    assert_one_line_error(cli("key", "fingerprint", "absent", data=other, expect=2), "absent")


@pytest.mark.parametrize(("args", "words"), [
    (["--key-file", "{short}"], "a key needs at least 64"),
    (["--key-file", "{loose}"], "chmod 600"),
    (["--key-file", "{short}", "--project", "p"], "not both"),
    (["--option", "retain_everything"], "unknown option"),
    (["--option", "retain_long_full_dates", "--option", "retain_long_modified_dates"],
     "exclude each other"),
    (["-p", "Bad Name"], "project ID"),
])
def test_usage_errors_are_one_line(tmp_path: Path, args: list[str], words: str) -> None:
    write_phi_folder(tmp_path / "in", patients=1, slices=1)
    short = _key_file(tmp_path / "short.key", b"\x01" * 8)
    loose = _key_file(tmp_path / "loose.key", os.urandom(32))
    loose.chmod(0o644)
    argv = [a.format(short=short, loose=loose) for a in args]
    result = cli("deid", tmp_path / "in", tmp_path / "out", *argv, data=tmp_path / "data",
                 expect=2)
    assert_one_line_error(result, words)
    assert not (tmp_path / "out").exists()


def test_folder_errors_are_one_line(tmp_path: Path) -> None:
    write_phi_folder(tmp_path / "in", patients=1, slices=1)
    data = tmp_path / "data"
    assert_one_line_error(cli("deid", tmp_path / "nothing", tmp_path / "out", data=data,
                              expect=2), "no such file")
    assert_one_line_error(cli("deid", tmp_path / "in", tmp_path / "in" / "x", data=data,
                              expect=2), "inside the input")
    assert not (data / "keys").exists()  # no key is made for a command that cannot run


def test_a_policy_gives_the_options_and_the_scan_blocks_its_mistake(tmp_path: Path) -> None:
    files = write_phi_folder(tmp_path / "in", patients=1, slices=2)
    policy = tmp_path / "site.yaml"
    policy.write_text(POLICY)
    data = tmp_path / "data"
    refused = cli("deid", tmp_path / "in", tmp_path / "x", "--policy", policy,
                  "--option", "retain_uids", data=data, expect=2)
    assert_one_line_error(refused, "does not allow retain_uids")
    ok = cli("deid", tmp_path / "in", tmp_path / "dated", "--policy", policy, "--option",
             "retain_long_modified_dates", "--workers", "1", data=data)
    assert "2 of 2 files written" in ok.stdout
    ds = read(output_files(tmp_path / "dated")[0])
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    assert ds.StudyDate and ds.StudyDate != files[0].dataset.StudyDate
    # The policy's allow-list keeps (0009,1001), which holds the patient's name: blocked.
    blocked = cli("deid", tmp_path / "in", tmp_path / "out", "--policy", policy, "--option",
                  "retain_safe_private", "--jsonl", "--workers", "1", data=data, expect=1)
    lines = [json.loads(line) for line in blocked.stdout.splitlines()]
    problems = [line for line in lines if line["event"] == "problem"]
    assert len(problems) == 2
    assert {p["reason"] for p in problems} == {"residual_identifiers"}
    assert problems[0]["findings"] == [{"path": "(0009,1001)", "kind": "identifier"}]
    assert Path(problems[0]["source"]).parent == files[0].path.parent
    summary = lines[-1]
    assert summary["event"] == "summary" and summary["blocked"] == 2 == summary["files"]
    assert PATIENTS[0][0] not in blocked.stdout.replace(str(tmp_path), "")
    assert output_files(tmp_path / "out") == []


def test_refused_and_unreadable_files_are_listed_and_exit_1(tmp_path: Path) -> None:
    write_phi_folder(tmp_path / "in", patients=1, slices=2)
    (tmp_path / "in" / "readme.txt").write_text("not DICOM")
    us = write_study(tmp_path / "in" / "us", 5, slices=1, modality="US")[0]
    ultrasound = read(us)
    del ultrasound.BurnedInAnnotation  # an ultrasound that does not say: it may show text
    ultrasound.save_as(us, enforce_file_format=True)
    result = cli("deid", tmp_path / "in", tmp_path / "out", "--workers", "1",
                 data=tmp_path / "data", expect=1)
    assert "2 of 4 files written" in result.stdout
    assert "2 not written: 1 refused, 1 unreadable (burned_in 1, not_dicom 1)" in result.stdout
    assert str(us) in result.stdout and "readme.txt" in result.stdout
    assert len(output_files(tmp_path / "out")) == 2


def test_default_workers_through_the_console_script(tmp_path: Path) -> None:
    source = SHARED_DATA / "dcmqi-ct-3slice" / "ct-3slice"
    key = _key_file(tmp_path / "k", os.urandom(32))
    result = run("deid", source, tmp_path / "out", "--key-file", key, "--jsonl",
                 data=tmp_path / "data")
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["written"] == summary["files"] == 3
    by_uid = {read(p).SOPInstanceUID: read(p) for p in source.iterdir()}
    pseudonyms = Pseudonymiser(bytes.fromhex(key.read_text()))
    for path in output_files(tmp_path / "out"):
        ds = read(path)
        original = next(s for u, s in by_uid.items() if pseudonyms.uid(u) == ds.SOPInstanceUID)
        assert residual_identifiers(original, ds) == []


def test_a_run_killed_part_way_leaves_only_whole_files(tmp_path: Path) -> None:
    for patient in range(4):
        write_study(tmp_path / "in" / f"p{patient}", patient, slices=80, rows=16, columns=16)
    out = tmp_path / "out"
    key = _key_file(tmp_path / "k", os.urandom(32))
    proc = subprocess.Popen(
        [str(IMAGEBANK), "--data", str(tmp_path / "data"), "deid", str(tmp_path / "in"),
         str(out), "--key-file", str(key), "--jsonl"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())  # the first outputs are named
        assert first["event"] == "progress" and 0 < first["written"] < 320
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    written = output_files(out)
    assert first["written"] <= len(written) < 320
    for path in written:  # every named output is whole
        ds = read(path)
        assert len(ds.PixelData) == ds.Rows * ds.Columns * 2
    stray = [p for p in out.rglob("*") if p.is_file() and p.suffix != ".dcm"
             and p.parent.name != ".imagebank-partial"]
    assert stray == []
    # the next run completes the folder; what was there already is counted as unchanged
    again = run("deid", tmp_path / "in", out, "--key-file", key, "--jsonl",
                data=tmp_path / "data")
    summary = json.loads(again.stdout.splitlines()[-1])
    assert summary["written"] == 320 and summary["unchanged"] == len(written)
    assert len(output_files(out)) == 320
