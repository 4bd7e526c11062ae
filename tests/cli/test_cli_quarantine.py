"""``imagebank quarantine --retry ID / --discard ID`` (decision 0030): the listing works as
before; a retry exits 0 when the item is archived and 1 when it is refused again; both are
audited; unknown items are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

from clikit import assert_one_line_error, cli, cli_json, run

from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
from imagebank.services.archive import Archive


def _conflicting_pair(folder: Path) -> tuple[Path, Path]:
    """Two files with one SOPInstanceUID and different bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = SeriesSpec(modality="CT", slices=1, rows=8, columns=8)
    ds = next(iter(make_study(SyntheticPatient.make(7), series=[spec])))
    first = folder / "first.dcm"
    first.write_bytes(to_bytes(ds))
    ds.SeriesDescription = "reprocessed"
    second = folder / "second.dcm"
    second.write_bytes(to_bytes(ds))
    return first, second


def test_retry_and_discard_from_the_command_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first, second = _conflicting_pair(tmp_path / "in")
    junk = tmp_path / "in" / "notes.txt"
    junk.write_text("not an image")
    cli("project", "create", "p", data=data)
    cli("ingest", first, "--project", "p", data=data)
    cli("ingest", second, junk, "--project", "p", data=data, expect=1)
    listed = {q["reason"]: q for q in cli_json("quarantine", "--project", "p", data=data)}
    assert sorted(listed) == ["conflict", "not_dicom"]
    conflict, text = listed["conflict"]["id"], listed["not_dicom"]["id"]

    # Refused again: exit 1, the reason said, the item still listed.
    again = cli("quarantine", "--retry", conflict, data=data, expect=1)
    assert f"{conflict}: refused again (conflict)" in again.stdout
    assert len(cli_json("quarantine", data=data)) == 2

    # The cause fixed (the first copy lost, its row dropped by repair): archived, exit 0.
    with Archive.open(data) as archive:
        archive.store.delete(archive.get("instance", listed["conflict"]["instance_id"])
                             ["object_key"])
    cli("check", "--repair", data=data)
    stored = cli_json("quarantine", "--project", "p", "--retry", conflict, data=data)
    assert [(r["action"], r["item_id"], r["outcome"], r["archived"]) for r in stored] == [
        ("retry", conflict, "stored", True)]
    assert stored[0]["study_id"]

    done = cli("quarantine", "--discard", text, data=data)
    assert done.stdout.strip() == f"{text}: discarded with its bytes."
    assert cli_json("quarantine", data=data) == []
    assert json.loads(cli("stats", "--json", data=data).stdout)["quarantined"] == 0
    cli("check", data=data)  # exit 0: the index and the store agree

    actions = [(e["action"], e["object_id"], e["project_id"])
               for e in cli_json("audit", "ls", data=data) if e["level"] == "quarantine"]
    assert actions == [("quarantine_retry", conflict, "p"), ("quarantine_retry", conflict, "p"),
                       ("quarantine_discard", text, "p")]


def test_unknown_items_and_other_projects_are_one_line_errors(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cli("project", "create", "p", data=data)
    cli("project", "create", "q", data=data)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"junk")
    cli("ingest", junk, "--project", "q", data=data, expect=1)
    (item,) = [q["id"] for q in cli_json("quarantine", data=data)]
    result = run("quarantine", "--project", "p", "--discard", item, data=data, expect=2)
    assert_one_line_error(result, f"No quarantine item {item} in project 'p'.")
    result = run("quarantine", "--retry", "0" * 32, data=data, expect=2)
    assert_one_line_error(result, "No quarantine item")
    assert [q["id"] for q in cli_json("quarantine", data=data)] == [item]
