"""``imagebank policy show|harmonise|diff`` on the example policies and on broken files:
normalised output that reads back, provenance comments, JSON for machines, and one line per
problem (exit 2) when a file is invalid."""

from __future__ import annotations

import json
import re
from pathlib import Path

from clikit import assert_one_line_error, cli, run

from imagebank.domain.policy import merge
from imagebank.services.policies import load_policy, parse_policy, policy_document

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "policies"
LEEDS, MANCHESTER, OXFORD = (EXAMPLES / f"{n}.yaml" for n in ("leeds", "manchester", "oxford"))
MINIMAL = "version: 1\nsmallest_count: 10\nnational_data_opt_out: true\nretention: 3650\n"


def test_show_prints_the_normalised_policy(tmp_path: Path) -> None:
    result = run("policy", "show", LEEDS)  # the real console script
    assert parse_policy(result.stdout) == load_policy(LEEDS)
    assert result.stdout.startswith(f"# {LEEDS}: valid\n")
    assert '  - creator: "SIEMENS MR HEADER"\n    element: "0x0C"' in result.stdout
    as_json = json.loads(cli("policy", "show", LEEDS, "--json").stdout)
    assert as_json == policy_document(load_policy(LEEDS))
    assert as_json["retention"] == {"days": 3650, "project_end": False}


def test_show_refuses_an_invalid_policy_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "site.yaml"
    bad.write_text(MINIMAL.replace("10", "0"))
    line = assert_one_line_error(run("policy", "show", bad, expect=None),
                                 f"{bad}:2: smallest_count: 0 is out of range; expected")
    assert "Traceback" not in line
    assert_one_line_error(cli("policy", "show", tmp_path / "nope.yaml", expect=None),
                          "nope.yaml: no such file")


def test_show_lists_every_problem_one_line_each(tmp_path: Path) -> None:
    bad = tmp_path / "site.yaml"
    bad.write_text("version: 1\nsmallest_count: 0\nsmalest_count: 5\nmasking:\n"
                   "  - {manufacturer: GE, model: E9, rectangles: [{x: 0, y: 0, width: -3, "
                   "height: 4}]}\nnational_data_opt_out: yes\nretention: forever\n")
    result = cli("policy", "show", bad, expect=2)
    lines = result.stderr.strip().splitlines()
    assert result.stdout == ""
    assert [re.sub(r"^error: [^:]+:\d+: ([^:]+):.*", r"\1", x) for x in lines] == [
        "smallest_count", "smalest_count", "masking[0].rectangles[0].width", "retention"]
    assert all(x.startswith("error: ") for x in lines)


def test_harmonise_prints_the_merged_policy_with_its_provenance(tmp_path: Path) -> None:
    out = tmp_path / "project.yaml"
    result = cli("policy", "harmonise", LEEDS, MANCHESTER, OXFORD, "--output", out)
    merged = merge(load_policy(p) for p in (LEEDS, MANCHESTER, OXFORD))
    assert parse_policy(result.stdout) == merged
    assert out.read_text() == result.stdout and load_policy(out) == merged
    text = result.stdout
    assert f"#   leeds: {LEEDS} (Leeds Teaching Hospitals NHS Trust, RR8)" in text
    assert "smallest_count: 10  # set by leeds (others: manchester 8, oxford 5)" in text
    assert "national_data_opt_out: true  # applied by leeds, manchester" in text
    assert "  days: 1825  # set by oxford (others: leeds 3650, manchester none)" in text
    assert "  project_end: true  # set by manchester, oxford" in text
    assert "#   - retain_long_full_dates  # not allowed by leeds, oxford" in text
    assert "#   - retain_uids  # no site allows it" in text
    assert "#   - SIEMENS MR HEADER 0x0E  # not listed by manchester" in text
    assert "{x: 824, y: 700, width: 200, height: 68}  # from manchester" in text
    assert "review_date: 2025-12-31  # set by manchester" in text


def test_harmonise_json(tmp_path: Path) -> None:
    doc = json.loads(cli("policy", "harmonise", LEEDS, OXFORD, "--json").stdout)
    assert doc["policy"] == policy_document(merge([load_policy(LEEDS), load_policy(OXFORD)]))
    assert [s["label"] for s in doc["sites"]] == ["leeds", "oxford"]
    prov = doc["provenance"]
    assert prov["smallest_count"] == {"value": 10, "set_by": ["leeds"]}
    assert prov["national_data_opt_out"] == {"value": True, "set_by": ["leeds"]}
    graphics = next(o for o in prov["allowed_options"] if o["option"] == "clean_graphics")
    assert graphics == {"option": "clean_graphics", "allowed": False,
                        "not_allowed_by": ["leeds"]}
    philips = next(e for e in prov["safe_private"] if e["creator"].startswith("Philips"))
    assert philips["kept"] is False and philips["not_listed_by"] == ["oxford"]


def test_harmonise_reports_every_files_problems(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(MINIMAL.replace("3650", "0"))
    (tmp_path / "b.yaml").write_text(MINIMAL + "colour: blue\n")
    result = cli("policy", "harmonise", tmp_path / "a.yaml", tmp_path / "b.yaml", LEEDS,
                 "--output", tmp_path / "out.yaml", expect=2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert "a.yaml:4: retention:" in lines[0] and "b.yaml:5: colour: unknown field" in lines[1]
    assert not (tmp_path / "out.yaml").exists()


def test_diff(tmp_path: Path) -> None:
    same = cli("policy", "diff", LEEDS, LEEDS)
    assert "allow the same" in same.stdout
    result = cli("policy", "diff", LEEDS, OXFORD, expect=1)
    for words in ("clean_graphics", "counts from 5 to 9 shown", "opted-out patients included",
                  "Philips MR Imaging DD 001 0x0E"):
        assert words in result.stdout
    doc = json.loads(cli("policy", "diff", LEEDS, OXFORD, "--json", expect=1).stdout)
    assert {"rule": "allowed_options", "detail": "clean_graphics"} in doc["b_allows"]
    assert {"rule": "safe_private", "detail": "Philips MR Imaging DD 001 0x0E"} in doc[
        "a_allows"]
    assert doc["same"] is False
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\n")
    assert len(cli("policy", "diff", bad, LEEDS, expect=2).stderr.strip().splitlines()) == 3
