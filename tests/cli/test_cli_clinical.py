"""``imagebank clinical import``: the real console script on the synthea FHIR data."""

from __future__ import annotations

import json
from pathlib import Path

from clikit import assert_one_line_error, cli, cli_json, run

from testkit import SHARED_DATA

BUNDLES = SHARED_DATA / "synthea-fhir-r4"
NDJSON = SHARED_DATA / "synthea-bulk-ndjson-10"


def test_import_prints_its_counts_and_stats_add_the_facts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cli("project", "create", "site", data=data)
    result = run("clinical", "import", BUNDLES, NDJSON, "-p", "site", data=data)
    assert "facts of 19 patients" in result.stdout and "19 new subjects" in result.stdout
    stats = cli_json("stats", data=data)
    assert stats["clinical_facts"] == sum(stats["clinical_facts_by_kind"].values()) > 4000
    lines = [json.loads(line) for line in cli("clinical", "import", BUNDLES, "-p", "site",
                                               "--jsonl", data=data).stdout.splitlines()]
    summary = lines[-1]
    assert summary["event"] == "summary" and summary["added"] == 0
    assert summary["linked"] == summary["patients"] == 6
    assert all(line["event"] == "progress" for line in lines[:-1])


def test_refusals_are_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cli("project", "create", "site", data=data)
    assert_one_line_error(cli("clinical", "import", tmp_path / "missing", "-p", "site",
                              data=data, expect=2), "Nothing to import")
    assert_one_line_error(cli("clinical", "import", BUNDLES, "-p", "nosuch", data=data,
                              expect=2), "nosuch")


def test_a_broken_file_is_a_problem_and_exit_1(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cli("project", "create", "site", data=data)
    broken = tmp_path / "Condition.000.ndjson"
    broken.write_text('{"resourceType": "Condition", "id": \n')
    result = cli("clinical", "import", broken, "-p", "site", data=data, expect=1)
    assert "not_json" in result.stdout
