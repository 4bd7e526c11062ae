"""``Archive.check``: the index and the object store verified against each other, and repaired."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
from imagebank.domain.ids import instance_object_key, quarantine_object_key
from imagebank.services.archive import Archive


def _blobs(patient: int, slices: int = 3, study_number: int = 0) -> list[bytes]:
    spec = SeriesSpec(slices=slices, rows=32, columns=32)
    return [to_bytes(ds) for ds in make_study(SyntheticPatient.make(patient),
                                              study_number=study_number, series=[spec])]


@pytest.fixture
def filled(archive: Archive) -> Archive:
    archive.create_project("p")
    blobs = _blobs(1) + _blobs(2, slices=2)
    assert archive.ingest_bytes([(b, f"f{i}") for i, b in enumerate(blobs)], "p").stored == 5
    assert archive.ingest_bytes([(b"junk", "junk")], "p").quarantined == 1
    return archive


def _instance_keys(archive: Archive) -> list[str]:
    return sorted(k for k in archive.store.keys() if "/dicom/" in k)


def _local_path(archive: Archive, key: str) -> Path:
    return Path(archive.settings.effective_store) / key


def test_a_consistent_archive_checks_ok(filled: Archive) -> None:
    report = filled.check(verify_checksums=True)
    assert report.ok
    assert report.instances_checked == 5
    assert report.objects_seen == 6  # five instances and the quarantined junk
    assert report.as_dict()["ok"] is True
    assert (report.missing_objects, report.orphans, report.checksum_mismatches) == ([], [], [])


def test_missing_object_is_reported_and_repair_drops_the_row(filled: Archive) -> None:
    keys = _instance_keys(filled)
    victim = keys[0]
    filled.store.delete(victim)
    report = filled.check()
    assert not report.ok
    assert report.missing_objects == [victim]
    assert report.as_dict()["missing_objects"] == 1
    before = filled.stats()
    repaired = filled.check(repair=True)
    assert repaired.removed_rows == 1
    assert repaired.ok
    after = filled.stats()
    assert after["instances"] == before["instances"] - 1 == 4
    assert filled.check().ok
    # Counters follow the rows that are left.
    total = 0
    for study in filled.studies("p"):
        n = sum(len(filled.instances(s["id"])) for s in filled.series(study["id"]))
        assert study["num_instances"] == n
        total += n
    assert total == 4


def test_orphans_are_reported_and_repair_indexes_or_removes_them(filled: Archive) -> None:
    project = "p"
    new = _blobs(3, slices=1)[0]
    sha = hashlib.sha256(new).hexdigest()
    from imagebank.dicom.header import read_header

    header = read_header(new)
    iid = filled.ids.instance_id(project, header.sop_instance_uid)  # type: ignore[union-attr]
    dicom_orphan = instance_object_key(project, iid, sha)
    junk_orphan = quarantine_object_key(project, "a" * 32)
    filled.store.put(dicom_orphan, new)  # published, never committed (a crash)
    filled.store.put(junk_orphan, b"quarantined, never committed")
    report = filled.check()
    assert not report.ok
    assert sorted(report.orphans) == sorted([dicom_orphan, junk_orphan])
    assert report.missing_objects == []

    repaired = filled.check(repair=True)
    assert repaired.ok
    assert repaired.repaired_orphans == 1
    assert repaired.removed_objects == 1  # the junk orphan
    assert filled.store.stat(junk_orphan) is None
    assert filled.instance_bytes(iid) == new
    assert filled.stats()["instances"] == 6
    final = filled.check(verify_checksums=True)
    assert final.ok and final.orphans == []


def test_orphan_duplicate_or_conflict_is_removed_or_quarantined(filled: Archive) -> None:
    project = "p"
    key = _instance_keys(filled)[0]
    iid = key.rsplit("/", 1)[1].split("-")[0]
    original = filled.instance_bytes(iid)
    # Other bytes at another key of an archived instance: a conflict left by a crash.
    changed = original.replace(b"Synthetic General Hospital", b"Synthetic General Hospitax")
    assert changed != original and len(changed) == len(original)
    other_key = instance_object_key(project, iid, hashlib.sha256(changed).hexdigest())
    filled.store.put(other_key, changed)
    report = filled.check(repair=True)
    assert report.ok
    assert report.repaired_orphans == 0
    assert filled.store.stat(other_key) is None
    assert filled.instance_bytes(iid) == original
    conflicts = [q for q in filled.quarantine(project) if q["reason"] == "conflict"]
    assert len(conflicts) == 1
    assert filled.store.get(conflicts[0]["object_key"]) == changed
    assert filled.check().ok


def test_verify_checksums_detects_a_modified_object(filled: Archive) -> None:
    key = _instance_keys(filled)[1]
    path = _local_path(filled, key)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # same size, other bytes
    path.write_bytes(bytes(data))
    assert filled.check().ok  # sizes agree: only reading the bytes tells
    report = filled.check(verify_checksums=True)
    assert not report.ok
    assert report.checksum_mismatches == [key]
    # Repair does not paper over damaged bytes.
    assert not filled.check(repair=True, verify_checksums=True).ok


def test_size_mismatch_is_reported(filled: Archive) -> None:
    key = _instance_keys(filled)[2]
    path = _local_path(filled, key)
    path.write_bytes(path.read_bytes()[:-10])
    report = filled.check()
    assert not report.ok
    assert report.size_mismatches == [key]


def test_repair_removes_stale_staging_files(filled: Archive) -> None:
    staging = Path(filled.settings.effective_store) / ".staging"
    old = staging / "leftover-old"
    old.write_bytes(b"x")
    past = time.time() - 7200
    os.utime(old, (past, past))
    fresh = staging / "leftover-fresh"
    fresh.write_bytes(b"y")
    report = filled.check(repair=True)  # default age: one hour
    assert report.stale_staging == 1
    assert not old.exists() and fresh.exists()
    assert filled.check(repair=True, staging_age=0).stale_staging == 1
    assert not fresh.exists()
    assert "leftover" not in " ".join(filled.store.keys())


def test_repair_removes_series_studies_and_subjects_left_empty(filled: Archive) -> None:
    """When every object of a patient's study is gone, repair leaves no empty rows behind."""
    study = next(s for s in filled.studies("p") if s["num_instances"] == 2)
    series = filled.series(study["id"])
    keys = [i["object_key"] for s in series for i in filled.instances(s["id"])]
    assert len(keys) == 2
    for key in keys:
        filled.store.delete(key)
    before = filled.stats()
    report = filled.check(repair=True)
    assert report.removed_rows == 2 and report.ok
    after = filled.stats()
    assert after["instances"] == before["instances"] - 2
    assert after["series"] == before["series"] - 1
    assert after["studies"] == before["studies"] - 1
    assert after["subjects"] == before["subjects"] - 1
    assert [s["id"] for s in filled.studies("p")] != [] and study["id"] not in {
        s["id"] for s in filled.studies("p")}
    assert filled.check().ok


def test_check_reports_progress_of_both_phases(filled: Archive) -> None:
    seen: list[tuple[str, int]] = []
    assert filled.check(progress=lambda phase, done: seen.append((phase, done))).ok
    assert ("index", 1) in seen and ("store", 1) in seen
