"""``imagebank clinical import FILE... -p P --mapping MAP.yaml``: CSV and Parquet tables through
a mapping file, with the example mapping from docs/. Synthetic data only."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from clikit import assert_one_line_error, cli, cli_json, run

from testkit import REPO, nhs_numbers

EXAMPLE = REPO / "docs" / "clinical" / "mapping-example.yaml"
HEADER = ["result_id", "nhs_number", "test_code", "test_name", "result", "units",
          "collected", "date_of_birth", "sex"]


def _extract(folder: Path, patients: list[str]) -> Path:
    """A pathology extract as the example mapping describes it (UK dates, semicolons, BOM)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "results.csv"
    with path.open("w", encoding="utf-8-sig", newline="") as out:
        writer = csv.writer(out, delimiter=";")
        writer.writerow(HEADER)
        for i, nhs in enumerate(patients):
            writer.writerow([f"R{i}a", nhs, "4548-4", "HbA1c", f"{6 + i / 10:.1f}", "%",
                             f"0{1 + i}/02/2021 09:30", "14/07/1961", "F"])
            writer.writerow([f"R{i}b", nhs, "2160-0", "Creatinine", "NULL", "umol/L",
                             f"0{1 + i}/02/2021 09:30", "14/07/1961", "F"])
    return path


def test_import_a_csv_and_a_parquet_with_the_example_mapping(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cli("project", "create", "site", data=data)
    patients = nhs_numbers(3)
    source = _extract(tmp_path / "extract", patients)
    result = run("clinical", "import", source, "-p", "site", "--mapping", EXAMPLE, data=data)
    assert "6 facts of 3 patients (6 new; 0 patients linked to subjects already there, 3 new " \
           "subjects)." in " ".join(result.stdout.split())
    stats = cli_json("stats", data=data)
    assert stats["clinical_facts"] == 6 and stats["clinical_facts_by_kind"] == {
        "observation": 6}
    # The same rows as Parquet, with its own row IDs: the same facts, nothing new.
    with source.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    table = pa.table({name: [r[name] for r in rows] for name in HEADER})
    pq.write_table(table, tmp_path / "extract" / "results.parquet")
    lines = [json.loads(line) for line in cli(
        "clinical", "import", tmp_path / "extract" / "results.parquet", "-p", "site",
        "--mapping", EXAMPLE, "--jsonl", data=data).stdout.splitlines()]
    summary = lines[-1]
    assert summary["event"] == "summary"
    assert (summary["facts"], summary["added"], summary["linked"], summary["resources"]) == (
        6, 0, 3, 6)
    assert cli_json("stats", data=data)["clinical_facts"] == 6


def test_bad_rows_exit_1_and_are_named_by_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cli("project", "create", "site", data=data)
    [nhs] = nhs_numbers(1)
    source = _extract(tmp_path / "extract", [nhs])
    with source.open("a", encoding="utf-8", newline="") as out:
        out.write(f"R9;{nhs[:9]}{(int(nhs[9]) + 1) % 10};4548-4;HbA1c;6.1;%;"
                  "02/02/2021 09:30;14/07/1961;F\n")
        out.write(f"R10;{nhs};4548-4;HbA1c;6.1;%;2021-02-02;14/07/1961;F\n")
    result = cli("clinical", "import", source, "-p", "site", "--mapping", EXAMPLE,
                 data=data, expect=1)
    assert f"{source}:4: bad_nhs_number: column nhs_number is not an NHS number" in \
        result.stderr
    assert f"{source}:5: bad_date: column collected is not a date as %d/%m/%Y %H:%M" in \
        result.stderr
    assert "Problems: bad_date 1, bad_nhs_number 1." in result.stdout
    assert nhs[:9] not in result.stderr
    assert cli_json("stats", data=data)["clinical_facts"] == 2


def test_mapping_errors_are_error_lines_and_nothing_is_imported(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cli("project", "create", "site", data=data)
    source = _extract(tmp_path / "extract", nhs_numbers(1))
    typo = tmp_path / "typo.yaml"
    typo.write_text(EXAMPLE.read_text().replace("kind: observation", "kind: observaton"))
    line = assert_one_line_error(cli("clinical", "import", source, "-p", "site", "--mapping",
                                     typo, data=data, expect=2),
                                 "fixed.kind: not a fact kind; expected one of: condition")
    assert line.startswith(f"error: {typo}:")
    typo.write_text(EXAMPLE.read_text().replace("columns:", "colums:", 1))
    result = cli("clinical", "import", source, "-p", "site", "--mapping", typo, data=data,
                 expect=2)
    assert [e.split(": ")[2:4] for e in result.stderr.strip().splitlines()] == [
        ["columns", "missing; expected a mapping of fields to column names"],
        ["colums", "unknown field; did you mean columns? expected one of"]]
    several = tmp_path / "several.yaml"
    several.write_text("version: 1\ncolumns:\n  patient: nhs\nfixed:\n  kind: finding\n")
    result = cli("clinical", "import", source, "-p", "site", "--mapping", several, data=data,
                 expect=2)
    errors = result.stderr.strip().splitlines()
    assert all(e.startswith(f"error: {several}:") for e in errors)
    assert [e.split(": ")[2] for e in errors] == ["columns.issuer", "columns.code",
                                                  "columns.system", "columns.date",
                                                  "fixed.kind"]
    assert_one_line_error(cli("clinical", "import", source, "-p", "site", "--mapping",
                              tmp_path / "none.yaml", data=data, expect=2), "no such file")
    assert_one_line_error(cli("clinical", "import", source, "-p", "site", "--mapping",
                              EXAMPLE, "--strict", data=data, expect=2), "--strict")
    assert cli_json("stats", data=data)["clinical_facts"] == 0
