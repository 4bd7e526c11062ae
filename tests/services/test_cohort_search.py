"""services/cohort.py: what a search may show (exact counts and IDs inside a site's project;
suppressed and rounded counts under the policy otherwise), on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import select

from imagebank.domain.cohort import CohortQueryError
from imagebank.domain.errors import NotFoundError, PermissionDeniedError
from imagebank.domain.policy import Policy, Retention
from imagebank.index.tables import Subject
from imagebank.services.archive import Archive
from imagebank.services.cohort import cohort_subject_ids, search
from testkit import make_cohort_world

LEEDS = (Path(__file__).resolve().parents[2] / "docs" / "policies" / "leeds.yaml").read_text()
C34 = "condition[ICD10:C34*]"  # alice, bob, carol, erin, frank: 5 people, 5 studies, 5 series


def _policy(smallest: int, rounding: int) -> Policy:
    return Policy(smallest_count=smallest, national_data_opt_out=True,
                  retention=Retention(project_end=True), count_rounding=rounding)


def _shown(result: object) -> tuple[str, str, str]:
    return (result.people.text, result.studies.text, result.series.text)  # type: ignore[attr-defined]


def test_exact_counts_and_ids_inside_the_site(archive: Archive) -> None:
    world = make_cohort_world(archive)
    result = search(archive, "site", "imaging[modality = CT] and sex = F", exact=True)
    names = {"alice", "carol", "erin"}
    assert set(result.subject_ids) == {world.ids[n] for n in names}
    assert result.subject_ids == sorted(result.subject_ids)
    assert (result.people.value, result.studies.value, result.series.value) == (3, 3, 3)
    assert {r["id"] for r in result.series_rows} == {world.series_of[n][0] for n in names}
    study = result.study_rows[0]
    assert set(study) == {"id", "subject_id", "study_instance_uid", "study_date",
                          "modalities_in_study"}
    assert "patient_id" not in str(result.as_dict()) and "ALICE" not in str(result.as_dict())
    assert not result.truncated
    # a limit lists fewer and says so; limit 0 lists nothing and costs nothing
    short = search(archive, "site", "imaging[modality = CT] and sex = F", exact=True, limit=2)
    assert len(short.subject_ids) == len(short.study_rows) == len(short.series_rows) == 2
    assert short.truncated and short.people.value == 3
    none = search(archive, "site", "imaging[modality = CT] and sex = F", exact=True, limit=0)
    assert none.subject_ids == [] and not none.truncated and none.people.value == 3


def test_counts_outside_the_site_are_suppressed_and_rounded(archive: Archive) -> None:
    make_cohort_world(archive)
    # the default: below 10 is "< 10", no IDs, 0 shown as 0
    result = search(archive, "site", C34)
    assert _shown(result) == ("< 10", "< 10", "< 10")
    assert result.people.suppressed and result.people.value is None
    assert result.subject_ids == [] and result.as_dict()["subjects"] is None
    assert _shown(search(archive, "site", "report[]")) == ("0", "0", "0")
    # a site's policy: smallest 3, rounded to 5 (halves up)
    policy = _policy(3, 5)
    assert _shown(search(archive, "site", C34, policy=policy)) == ("5", "5", "5")
    assert _shown(search(archive, "site", "imaging[modality = MR]", policy=policy)) == (
        "< 3", "< 3", "< 3")  # carol and dave: 2 people
    assert search(archive, "site", "sex = F", policy=policy).people.text == "5"  # 4 people
    everyone = search(archive, "site", "not report[]", policy=_policy(1, 5))
    assert everyone.people.value == 5  # 7 rounds to 5
    shown = search(archive, "site", "observation[] and sex = F", policy=_policy(1, 5))
    assert shown.people.text == "< 5"  # 2 people round to 0: suppressed, never 0
    assert shown.as_dict()["counts"]["people"] == {"count": None, "shown": "< 5",
                                                   "suppressed": True}
    assert shown.as_dict()["smallest_count"] == 1 and shown.as_dict()["rounding"] == 5


def test_a_research_project_counts_under_its_own_policy_and_never_exactly(
        archive: Archive) -> None:
    text = re.sub(r"smallest_count: \d+", "smallest_count: 4", LEEDS) + "count_rounding: 2\n"
    archive.create_project("lab", zone="research", policy=text)
    make_cohort_world(archive, "lab")
    result = search(archive, "lab", C34, policy=_policy(1, 1))  # a caller's policy is ignored
    assert _shown(result) == ("6", "6", "6")  # 5 rounded to a multiple of 2, halves up
    assert (result.smallest_count, result.rounding) == (4, 2)
    assert search(archive, "lab", "imaging[modality = MR]").people.text == "< 4"
    with pytest.raises(PermissionDeniedError, match="research project"):
        search(archive, "lab", C34, exact=True)


def test_a_bad_query_is_refused_before_the_project_is_read(archive: Archive) -> None:
    with pytest.raises(CohortQueryError) as info:
        search(archive, "nosuch", "imaging[modality = CT] and age > 3")
    assert info.value.position == 27
    with pytest.raises(NotFoundError):
        search(archive, "nosuch", "imaging[]")


def test_withdrawn_subjects_are_excluded_when_the_caller_says(archive: Archive) -> None:
    world = make_cohort_world(archive)
    withdrawn = select(Subject.id).where(Subject.id.in_([world.ids["alice"], world.ids["bob"]]))
    result = search(archive, "site", C34, exact=True, exclude=withdrawn)
    assert set(result.subject_ids) == {world.ids[n] for n in ("carol", "erin", "frank")}
    assert result.people.value == 3
    assert cohort_subject_ids(archive, "site", C34, exclude=withdrawn) == sorted(
        result.subject_ids)
    assert len(cohort_subject_ids(archive, "site", C34)) == 5


def test_subjects_flagged_withdrawn_are_never_in_a_cohort(archive: Archive) -> None:
    from datetime import UTC, datetime

    from imagebank.index.consent import set_withdrawn

    world = make_cohort_world(archive)
    with archive.sessions.begin() as session:
        assert set_withdrawn(session, [world.ids["carol"]], datetime.now(UTC)) == 1
    result = search(archive, "site", C34, exact=True)
    assert world.ids["carol"] not in result.subject_ids and result.people.value == 4
    others = select(Subject.id).where(Subject.id == world.ids["alice"])
    assert len(cohort_subject_ids(archive, "site", C34, exclude=others)) == 3
    with archive.sessions.begin() as session:
        assert set_withdrawn(session, [world.ids["carol"]], None) == 1
    assert search(archive, "site", C34, exact=True).people.value == 5


def test_the_audit_detail_holds_the_query_and_what_was_shown(archive: Archive) -> None:
    make_cohort_world(archive)
    result = search(archive, "site", "CONDITION[icd10:C34*] AND sex=F")
    assert result.query == "condition[ICD10:C34*] and sex = F"
    assert result.audit_detail() == {"query": "condition[ICD10:C34*] and sex = F",
                                     "exact": False, "people": "< 10", "studies": "< 10",
                                     "series": "< 10"}
