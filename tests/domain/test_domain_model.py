"""The domain records: IngestSummary arithmetic, InstanceHeader validity, indexed attributes."""

from __future__ import annotations

import pytest

from imagebank.domain.model import (
    INDEXED_ATTRIBUTES,
    REQUIRED_UIDS,
    IngestSummary,
    InstanceHeader,
    Level,
    Outcome,
    QuarantineReason,
    attributes_at,
    column_of,
)


def test_summary_counts_each_outcome() -> None:
    s = IngestSummary()
    s.add(Outcome.STORED, size=100)
    s.add(Outcome.STORED, size=50)
    s.add(Outcome.DUPLICATE, size=999)
    s.add(Outcome.CONFLICT, reason="conflict", source="a.dcm", message="m1")
    s.add(Outcome.QUARANTINED, reason="truncated", source="b.dcm", message="m2")
    s.add(Outcome.QUARANTINED, reason="truncated", source="c.dcm", message="m3")
    s.add(Outcome.QUARANTINED, source="d.dcm", message="m4")
    assert (s.stored, s.duplicates, s.conflicts, s.quarantined) == (2, 1, 1, 3)
    assert s.bytes_stored == 150
    assert s.total == 7
    assert s.reasons == {"conflict": 1, "truncated": 2, "quarantined": 1}
    assert s.problems == [("a.dcm", "conflict", "m1"), ("b.dcm", "truncated", "m2"),
                          ("c.dcm", "truncated", "m3"), ("d.dcm", "quarantined", "m4")]
    assert not s.ok


def test_summary_ok_only_without_conflicts_or_quarantine() -> None:
    s = IngestSummary()
    assert s.ok and s.total == 0
    s.add(Outcome.STORED, size=1)
    s.add(Outcome.DUPLICATE)
    assert s.ok
    s.add(Outcome.CONFLICT, reason="conflict")
    assert not s.ok


def test_summary_merge_and_as_dict() -> None:
    a, b = IngestSummary(), IngestSummary()
    a.add(Outcome.STORED, size=10)
    a.add(Outcome.QUARANTINED, reason="empty", source="x", message="y")
    b.add(Outcome.STORED, size=5)
    b.add(Outcome.DUPLICATE)
    b.add(Outcome.QUARANTINED, reason="empty", source="z", message="w")
    b.add(Outcome.QUARANTINED, reason="not_dicom", source="v", message="u")
    a.merge(b)
    assert a.as_dict() == {
        "stored": 2, "duplicates": 1, "conflicts": 0, "quarantined": 3, "bytes_stored": 15,
        "reasons": {"empty": 2, "not_dicom": 1},
    }
    assert [p[0] for p in a.problems] == ["x", "z", "v"]
    assert list(a.as_dict()["reasons"]) == ["empty", "not_dicom"]  # sorted


def _values(**overrides: object) -> dict[str, object]:
    values: dict[str, object] = {a.column: None for a in INDEXED_ATTRIBUTES}
    values.update(sop_instance_uid="1.2.3", study_instance_uid="1.2.4",
                  series_instance_uid="1.2.5", patient_id="P1")
    values.update(overrides)
    return values


def test_instance_header_requires_the_three_uids() -> None:
    header = InstanceHeader(values=_values(), metadata={}, transfer_syntax_uid="1.2.840.10008.1.2")
    assert header.sop_instance_uid == "1.2.3"
    assert header.study_instance_uid == "1.2.4"
    assert header.series_instance_uid == "1.2.5"
    assert header.patient_id == "P1"
    assert header.issuer_of_patient_id == ""
    for keyword in REQUIRED_UIDS:
        for bad in (None, ""):
            with pytest.raises(ValueError, match=keyword):
                InstanceHeader(values=_values(**{column_of(keyword): bad}), metadata={},
                               transfer_syntax_uid="")


def test_instance_header_at_level_returns_only_that_level() -> None:
    header = InstanceHeader(values=_values(modality="CT"), metadata={}, transfer_syntax_uid="")
    series = header.at(Level.SERIES)
    assert series["modality"] == "CT"
    assert "patient_id" not in series
    assert set(series) == {a.column for a in attributes_at(Level.SERIES)}


def test_indexed_attributes_are_unique_and_cover_the_uids() -> None:
    keywords = [a.keyword for a in INDEXED_ATTRIBUTES]
    columns = [a.column for a in INDEXED_ATTRIBUTES]
    assert len(set(keywords)) == len(keywords)
    assert len(set(columns)) == len(columns)
    for keyword in (*REQUIRED_UIDS, "PatientID", "IssuerOfPatientID", "Modality"):
        assert keyword in keywords
    assert column_of("StudyInstanceUID") == "study_instance_uid"


def test_quarantine_reasons_are_stable_strings() -> None:
    expected = {"empty", "not_dicom", "unreadable", "truncated", "missing_uid",
                "executable_preamble", "too_large", "dicomdir", "conflict", "patient_mismatch",
                "bad_archive", "unreadable_source"}
    assert {r.value for r in QuarantineReason} == expected
