"""The ``imagebank`` command line.

Exit codes and error handling live in ``main()``: they are checked on the real console script
in a subprocess (one-line errors on stderr, never a traceback, exit 2; ``ingest`` exits 1 when
something was quarantined or in conflict, after storing the rest). The many output checks run
``main()`` in this process, which is the same code without the interpreter start-up.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from clikit import assert_one_line_error, cli, cli_json, run

from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes


def _study(folder: Path, patient: int, *, slices: int = 3, modality: str = "CT",
           study_number: int = 0) -> list[Any]:
    folder.mkdir(parents=True, exist_ok=True)
    spec = SeriesSpec(modality=modality, slices=slices, rows=32, columns=32)
    datasets = list(make_study(SyntheticPatient.make(patient), study_number=study_number,
                               series=[spec]))
    for i, ds in enumerate(datasets):
        (folder / f"{patient}-{study_number}-{i}.dcm").write_bytes(to_bytes(ds))
    return datasets


@pytest.fixture
def filled(tmp_path: Path) -> dict[str, Any]:
    """A data folder with project "p": patients 1 (CT, 3) and 2 (MR, 2); empty project "e"."""
    data = tmp_path / "data"
    ct = _study(tmp_path / "in" / "a", 1)
    mr = _study(tmp_path / "in" / "b", 2, slices=2, modality="MR")
    cli("project", "create", "p", "--name", "Project P", data=data)
    cli("project", "create", "e", data=data)
    result = cli("ingest", tmp_path / "in", "--project", "p", data=data)
    assert "5" in result.stdout and "stored" in result.stdout
    return {"data": data, "ct": ct, "mr": mr}


# -- init, data folder ----------------------------------------------------------------------
def test_default_data_folder_is_imagebank_data_in_the_cwd(tmp_path: Path) -> None:
    result = run("init", cwd=tmp_path)
    assert (tmp_path / "imagebank-data" / "index.sqlite3").exists()
    assert (tmp_path / "imagebank-data" / "objects").is_dir()
    assert "imagebank-data" in result.stdout
    listed = run("project", "list", "--json", cwd=tmp_path)  # safe to open again
    assert json.loads(listed.stdout) == []


def test_data_option_and_environment_variable(tmp_path: Path) -> None:
    by_option, by_env = tmp_path / "opt", tmp_path / "env"
    run("project", "create", "a", data=by_option, cwd=tmp_path)
    run("project", "create", "b", cwd=tmp_path, env={"IMAGEBANK_DATA": str(by_env)})
    assert (by_option / "index.sqlite3").exists() and (by_env / "index.sqlite3").exists()
    assert not (tmp_path / "imagebank-data").exists()
    assert [p["id"] for p in cli_json("project", "list", data=by_option)] == ["a"]
    assert [p["id"] for p in cli_json("project", "list", data=by_env)] == ["b"]
    # The option wins over the environment.
    both = run("project", "list", "--json", data=by_option, cwd=tmp_path,
               env={"IMAGEBANK_DATA": str(by_env)})
    assert [p["id"] for p in json.loads(both.stdout)] == ["a"]


def test_data_folder_that_is_a_file_is_a_clean_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    assert_one_line_error(cli("stats", data=tmp_path / "afile", expect=None), "data folder")


def test_invalid_settings_are_clean_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    result = run("stats", data=tmp_path / "d", env={"IMAGEBANK_WORKERS": "0"}, expect=None)
    assert_one_line_error(result, "IMAGEBANK_WORKERS")
    monkeypatch.setenv("IMAGEBANK_DATABASE_URL", "mysql://x")
    assert_one_line_error(cli("stats", data=tmp_path / "d", expect=None),
                          "IMAGEBANK_DATABASE_URL", "sqlite")
    monkeypatch.delenv("IMAGEBANK_DATABASE_URL")
    monkeypatch.setenv("IMAGEBANK_BATCH_SIZE", "lots")
    assert_one_line_error(cli("stats", data=tmp_path / "d", expect=None), "IMAGEBANK_BATCH_SIZE")


# -- projects -------------------------------------------------------------------------------
def test_project_create_duplicate_and_bad_id(tmp_path: Path) -> None:
    data = tmp_path / "d"
    assert "Created project p" in run("project", "create", "p", data=data).stdout
    assert_one_line_error(run("project", "create", "p", data=data, expect=None),
                          "already exists")
    assert_one_line_error(run("project", "create", "Bad ID", data=data, expect=None),
                          "project ID")
    for bad in ("_x", "a/b", "x" * 64, "Upper", "a b"):
        assert_one_line_error(cli("project", "create", bad, data=data, expect=None),
                              "project ID")
    assert [p["id"] for p in cli_json("project", "list", data=data)] == ["p"]


def test_project_list_json(filled: dict[str, Any]) -> None:
    rows = {p["id"]: p for p in cli_json("project", "list", data=filled["data"])}
    assert set(rows) == {"e", "p"}
    p = rows["p"]
    assert (p["name"], p["subjects"], p["studies"], p["series"], p["instances"]) == (
        "Project P", 2, 2, 2, 5)
    assert p["size_bytes"] > 0
    assert (rows["e"]["instances"], rows["e"]["name"]) == (0, "e")
    assert cli_json("ls", "projects", data=filled["data"]) == cli_json(
        "project", "list", data=filled["data"])
    table = cli("project", "list", data=filled["data"]).stdout
    assert "Project P" in table


# -- ingest exit codes ----------------------------------------------------------------------
def test_ingest_exit_codes(tmp_path: Path) -> None:
    data = tmp_path / "d"
    cli("project", "create", "p", data=data)
    good = tmp_path / "good"
    datasets = _study(good, 3, slices=4)
    result = run("ingest", good, "--project", "p", "--jsonl", data=data, expect=0)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[-1] == {"event": "summary", "stored": 4, "duplicates": 0, "conflicts": 0,
                         "quarantined": 0, "bytes_stored": lines[-1]["bytes_stored"],
                         "reasons": {}}
    assert lines[-1]["bytes_stored"] == sum(p.stat().st_size for p in good.iterdir())
    assert sum(len(r["stored_ids"]) for r in lines if r["event"] == "batch") == 4
    # All duplicates: still 0.
    again = cli("ingest", good, "--project", "p", "--jsonl", data=data, expect=0)
    assert json.loads(again.stdout.splitlines()[-1])["duplicates"] == 4

    # Some quarantined: 1, and the good ones are stored anyway.
    mixed = tmp_path / "mixed"
    _study(mixed, 4, slices=2)
    (mixed / "notes.txt").write_text("not dicom")
    (mixed / "empty.dcm").write_bytes(b"")
    result = run("ingest", mixed, "--project", "p", data=data, expect=1)
    assert "not_dicom" in result.stdout and "empty" in result.stdout
    stats = cli_json("stats", data=data)
    assert (stats["instances"], stats["quarantined"]) == (6, 2)

    # A conflict: 1.
    conflict = tmp_path / "conflict"
    conflict.mkdir()
    datasets[0].InstitutionName = "Elsewhere"
    (conflict / "c.dcm").write_bytes(to_bytes(datasets[0]))
    result = cli("ingest", conflict, "--project", "p", "--jsonl", data=data, expect=1)
    summary = json.loads(result.stdout.splitlines()[-1])
    assert (summary["conflicts"], summary["reasons"]) == (1, {"conflict": 1})
    assert cli_json("stats", data=data)["instances"] == 6
    quarantine = cli_json("quarantine", "--project", "p", data=data)
    assert sorted(q["reason"] for q in quarantine) == ["conflict", "empty", "not_dicom"]


def test_ingest_bad_input_is_a_clean_error(tmp_path: Path) -> None:
    data = tmp_path / "d"
    cli("project", "create", "p", data=data)
    folder = tmp_path / "in"
    _study(folder, 5, slices=1)
    assert_one_line_error(run("ingest", tmp_path / "missing", "--project", "p", data=data,
                              expect=None), "no such file")
    assert_one_line_error(run("ingest", folder, "--project", "nope", data=data, expect=None),
                          "No project", "project create")
    assert_one_line_error(cli("ingest", folder, "--project", "Bad ID!", data=data,
                              expect=None))
    # A path that looks like console markup is printed as it is.
    odd = tmp_path / "[/]odd[red]"
    assert_one_line_error(cli("ingest", odd, "--project", "p", data=data, expect=None),
                          "[/]odd[red]")
    assert cli_json("stats", data=data)["instances"] == 0


def test_ingest_summary_shows_file_names_with_markup_as_they_are(tmp_path: Path) -> None:
    data = tmp_path / "d"
    cli("project", "create", "p", data=data)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "[red]weird[bold].txt").write_text("not dicom")
    result = cli("ingest", folder, "--project", "p", data=data, expect=1)
    assert "[red]weird[bold].txt" in result.stdout


# -- stats, ls, show ------------------------------------------------------------------------
def test_stats_json_is_one_object(filled: dict[str, Any]) -> None:
    result = run("stats", "--json", data=filled["data"])
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    stats = json.loads(lines[0])
    assert {k: stats[k] for k in ("projects", "subjects", "studies", "series", "instances",
                                  "quarantined")} == {
        "projects": 2, "subjects": 2, "studies": 2, "series": 2, "instances": 5,
        "quarantined": 0}
    assert stats["bytes"] > 0
    assert "instances" in cli("stats", data=filled["data"]).stdout


def test_ls_levels(filled: dict[str, Any]) -> None:
    data = filled["data"]
    ct, mr = filled["ct"], filled["mr"]
    subjects = cli_json("ls", "subjects", "--project", "p", data=data)
    assert sorted(s["patient_id"] for s in subjects) == sorted([ct[0].PatientID,
                                                                mr[0].PatientID])
    assert cli_json("ls", "subjects", "--project", "e", data=data) == []
    studies = cli_json("ls", "studies", "--project", "p", data=data)
    assert len(studies) == 2
    ct_study = next(s for s in studies if s["study_instance_uid"] == ct[0].StudyInstanceUID)
    assert (ct_study["num_instances"], ct_study["modalities_in_study"]) == (3, "CT")
    only_mr = cli_json("ls", "studies", "--modality", "MR", data=data)
    assert [s["study_instance_uid"] for s in only_mr] == [mr[0].StudyInstanceUID]
    by_patient = cli_json("ls", "studies", "--patient-id", ct[0].PatientID, data=data)
    assert [s["id"] for s in by_patient] == [ct_study["id"]]
    date = ct[0].StudyDate
    in_range = cli_json("ls", "studies", "--from", date, "--to", date, data=data)
    assert ct_study["id"] in [s["id"] for s in in_range]
    series = cli_json("ls", "series", ct_study["id"], data=data)
    assert [(s["series_instance_uid"], s["num_instances"]) for s in series] == [
        (ct[0].SeriesInstanceUID, 3)]
    instances = cli_json("ls", "instances", series[0]["id"], data=data)
    assert [i["sop_instance_uid"] for i in instances] == [d.SOPInstanceUID for d in ct]
    assert all("metadata_json" not in i for i in instances)
    # Tables too, without --json.
    for args in (("ls", "subjects", "--project", "p"), ("ls", "studies"),
                 ("ls", "series", ct_study["id"]), ("ls", "instances", series[0]["id"])):
        assert cli(*args, data=data).stdout.strip()
    assert ct_study["id"][:8] in cli("ls", "studies", "--project", "p", data=data).stdout


def test_ls_errors(filled: dict[str, Any]) -> None:
    data = filled["data"]
    assert_one_line_error(run("ls", "subjects", "--project", "nope", data=data, expect=None),
                          "No project")
    assert_one_line_error(cli("ls", "series", "0" * 32, data=data, expect=None), "No study")
    assert_one_line_error(cli("ls", "instances", "not-an-id", data=data, expect=None),
                          "No series")
    assert_one_line_error(cli("ls", "studies", "--project", "nope", data=data, expect=None),
                          "No project")


def test_show_by_uid(filled: dict[str, Any]) -> None:
    data = filled["data"]
    ct = filled["ct"]
    (study,) = cli_json("show", ct[0].StudyInstanceUID, data=data)
    assert (study["level"], study["study_instance_uid"]) == ("study", ct[0].StudyInstanceUID)
    (series,) = cli_json("show", ct[0].SeriesInstanceUID, data=data)
    assert (series["level"], series["study_id"]) == ("series", study["id"])
    (instance,) = cli_json("show", ct[1].SOPInstanceUID, data=data)
    assert (instance["level"], instance["series_id"]) == ("instance", series["id"])
    assert "metadata_json" not in instance
    # By internal ID too, and as a table.
    (by_id,) = cli_json("show", study["subject_id"], data=data)
    assert (by_id["level"], by_id["patient_id"]) == ("subject", ct[0].PatientID)
    assert ct[0].StudyInstanceUID in cli("show", ct[0].StudyInstanceUID, data=data).stdout


def test_show_unknown_uid_is_a_clean_error(filled: dict[str, Any]) -> None:
    assert_one_line_error(run("show", "1.2.3.4.5", data=filled["data"], expect=None),
                          "Nothing in the archive")
    assert_one_line_error(cli("show", "0" * 32, data=filled["data"], expect=None),
                          "Nothing in the archive")


# -- check ----------------------------------------------------------------------------------
def test_check_exit_codes(tmp_path: Path) -> None:
    data = tmp_path / "d"
    cli("project", "create", "p", data=data)
    _study(tmp_path / "in", 6, slices=3)
    cli("ingest", tmp_path / "in", "--project", "p", data=data)
    assert cli_json("check", data=data)["ok"] is True
    objects = data / "objects"
    victim = sorted(objects.glob("p/dicom/*/*/*.dcm"))[0]
    victim.unlink()  # behind the index's back
    result = run("check", "--json", data=data, expect=1)
    report = json.loads(result.stdout)
    assert (report["ok"], report["missing_objects"], report["orphans"]) == (False, 1, 0)
    assert "missing_objects" in cli("check", data=data, expect=1).stdout
    orphan = objects / "p" / "quarantine" / "ab" / ("ab" * 16 + ".bin")
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"left behind")
    report = cli_json("check", data=data, expect=1)
    assert (report["missing_objects"], report["orphans"]) == (1, 1)
    repaired = json.loads(run("check", "--repair", "--json", data=data, expect=0).stdout)
    assert (repaired["removed_rows"], repaired["removed_objects"]) == (1, 1)
    assert not orphan.exists()
    assert cli_json("check", "--verify-checksums", data=data)["ok"] is True
    assert cli_json("stats", data=data)["instances"] == 2
    # A modified object: found only when the checksums are read.
    target = sorted(objects.glob("p/dicom/*/*/*.dcm"))[0]
    raw = bytearray(target.read_bytes())
    raw[-1] ^= 0xFF
    target.write_bytes(bytes(raw))
    assert cli_json("check", data=data)["ok"] is True
    report = cli_json("check", "--verify-checksums", data=data, expect=1)
    assert report["checksum_mismatches"] == 1


# A Ctrl-C while the command loads (its imports take a moment) is met as one later is. The
# console script imports only ``imagebank.cli`` first; a finder that raises KeyboardInterrupt
# when the rest is imported stands for the key pressed at that moment.
_INTERRUPTED_LOAD = """
import sys
from imagebank.cli import run

class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == "imagebank.cli.main":
            raise KeyboardInterrupt

sys.meta_path.insert(0, Interrupt())
sys.exit(run())
"""


def test_ctrl_c_while_the_command_loads_is_one_line() -> None:
    done = subprocess.run([sys.executable, "-c", _INTERRUPTED_LOAD, "stats"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stderr, done.stdout) == (130, "interrupted\n", "")


def test_the_console_script_loads_little_before_the_command() -> None:
    probe = ("import sys, imagebank.cli; print(sorted(m for m in ('sqlalchemy', 'pydicom', "
             "'numpy', 'typer', 'imagebank.services.archive') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]"
