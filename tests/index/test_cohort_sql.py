"""index/cohort.py: what each part of the cohort language matches, on SQLite and PostgreSQL,
in the hand-built world of ``testkit.make_cohort_world`` (boundary days 0 and N, dates
missing, descendants, prefixes, age at scan, acquisition parameters)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from imagebank.domain.cohort import parse
from imagebank.index.cohort import compile_query, count_cohort, list_cohort
from imagebank.index.tables import Subject
from imagebank.services.archive import Archive
from testkit import CohortWorld, make_cohort_world

C34_CT = "condition[ICD10:C34*] {} imaging[modality = CT]"
EVERYONE = {"alice", "bob", "carol", "dave", "erin", "frank", "gina"}

CASES: list[tuple[str, set[str]]] = [
    # -- time relations: boundary days 0 and N; a fact's time of day does not matter
    (C34_CT.format("within 90 days before"), {"alice", "carol"}),
    (C34_CT.format("within 89 days before"), {"carol"}),
    (C34_CT.format("within 91 days before"), {"alice", "bob", "carol"}),
    (C34_CT.format("within 0 days before"), {"carol"}),
    (C34_CT.format("within 3 months before"), {"alice", "carol"}),
    (C34_CT.format("within 13 weeks before"), {"alice", "bob", "carol"}),
    (C34_CT.format("within 30 days after"), {"carol", "erin"}),
    (C34_CT.format("within 29 days after"), {"carol"}),
    (C34_CT.format("within 30 days of"), {"carol", "erin"}),
    (C34_CT.format("within 1 year of"), {"alice", "bob", "carol", "erin"}),
    (C34_CT.format("before"), {"alice", "bob"}),
    (C34_CT.format("after"), {"erin"}),
    ("imaging[modality = CT] within 90 days after condition[ICD10:C34*]", {"alice", "carol"}),
    ("imaging[modality = CT] within 90 days before condition[ICD10:C34*]", {"carol", "erin"}),
    ("imaging[modality = CT] before imaging[modality = MR]", {"carol"}),
    ("imaging[modality = CT] within 0 days of imaging[modality = MR]", {"dave"}),
    ("medication[] within 1 day after condition[]", {"erin"}),
    # -- events alone: dates are not needed
    ("condition[ICD10:C34*]", {"alice", "bob", "carol", "erin", "frank"}),
    ("condition[ICD10:C34]", {"bob", "erin", "frank"}),
    ("condition[ICD10:C3*]", {"alice", "bob", "carol", "erin", "frank"}),
    ("condition[ICD10:C34.*]", {"alice", "erin"}),
    ("condition[icd10:c34*]", set()),  # the system's name in any case; codes exactly
    ("condition[code in (ICD10:C50, ICD10:C34.9)]", {"dave", "erin"}),
    ("condition[code != ICD10:C34*]", {"bob", "dave"}),
    ("condition[]", {"alice", "bob", "carol", "dave", "erin", "frank"}),
    ("report[]", set()),
    ("imaging[]", {"alice", "bob", "carol", "dave", "erin", "frank"}),
    # -- descendants through code_relations
    ("medication[DMD:<<123]", {"carol", "dave", "erin"}),
    ("medication[DMD:<<456]", {"carol", "erin"}),
    ("medication[DMD:<<789]", {"erin"}),
    ("medication[DMD:123]", {"dave"}),
    ("medication[SNOMED:<<123]", set()),  # another system's tree
    ("not medication[DMD:<<123]", {"alice", "bob", "frank", "gina"}),
    # -- values, units, statuses, dates of facts
    ("observation[LOINC:718-7, value between 8 and 12]", {"alice", "gina"}),
    ("observation[LOINC:718-7, value > 8]", {"alice", "bob"}),
    ("observation[LOINC:718-7, value >= 8, value < 13]", {"alice", "gina"}),
    ("observation[value in (10, 13)]", {"alice", "bob"}),
    ("observation[value != 10]", {"bob", "gina"}),
    ("observation[value = SNOMED:260385009]", {"gina"}),
    ("observation[value = SNOMED:2603*]", {"gina"}),
    ("observation[unit = 'g/dL']", {"alice", "bob", "gina"}),
    ("observation[unit = 'G/DL']", set()),
    ("condition[status = ACTIVE]", {"alice", "bob"}),
    ("condition[status = act*]", {"alice", "bob"}),
    ("condition[status != active]", set()),  # an empty status is not "other than active"
    ("condition[date = 2020-01-01]", {"alice", "bob", "dave"}),
    ("condition[date > 2020-01-01]", {"carol", "erin"}),
    ("condition[date <= 2020-01-01]", {"alice", "bob", "dave"}),
    ("condition[date < 2020-01-01]", set()),
    ("condition[date between 2020-01-02 and 2020-05-01]", {"carol"}),
    ("condition[date in (2020-05-01, 2020-06-01)]", {"carol", "erin"}),
    ("condition[date != 2020-01-01]", {"carol", "erin"}),
    # -- imaging: text case-insensitive with wildcards, numbers, study dates, age
    ("imaging[modality = ct, body_part = chest]", {"alice", "bob", "dave", "erin", "frank"}),
    ("imaging[body_part in (ABDOMEN, head)]", {"carol", "dave"}),
    ("imaging[series_description = '*mprage*']", {"carol"}),
    ("imaging[series_description = 'axial*']", {"alice", "bob", "carol", "dave", "erin",
                                                "frank"}),
    ("imaging[protocol = BRAIN_ROUTINE]", {"carol"}),
    ("imaging[study_description = 'ct chest']", {"alice"}),
    ("imaging[manufacturer = siemens]", {"dave"}),
    ("imaging[modality != CT]", {"carol", "dave"}),
    ("imaging[field_strength >= 3]", {"carol"}),
    ("imaging[modality = MR, field_strength < 3]", {"dave"}),
    ("imaging[date between 2020-03-31 and 2020-04-01]", {"alice", "bob"}),
    ("imaging[date = 2020-05-01]", {"carol"}),
    ("imaging[date < 2020-01-11]", {"dave"}),
    ("imaging[age >= 50]", {"alice", "bob", "carol"}),
    ("imaging[age = 49]", {"carol"}),  # born 1970-12-31, scanned 2020-05-01
    ("imaging[age = 50, modality = MR]", {"carol"}),  # scanned 2021-01-01
    ("imaging[age < 31]", {"erin"}),  # born 1990-02-28, scanned 2020-05-02: 30
    ("imaging[age between 0 and 200]", {"alice", "bob", "carol", "dave", "erin"}),
    ("imaging[modality = MR, field_strength >= 3, age >= 50] and not medication[DMD:<<123]",
     set()),
    ("imaging[modality = MR, age >= 40] and not medication[DMD:<<456]", {"dave"}),
    # -- acquisition parameters: one instance satisfies them all
    ("imaging[kvp = 120]", {"alice", "bob"}),
    ("imaging[kvp = 100, slice_thickness = 5]", {"alice"}),
    ("imaging[kvp = 120, slice_thickness = 5]", set()),
    ("imaging[slice_thickness <= 2.5, kvp >= 120]", {"alice", "bob"}),
    ("imaging[convolution_kernel = b70*]", {"alice"}),
    # -- the subject; and, or, not
    ("sex = F", {"alice", "carol", "erin", "gina"}),
    ("sex = female", {"alice", "carol", "erin", "gina"}),
    ("sex != F", {"bob", "dave"}),
    ("sex in (M, U)", {"bob", "dave"}),
    ("not sex = F", {"bob", "dave", "frank"}),
    ("not condition[]", {"gina"}),
    ("not not condition[]", EVERYONE - {"gina"}),
    ("condition[ICD10:C50] or medication[DMD:456]", {"carol", "dave"}),
    ("condition[ICD10:C34*] and sex = M", {"bob"}),
    ("condition[ICD10:C34*] and not imaging[modality = MR]", {"alice", "bob", "erin", "frank"}),
    ("not imaging[] and not condition[]", {"gina"}),
    ("(observation[] or medication[]) and sex = F", {"alice", "carol", "erin", "gina"}),
    ("observation[] or medication[] and sex = F", {"alice", "bob", "carol", "erin", "gina"}),
    ("not (condition[] or observation[])", set()),
    ("sex = F and not (imaging[] or medication[])", {"gina"}),
    (C34_CT.format("within 90 days before")
     + " and observation[LOINC:718-7, value between 8 and 12] and sex = F", {"alice"}),
]


@pytest.fixture
def world(archive: Archive) -> Iterator[CohortWorld]:
    yield make_cohort_world(archive)


def _names(world: CohortWorld, ids: list[str]) -> set[str]:
    by_id = {v: k for k, v in world.ids.items()}
    return {by_id[i] for i in ids}


def _run(world: CohortWorld, text: str, **options: object
         ) -> tuple[set[str], tuple[int, int, int], list[dict[str, object]]]:
    archive: Archive = world.archive  # type: ignore[assignment]
    with archive.sessions.begin() as session:
        compiled = compile_query(parse(text), world.project,
                                 session.get_bind().dialect.name, **options)  # type: ignore[arg-type]
        counts = count_cohort(session, compiled)
        subjects, _studies, series = list_cohort(session, compiled, limit=1000)
    return _names(world, subjects), counts, series


def test_every_case_matches_exactly_its_subjects(world: CohortWorld) -> None:
    wrong = {}
    for text, expected in CASES:
        found, counts, _ = _run(world, text)
        if found != expected or counts[0] != len(expected):
            wrong[text] = (sorted(found), counts[0], sorted(expected))
    assert not wrong, wrong


def test_series_are_those_of_the_positive_imaging_events(world: CohortWorld) -> None:
    found, counts, series = _run(world, C34_CT.format("within 90 days before"))
    assert found == {"alice", "carol"}
    # carol's MR does not satisfy the imaging event; her CT (same day) does
    assert {s["id"] for s in series} == {world.series_of["alice"][0],
                                         world.series_of["carol"][0]}
    assert counts == (2, 2, 2)
    # in a relation, only the series that satisfy it: bob's CT is 91 days after
    found, counts, series = _run(world, C34_CT.format("within 91 days before") + " and sex = M")
    assert found == {"bob"} and counts == (1, 1, 1)
    # the imaging event second in the relation, and first
    found, counts, series = _run(
        world, "imaging[modality = CT] before imaging[modality = MR]")
    assert {s["id"] for s in series} == set(world.series_of["carol"])
    assert counts == (1, 2, 2)


def test_without_a_positive_imaging_event_every_series_of_the_subjects(
        world: CohortWorld) -> None:
    found, counts, series = _run(world, "condition[ICD10:C50]")
    assert found == {"dave"}
    assert {s["id"] for s in series} == set(world.series_of["dave"]) and counts == (1, 1, 2)
    # a negated imaging event is no positive one
    found, counts, series = _run(world, "condition[ICD10:C34*] and not imaging[modality = MR]")
    assert {s["id"] for s in series} == {
        s for name in ("alice", "bob", "erin", "frank") for s in world.series_of[name]}
    assert counts == (4, 4, 4)
    found, counts, series = _run(world, "observation[unit = 'g/dL'] and not condition[]")
    assert found == {"gina"} and counts == (1, 0, 0) and series == []


def test_an_exclusion_keeps_subjects_out_of_every_result(world: CohortWorld) -> None:
    withdrawn = select(Subject.id).where(Subject.id == world.ids["alice"])
    found, counts, series = _run(world, "imaging[modality = CT]", exclude=withdrawn)
    assert found == {"bob", "carol", "dave", "erin", "frank"}
    assert counts[0] == 5 and world.series_of["alice"][0] not in {s["id"] for s in series}
    found, counts, _ = _run(world, "not report[]", exclude=withdrawn)
    assert found == EVERYONE - {"alice"} and counts[0] == 6


def test_another_projects_data_is_never_matched(world: CohortWorld) -> None:
    other = make_cohort_world(world.archive, "other")
    found, _, _ = _run(world, "condition[ICD10:C34*]")
    assert found == {"alice", "bob", "carol", "erin", "frank"}
    assert not set(other.ids.values()) & set(world.ids.values())
    found, counts, series = _run(other, "imaging[modality = MR] or sex = M")
    assert found == {"bob", "carol", "dave"} and counts[0] == 3
    assert {s["id"] for s in series} <= {s for ids in other.series_of.values() for s in ids}


def test_a_prefix_or_wildcard_matches_percent_and_underscore_literally(
        world: CohortWorld) -> None:
    world.subject("hank", "M", "19700101")
    world.fact("hank", "condition", "ICD10", "X_1", None)
    world.fact("hank", "procedure", "SNOMED", "Y%1", None)
    world.study("hank", "20200101", {"modality": "OT", "series_description": "50%_dose"})
    world.subject("ivy", "F", "19700101")
    world.fact("ivy", "condition", "ICD10", "XA1", None)
    world.fact("ivy", "procedure", "SNOMED", "YB1", None)
    world.study("ivy", "20200101", {"modality": "OT", "series_description": "50XYdose"})
    world.flush()
    assert _run(world, "condition[ICD10:X_*]")[0] == {"hank"}
    assert _run(world, "condition[ICD10:X*]")[0] == {"hank", "ivy"}
    assert _run(world, "procedure[SNOMED:'Y%'*]")[0] == {"hank"}
    assert _run(world, "imaging[series_description = '50%_*']")[0] == {"hank"}
    assert _run(world, "imaging[series_description = '50*dose']")[0] == {"hank", "ivy"}
