"""``imagebank cohort`` and ``imagebank codes import``: counts, IDs, refusals, the caret under
a parse error, the audit; and the examples of the language on real ingested DICOM and FHIR."""

from __future__ import annotations

import json
import re
from pathlib import Path

from clikit import Result, assert_one_line_error, cli, cli_json, run

from imagebank.services.archive import Archive
from testkit import SHARED_DATA, make_cohort_world, write_study

LEEDS = Path(__file__).resolve().parents[2] / "docs" / "policies" / "leeds.yaml"
C34_CT = "condition[ICD10:C34*] within 90 days before imaging[modality = CT]"


def _world(data: Path) -> dict[str, str]:
    with Archive.open(data) as archive:
        return make_cohort_world(archive).ids


def assert_pointed_error(result: Result, position: int, *words: str) -> str:
    """Exit status 2 and three lines on stderr: ``error: ...`` with ``words``, then the query
    and a caret under ``position`` (both indented by two spaces)."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.rstrip("\n").splitlines()
    assert len(lines) == 3, result.stderr
    assert lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0], lines[0]
    assert lines[2] == "  " + " " * position + "^", lines
    return lines[1][2:]


def test_counts_ids_and_json(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ids = _world(data)
    result = cli("cohort", C34_CT, "-p", "site", data=data)
    assert "< 10 people, < 10 studies, < 10 series" in result.stdout
    assert "shown as '< 10'" in result.stdout
    result = cli("cohort", C34_CT, "-p", "site", "--exact", data=data)
    assert "2 people, 2 studies, 2 series (exact)." in result.stdout
    assert ids["alice"] not in result.stdout  # --exact alone lists nothing
    listed = cli("cohort", C34_CT, "-p", "site", "--ids", data=data).stdout
    assert ids["alice"] in listed and ids["carol"] in listed and ids["bob"] not in listed
    assert "StudyInstanceUID" in listed
    as_json = cli_json("cohort", C34_CT, "-p", "site", "--ids", data=data)
    assert as_json["counts"]["people"] == {"count": 2, "shown": "2", "suppressed": False}
    assert sorted(as_json["subjects"]) == sorted([ids["alice"], ids["carol"]])
    assert as_json["query"] == C34_CT and as_json["exact"] is True
    suppressed = cli_json("cohort", C34_CT, "-p", "site", data=data)
    assert suppressed["subjects"] is None and suppressed["counts"]["series"]["shown"] == "< 10"


def test_a_sites_policy_file_sets_the_suppression(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _world(data)
    policy = tmp_path / "site.yaml"
    policy.write_text(re.sub(r"smallest_count: \d+", "smallest_count: 2", LEEDS.read_text())
                      + "count_rounding: 5\n")
    shown = cli_json("cohort", "sex = F", "-p", "site", "--policy", policy, data=data)
    assert shown["counts"]["people"]["shown"] == "5" and shown["rounding"] == 5  # 4 people
    out = cli("cohort", "sex = F", "-p", "site", "--policy", policy, data=data).stdout
    assert "5 people" in out and "rounded to 5" in out


def test_a_parse_error_shows_the_query_with_a_caret(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _world(data)
    query = "imaging[modalty = CT] and sex = F"
    shown = assert_pointed_error(cli("cohort", query, "-p", "site", data=data, expect=2), 8,
                                 "Unknown field 'modalty'", "Did you mean 'modality'?")
    assert shown == query
    assert_pointed_error(cli("cohort", "age > 50", "-p", "site", data=data, expect=2), 0,
                         "exists only inside imaging[...]")
    # rich markup in a query is text, on the real console script too
    result = run("cohort", "[bold]x", "-p", "site", data=data, expect=2)
    assert assert_pointed_error(result, 0, "Expected an event") == "[bold]x"


def test_refusals_are_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _world(data)
    cli("project", "create", "lab", "--research", "--policy", LEEDS, data=data)
    assert_one_line_error(cli("cohort", "imaging[]", "-p", "lab", "--exact", data=data,
                              expect=2), "research project")
    assert_one_line_error(cli("cohort", "imaging[]", "-p", "lab", "--ids", data=data,
                              expect=2), "research project")
    assert_one_line_error(cli("cohort", "imaging[]", "-p", "lab", "--policy", LEEDS, data=data,
                              expect=2), "its own policy")
    assert cli_json("cohort", "imaging[]", "-p", "lab", data=data)["counts"]["people"][
        "shown"] == "0"
    assert_one_line_error(cli("cohort", "imaging[]", "-p", "nosuch", data=data, expect=2),
                          "nosuch")


def test_every_search_is_audited_with_its_query_and_what_was_shown(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _world(data)
    cli("cohort", C34_CT, "-p", "site", data=data)
    cli("cohort", C34_CT, "-p", "site", "--exact", data=data)
    events = [e for e in cli_json("audit", "ls", "--project", "site", data=data)
              if e["action"] == "cohort_search"]
    assert len(events) == 2
    details = [json.loads(e["detail"]) for e in events]
    assert details[0] == {"query": C34_CT, "exact": False, "people": "< 10",
                          "studies": "< 10", "series": "< 10"}
    assert details[1]["exact"] is True and details[1]["people"] == "2"
    assert all(e["via"] == "cli" and e["actor"] for e in events)


def test_codes_import_csv_and_rf2_idempotent(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ids = _world(data)  # its DMD tree: 456 is-a 123, 789 is-a 456
    edges = tmp_path / "snomed.csv"
    edges.write_text("child,parent\n111,100\n222,111\n")
    first = cli_json("codes", "import", edges, "--system", "snomed", data=data)
    assert first == {"system": "SNOMED", "format": "csv", "rows": 2, "relations": 2,
                     "added": 2, "removed": 0, "problems": 0}
    assert cli_json("codes", "import", edges, "--system", "SNOMED", data=data)["added"] == 0
    rf2 = tmp_path / "sct2_Relationship_Full_INT_20240101.txt"
    header = ("id\teffectiveTime\tactive\tmoduleId\tsourceId\tdestinationId\t"
              "relationshipGroup\ttypeId\tcharacteristicTypeId\tmodifierId\n")
    rows = [  # id, time, active, child, parent, type
        ("1", "20200101", "1", "333", "222", "116680003"),
        ("2", "20200101", "1", "444", "222", "116680003"),
        ("2", "20230101", "0", "444", "222", "116680003"),  # retired later
        ("3", "20200101", "1", "555", "222", "363698007"),  # not is-a
        ("4", "20230101", "0", "222", "111", "116680003"),  # 222 -> 111 retired
    ]
    rf2.write_text(header + "".join(
        f"{i}\t{t}\t{a}\t900000000000207008\t{c}\t{p}\t0\t{k}\t900000000000011006\t"
        f"900000000000451002\n" for i, t, a, c, p, k in rows) + "broken line\n")
    result = cli("codes", "import", rf2, "--system", "SNOMED", "--json", data=data, expect=1)
    summary = json.loads(result.stdout)
    assert summary == {"system": "SNOMED", "format": "rf2", "rows": 6, "relations": 1,
                       "added": 1, "removed": 1, "problems": 1}
    assert f"{rf2}:7" in result.stderr
    # the tree is what the file says: 100 > 111 (222 no longer below it) ; 222 > 333
    with Archive.open(data) as archive:
        world = make_cohort_world(archive, "other")
        world.subject("zed", "M", "19700101")
        world.fact("zed", "condition", "SNOMED", "333", None)
        world.flush()
    assert cli_json("cohort", "condition[SNOMED:<<222]", "-p", "other", "--exact",
                    data=data)["counts"]["people"]["count"] == 1
    assert cli_json("cohort", "condition[SNOMED:<<100]", "-p", "other", "--exact",
                    data=data)["counts"]["people"]["count"] == 0
    assert ids
    assert_one_line_error(cli("codes", "import", edges, "--system", "NOPE", data=data,
                              expect=2), "Unknown code system")
    assert_one_line_error(cli("codes", "import", rf2, "--system", "DMD", data=data,
                              expect=2), "--system SNOMED")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    assert_one_line_error(cli("codes", "import", bad, "--system", "DMD", data=data,
                              expect=2), "child,parent")
    assert_one_line_error(cli("codes", "import", tmp_path / "missing.csv", "--system", "DMD",
                              data=data, expect=2), "Nothing to import")


def test_the_examples_run_on_ingested_dicom_and_fhir(tmp_path: Path) -> None:
    """The language's examples on data that came in the real ways: synthetic DICOM ingested,
    synthea FHIR imported (none of its patients has the DICOM's identifiers, so the
    relations find nobody; each query must still parse and run)."""
    data = tmp_path / "data"
    cli("project", "create", "site", data=data)
    for patient in range(3):
        write_study(tmp_path / "in", patient, modality="CT" if patient < 2 else "MR")
    cli("ingest", tmp_path / "in", "-p", "site", data=data)
    cli("clinical", "import", SHARED_DATA / "synthea-fhir-r4", "-p", "site", data=data)
    examples = {
        "condition[ICD10:C34*] within 90 days before imaging[modality = CT, "
        "body_part = CHEST]": 0,
        "condition[ICD10:C34*] within 90 days before imaging[modality=CT] and "
        "observation[LOINC:718-7, value between 8 and 12] and sex = F": 0,
        "imaging[modality = MR, field_strength >= 3, age >= 50] and not "
        "medication[DMD:<<123]": None,
        "imaging[modality = CT, body_part = CHEST, slice_thickness = 1.25]": 2,
        "observation[LOINC:2*]": None,
        "imaging[] or condition[]": None,
    }
    for query, expected in examples.items():
        counts = cli_json("cohort", query, "-p", "site", "--exact", data=data)["counts"]
        if expected is not None:
            assert counts["people"]["count"] == expected, query
    everyone = cli_json("cohort", "imaging[] or observation[]", "-p", "site", "--exact",
                        data=data)["counts"]["people"]["count"]
    assert everyone == 3 + 6  # 3 DICOM patients, 6 synthea patients
