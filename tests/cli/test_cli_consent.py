"""``imagebank consent import``, ``imagebank optout import`` and ``optout list``: lists are
taken whole or refused with every problem by line (exit 2, no value shown), and a share
afterwards leaves the patients out."""

from __future__ import annotations

import json
from pathlib import Path

from clikit import assert_one_line_error, cli, cli_json

from deidkit import PATIENTS, write_phi_folder
from testkit import REPO, optout_list

ALICE = PATIENTS[0][1]


def _site(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    write_phi_folder(tmp_path / "export", patients=3, slices=1)
    cli("project", "create", "site", data=data)
    cli("ingest", tmp_path / "export", "-p", "site", data=data)
    cli("project", "create", "lab", "--research", "--policy",
        REPO / "docs" / "policies" / "leeds.yaml", data=data)
    return data


def test_a_share_leaves_out_who_opted_out_and_who_withdrew(tmp_path: Path) -> None:
    data = _site(tmp_path)
    refused = cli("share", "--from", "site", "--to", "lab", data=data, expect=2)
    assert "imagebank optout import" in assert_one_line_error(refused, "opt-out")
    listed = cli_json("optout", "import", optout_list(tmp_path, (ALICE,)), "--date",
                      "2026-11-01", data=data)
    assert listed["entries"] == 1 and listed["list_date"] == "2026-11-01" and listed["new"]
    again = cli("optout", "import", optout_list(tmp_path, (ALICE,)), "--date", "2026-11-01",
                data=data)
    assert "already imported" in again.stdout
    versions = cli_json("optout", "list", data=data)
    assert [v["id"] for v in versions] == [listed["version"]]
    consent = tmp_path / "consent.csv"
    consent.write_text(f"patient_id,issuer,status,date\n{PATIENTS[1][1]},NHS,withdrawn,"
                       "2026-11-02\n")
    imported = cli("consent", "import", consent, data=data)
    assert "1 consent records of 1 patients (1 new; 1 withdrawn)" in imported.stdout
    shared = cli("share", "--from", "site", "--to", "lab", "--jsonl", data=data)
    result = json.loads(shared.stdout.strip().splitlines()[-1])
    assert result["patients"] == 1, shared.stdout


def test_bad_lists_are_refused_with_each_line_and_no_value(tmp_path: Path) -> None:
    data = _site(tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_text("1234567890\n")
    result = cli("optout", "import", bad, data=data, expect=2)
    assert "line 1: not a valid NHS number" in result.stderr
    assert "1234567890" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert_one_line_error(cli("optout", "import", bad, "--date", "1/2/2026", data=data,
                              expect=2), "--date")
    consent = tmp_path / "consent.csv"
    consent.write_text(f"nhs_number,status,date\n{ALICE},gone,2026-01-01\n")
    result = cli("consent", "import", consent, data=data, expect=2)
    assert "line 2: status must be one of granted, refused, withdrawn" in result.stderr
    assert ALICE not in result.stderr
    assert cli_json("optout", "list", data=data) == []
