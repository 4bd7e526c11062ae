"""Consent and the National Data Opt-out at every release (``services.consent``, decision
0023), on SQLite and PostgreSQL: opted-out patients are left out where the policy applies the
opt-out, withdrawn patients always; a withdrawal flags what was already shared and keeps it out
of later shares and exports; the manifest records the list version and the consent state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from deidkit import PATIENTS, write_phi_folder
from imagebank.domain.errors import InvalidInputError, NotFoundError
from imagebank.services.archive import Archive
from imagebank.services.consent import (
    ListError,
    import_consents,
    import_optout,
    optout_versions,
)
from imagebank.services.release import ReleaseSpec, run_release
from testkit import REPO, optout_list

POLICIES = REPO / "docs" / "policies"
#: The synthetic patients whose PatientID is a valid NHS number (issuer NHS).
ALICE, CLEM = PATIENTS[0][1], PATIENTS[2][1]
BARNABY = PATIENTS[1][1]  # not a valid NHS number: a local identifier issued by "NHS"


def _world(archive: Archive, tmp_path: Path, policy: str = "leeds.yaml") -> None:
    write_phi_folder(tmp_path / "site-export", patients=3, slices=2)
    archive.create_project("site")
    archive.create_project("lab", zone="research", policy=(POLICIES / policy).read_text())
    assert archive.ingest([tmp_path / "site-export"], "site", workers=1).stored == 6


def _share(archive: Archive, job: str, target: str = "lab") -> dict:
    result = run_release(archive, ReleaseSpec("share", "site", target), job, workers=1)
    assert result["ok"]
    return result


def _manifest(archive: Archive, job: str) -> dict:
    return json.loads((archive.settings.data / "releases" / f"{job}.json").read_text())


def _consents(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / f"consent-{len(list(tmp_path.glob('consent-*')))}.csv"
    path.write_text("nhs_number,patient_id,issuer,project,scope,status,date,source\n"
                    + "\n".join(rows) + "\n")
    return path


def _lab_subjects(archive: Archive) -> dict[str, object]:
    with archive.engine.connect() as conn:
        rows = conn.execute(text("SELECT patient_id, withdrawn_at FROM subjects "
                                 "WHERE project_id = 'lab'"))
        return {str(p): w for p, w in rows}


def test_opted_out_patients_are_left_out_where_the_policy_applies_the_opt_out(
        archive: Archive, tmp_path: Path) -> None:
    _world(archive, tmp_path)
    with pytest.raises(InvalidInputError, match="no opt-out list has been imported"):
        run_release(archive, ReleaseSpec("share", "site", "lab"), "j0", workers=1)
    listed = import_optout(archive, optout_list(tmp_path, (ALICE, "943 476 5870")))
    assert listed["new"] and listed["entries"] == 2
    result = _share(archive, "j1")
    assert result["patients"] == 2 and result["written"] == 4
    consent = _manifest(archive, "j1")["consent"]
    assert consent["national_data_opt_out"]["applies"] is True
    assert consent["national_data_opt_out"]["list"]["version"] == listed["version"]
    assert consent["excluded"] == {"national_data_opt_out": 1}
    assert consent["subjects_considered"] == 3
    # The same people under a policy whose legal basis does not apply the opt-out: all three.
    archive.create_project("open-lab", zone="research",
                           policy=(POLICIES / "oxford.yaml").read_text())
    assert _share(archive, "j2", "open-lab")["patients"] == 3
    assert _manifest(archive, "j2")["consent"]["excluded"] == {}


def test_the_opt_out_list_is_stored_as_keyed_hashes_and_versioned_by_date(
        archive: Archive, tmp_path: Path) -> None:
    archive.create_project("site")
    first = import_optout(archive, optout_list(tmp_path, (ALICE, CLEM)))
    again = import_optout(archive, optout_list(tmp_path, (CLEM, ALICE)))
    assert again["version"] == first["version"] and not again["new"]
    from datetime import date

    older = import_optout(archive, optout_list(tmp_path, (ALICE,)), list_date=date(2020, 1, 1))
    assert older["new"] and older["version"] != first["version"]
    versions = optout_versions(archive)
    assert [v["id"] for v in versions] == [first["version"], older["version"]]
    with archive.engine.connect() as conn:
        stored = " ".join(str(v) for row in conn.execute(text(
            "SELECT * FROM optout_entries")) for v in row)
    assert stored and ALICE not in stored and CLEM not in stored


def test_a_bad_list_is_refused_whole_with_every_problem_by_line(archive: Archive,
                                                                 tmp_path: Path) -> None:
    archive.create_project("site")
    path = tmp_path / "optout.txt"
    path.write_text(f"# list\n{ALICE}\n1234567890\n\n{CLEM}\nnot a number\n")
    with pytest.raises(ListError) as caught:
        import_optout(archive, path)
    assert caught.value.problems == ["line 3: not a valid NHS number",
                                     "line 6: not a valid NHS number"]
    assert "1234567890" not in str(caught.value) and optout_versions(archive) == []
    csv_list = tmp_path / "optout.csv"
    csv_list.write_text(f"nhs_number,date\n{ALICE},2026-01-01\n")
    assert import_optout(archive, csv_list)["entries"] == 1
    with pytest.raises(NotFoundError):
        import_optout(archive, tmp_path / "missing.txt")


def test_a_withdrawal_flags_shared_data_and_keeps_it_out_of_later_releases(
        archive: Archive, tmp_path: Path) -> None:
    _world(archive, tmp_path)
    import_optout(archive, optout_list(tmp_path))
    assert _share(archive, "j1")["patients"] == 3
    assert len(_lab_subjects(archive)) == 3 and not any(_lab_subjects(archive).values())
    withdrawn = import_consents(archive, _consents(
        tmp_path, f"{ALICE},,,lab,research,withdrawn,2026-11-20,Trust consent system"),
        actor="tester")
    assert withdrawn.added == 1 and withdrawn.flagged_research == 1
    assert withdrawn.flagged_site == 0  # withdrawn from "lab" only
    flags = _lab_subjects(archive)
    assert sum(1 for w in flags.values() if w is not None) == 1
    # Later shares leave the patient out; the manifest says why.
    again = _share(archive, "j2")
    assert again["patients"] == 2
    assert _manifest(archive, "j2")["consent"]["excluded"] == {"withdrawn": 1}
    # An export of the research project leaves out the flagged subject too.
    exported = run_release(archive, ReleaseSpec("release", "lab", str(tmp_path / "out")),
                           "j3", workers=1)
    assert exported["ok"] and exported["patients"] == 2
    # Everything was audited: the import and the flag, by subject, never a value.
    with archive.engine.connect() as conn:
        events = conn.execute(text("SELECT actor, action, project_id, level, object_id "
                                   "FROM audit_events WHERE action LIKE 'consent%'")).all()
    actions = sorted(str(e[1]) for e in events)
    assert actions == ["consent_import", "consent_withdrawal_flag"]
    flag = next(e for e in events if e[1] == "consent_withdrawal_flag")
    assert flag[0] == "tester" and flag[2] == "lab" and flag[3] == "subject"
    assert all(ALICE not in " ".join(str(v) for v in e) for e in events)


def test_a_withdrawal_from_all_research_flags_the_site_subject_and_a_grant_clears_it(
        archive: Archive, tmp_path: Path) -> None:
    _world(archive, tmp_path)
    import_optout(archive, optout_list(tmp_path))
    _share(archive, "j1")
    out = import_consents(archive, _consents(tmp_path, f"{CLEM},,,,,withdrawn,2026-11-01,"))
    assert out.flagged_site == 1 and out.flagged_research == 1
    assert _share(archive, "j2")["patients"] == 2
    # A later grant for this project outranks the earlier general withdrawal.
    back = import_consents(archive, _consents(tmp_path, f"{CLEM},,,lab,,granted,2026-11-15,"))
    assert back.cleared == 1  # the research subject; the general withdrawal still holds
    assert _share(archive, "j3")["patients"] == 3


def test_explicit_consent_to_the_project_overrides_the_opt_out(archive: Archive,
                                                                tmp_path: Path) -> None:
    _world(archive, tmp_path)
    import_optout(archive, optout_list(tmp_path, (ALICE, CLEM)))
    assert _share(archive, "j1")["patients"] == 1
    import_consents(archive, _consents(tmp_path, f"{ALICE},,,lab,,granted,2026-10-01,form"))
    assert _share(archive, "j2")["patients"] == 2
    # Consent to all research is not consent to this project: the opt-out still holds.
    import_consents(archive, _consents(tmp_path, f"{CLEM},,,,,granted,2026-10-01,form"))
    assert _share(archive, "j3")["patients"] == 2
    # A refusal is never released, whatever the legal basis; by local identifier and issuer.
    import_consents(archive, _consents(tmp_path, f",{BARNABY},NHS,,,refused,2026-10-02,"))
    assert _share(archive, "j4")["patients"] == 1
    assert _manifest(archive, "j4")["consent"]["excluded"] == {
        "national_data_opt_out": 1, "refused": 1}


def test_a_bad_consent_file_changes_nothing_and_names_every_line(archive: Archive,
                                                                  tmp_path: Path) -> None:
    _world(archive, tmp_path)
    path = _consents(tmp_path, f"{ALICE},,,lab,,withdrawn,2026-11-20,",
                     "1234567890,,,,,granted,2026-01-01,",
                     f"{CLEM},,,,,maybe,2026-01-01,",
                     f"{CLEM},,,,,granted,yesterday,",
                     f"{CLEM},,,nowhere,,granted,2026-01-01,",
                     ",,,,,granted,2026-01-01,")
    with pytest.raises(ListError) as caught:
        import_consents(archive, path)
    assert caught.value.problems == [
        "line 3: nhs_number is not a valid NHS number",
        "line 4: status must be one of granted, refused, withdrawn",
        "line 5: date must be a date, YYYY-MM-DD",
        "line 6: project must be a research project of this archive, or empty for all "
        "research",
        "line 7: no nhs_number or patient_id"]
    message = str(caught.value)
    assert "nothing was changed" in message and CLEM not in message
    with archive.engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM consents")).scalar() == 0
    header = tmp_path / "header.csv"
    header.write_text("nhs,state\n1,2\n")
    with pytest.raises(ListError, match="unknown column 'nhs'"):
        import_consents(archive, header)
