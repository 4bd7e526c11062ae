"""The DICOM query service (C-FIND and QIDO-RS share it), on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
import pytest

from imagebank.domain.errors import InvalidInputError
from imagebank.domain.model import Level
from imagebank.services.archive import Archive
from imagebank.services.query import Queries, keyword_of
from testkit import write_study


def _value(match: dict[str, Any], keyword: str) -> Any:
    element = match.get(f"{pydicom.datadict.tag_for_keyword(keyword):08X}", {})
    values = element.get("Value") or [None]
    value = values[0]
    return value["Alphabetic"] if isinstance(value, dict) else value


@pytest.fixture
def filled(archive: Archive, tmp_path: Path) -> dict[str, Any]:
    """Two projects; in p1 three patients with a CT and an MR study each; in p2 one."""
    archive.create_project("p1")
    archive.create_project("p2")
    headers: dict[str, list[pydicom.Dataset]] = {"p1": [], "p2": []}
    for project, patients in (("p1", range(3)), ("p2", range(3, 4))):
        for patient in patients:
            for study, modality in ((0, "CT"), (1, "MR")):
                paths = write_study(tmp_path / project / f"{patient}-{study}", patient,
                                    study_number=study, slices=3, modality=modality)
                archive.ingest(paths, project)
                headers[project].extend(pydicom.dcmread(p, stop_before_pixels=True)
                                        for p in paths)
    return headers


def test_study_search_by_patient_and_modality(archive: Archive,
                                              filled: dict[str, Any]) -> None:
    queries = Queries(archive)
    first = filled["p1"][0]
    search = queries.parse(Level.STUDY, {"PatientID": first.PatientID})
    matches = queries.search(search, project_ids=["p1"]).matches
    expected = {ds.StudyInstanceUID for ds in filled["p1"] if ds.PatientID == first.PatientID}
    assert {_value(m, "StudyInstanceUID") for m in matches} == expected
    assert all(_value(m, "PatientID") == first.PatientID for m in matches)
    # counts come from the index
    assert {_value(m, "NumberOfStudyRelatedInstances") for m in matches} == {3}
    assert {_value(m, "NumberOfStudyRelatedSeries") for m in matches} == {1}
    # ModalitiesInStudy matches any of a list
    mr = queries.search(queries.parse(Level.STUDY, {"ModalitiesInStudy": "MR\\XA"}),
                        project_ids=["p1"]).matches
    assert len(mr) == 3 and {_value(m, "ModalitiesInStudy") for m in mr} == {"MR"}


def test_scope_limits_the_projects(archive: Archive, filled: dict[str, Any]) -> None:
    queries = Queries(archive)
    search = queries.parse(Level.STUDY, {})
    assert len(queries.search(search, project_ids=["p2"]).matches) == 2
    assert len(queries.search(search, project_ids=None).matches) == 8
    assert queries.search(search, project_ids=[]).matches == []


def test_series_and_instance_levels_with_conditions_above(archive: Archive,
                                                          filled: dict[str, Any]) -> None:
    queries = Queries(archive)
    ct = [ds for ds in filled["p1"] if ds.Modality == "CT"]
    patient = ct[0].PatientID
    search = queries.parse(Level.SERIES, {"PatientID": patient, "Modality": "CT"})
    series = queries.search(search, project_ids=["p1"]).matches
    assert {_value(m, "SeriesInstanceUID") for m in series} == {
        ds.SeriesInstanceUID for ds in ct if ds.PatientID == patient}
    assert all(_value(m, "NumberOfSeriesRelatedInstances") == 3 for m in series)
    # instance level: wildcard on a name and a range on a date above it
    date = str(ct[0].StudyDate)
    search = queries.parse(Level.INSTANCE, {"PatientName": "*", "StudyDate": f"{date}-{date}",
                                            "InstanceNumber": "2"})
    found = queries.search(search, project_ids=["p1"]).matches
    expected = {ds.SOPInstanceUID for ds in filled["p1"]
                if ds.StudyDate == date and int(ds.InstanceNumber) == 2}
    assert {_value(m, "SOPInstanceUID") for m in found} == expected and expected


def test_includefield_from_the_stored_header(archive: Archive, filled: dict[str, Any]) -> None:
    queries = Queries(archive)
    ds = filled["p1"][0]
    search = queries.parse(Level.STUDY, {"StudyInstanceUID": ds.StudyInstanceUID},
                           include=["00204000", "KVP", "ImageType"])
    (match,) = queries.search(search, project_ids=["p1"]).matches
    assert _value(match, "KVP") == pytest.approx(float(ds.KVP))
    assert match["00080008"]["Value"] == list(ds.ImageType)
    # an attribute the objects do not have (ImageComments) is returned empty
    assert "ImageComments" not in ds
    assert match["00204000"] == {"vr": "LT"}


def test_unsupported_filters_are_named_not_dropped_silently(archive: Archive,
                                                            filled: dict[str, Any]) -> None:
    queries = Queries(archive)
    search = queries.parse(Level.STUDY, {"PatientComments": "anything", "00081030": "*"})
    assert search.unsupported == ("PatientComments",)
    result = queries.search(search, project_ids=["p1"])
    assert result.unsupported == ["PatientComments"] and len(result.matches) == 6


def test_limit_and_offset_page_in_a_stable_order(archive: Archive,
                                                 filled: dict[str, Any]) -> None:
    queries = Queries(archive)
    search = queries.parse(Level.INSTANCE, {})
    everything = [_value(m, "SOPInstanceUID")
                  for m in queries.search(search, project_ids=["p1"]).matches]
    pages = [_value(m, "SOPInstanceUID") for offset in range(0, 18, 5)
             for m in queries.search(search, project_ids=["p1"], limit=5,
                                     offset=offset).matches]
    assert pages == everything and len(everything) == 18 == len(set(everything))


def test_patient_level_counts(archive: Archive, filled: dict[str, Any]) -> None:
    queries = Queries(archive)
    matches = queries.search(queries.parse(Level.SUBJECT, {}), project_ids=["p1"]).matches
    assert len(matches) == 3
    for match in matches:
        assert _value(match, "NumberOfPatientRelatedStudies") == 2
        assert _value(match, "NumberOfPatientRelatedSeries") == 2
        assert _value(match, "NumberOfPatientRelatedInstances") == 6


def test_instances_under_uids(archive: Archive, filled: dict[str, Any]) -> None:
    queries = Queries(archive)
    ds = filled["p1"][0]
    rows = queries.instances(["p1"], study_uid=ds.StudyInstanceUID)
    assert {r["sop_instance_uid"] for r in rows} == {
        d.SOPInstanceUID for d in filled["p1"] if d.StudyInstanceUID == ds.StudyInstanceUID}
    assert all(r["study_instance_uid"] == ds.StudyInstanceUID for r in rows)
    assert queries.instances(["p2"], study_uid=ds.StudyInstanceUID) == []
    two = [d.SOPInstanceUID for d in filled["p1"][:2]]
    assert {r["sop_instance_uid"] for r in queries.instances(["p1"], sop_uids=two)} == set(two)
    with pytest.raises(InvalidInputError):
        queries.instances(["p1"])


@pytest.mark.parametrize(("level", "filters", "needle"), [
    (Level.STUDY, {"SOPInstanceUID": "1.2.3"}, "instance level"),
    (Level.STUDY, {"StudyDate": "2024-01-01"}, "StudyDate"),
    (Level.STUDY, {"NotAKeyword": "x"}, "not a DICOM keyword"),
    (Level.SERIES, {"SeriesInstanceUID": "1.2.*"}, "SeriesInstanceUID"),
])
def test_bad_filters_are_refused_without_echoing_them(archive: Archive, level: Level,
                                                     filters: dict[str, str],
                                                     needle: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        Queries(archive).parse(level, filters)
    message = str(caught.value)
    assert needle in message
    for value in filters.values():
        if value not in ("x",):
            assert value not in message


def test_keyword_of_accepts_tags_and_keywords() -> None:
    assert keyword_of("00100020") == "PatientID"
    assert keyword_of("(0010,0010)") == "PatientName"
    assert keyword_of("StudyDate") == "StudyDate"
    with pytest.raises(InvalidInputError):
        keyword_of("7FE1FFFF")


def test_scope_holds_when_the_filter_is_on_a_level_above(archive: Archive,
                                                         filled: dict[str, Any],
                                                         tmp_path: Path) -> None:
    """A patient in two projects: a search by PatientID sees only the projects in scope, at
    every level (the project filter then moves to the patient's subquery)."""
    queries = Queries(archive)
    patient = filled["p1"][0].PatientID
    again = write_study(tmp_path / "again", 0, study_number=0, slices=3, modality="CT")
    archive.ingest(again, "p2")
    for level, expected_p1, expected_p2 in ((Level.STUDY, 2, 1), (Level.SERIES, 2, 1),
                                            (Level.INSTANCE, 6, 3)):
        search = queries.parse(level, {"PatientID": patient})
        assert len(queries.search(search, project_ids=["p1"]).matches) == expected_p1
        assert len(queries.search(search, project_ids=["p2"]).matches) == expected_p2
        assert len(queries.search(search, project_ids=["p1", "p2"]).matches) == (
            expected_p1 + expected_p2)
        assert queries.search(search, project_ids=[]).matches == []


@pytest.mark.parametrize("level", [Level.SUBJECT, Level.STUDY, Level.SERIES, Level.INSTANCE])
def test_streamed_search_in_small_batches_equals_one_search(archive: Archive,
                                                            filled: dict[str, Any],
                                                            level: Level) -> None:
    """C-FIND streams its matches from one query, a batch at a time: the batches, with their
    counts and the attributes taken from the stored headers, add up to the whole answer."""
    queries = Queries(archive)
    search = queries.parse(level, {}, include=["KVP"] if level is not Level.SUBJECT else ())
    whole = queries.search(search, project_ids=["p1"]).matches
    streamed = list(queries.iter_search(search, project_ids=["p1"], batch=2))
    assert streamed == whole and len(whole) > 2
