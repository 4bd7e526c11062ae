"""The same dataset under another file meta header is a duplicate, not a conflict: files,
C-STORE and STOW-RS write different group 0002 elements for one instance."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom

from imagebank.services.archive import Archive
from testkit import write_study


def _with_other_meta(data: bytes, *, change_dataset: bool = False) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.file_meta.ImplementationVersionName = "OTHER_WRITER_1"
    ds.file_meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.99"
    if change_dataset:
        ds.StudyDescription = "edited afterwards"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_same_dataset_other_meta_is_a_duplicate(archive: Archive, tmp_path: Path) -> None:
    archive.create_project("p")
    original = write_study(tmp_path / "in", 0, slices=2)[0].read_bytes()
    assert archive.ingest_bytes([(original, "file")], "p").stored == 1
    other_meta = _with_other_meta(original)
    assert other_meta != original
    summary = archive.ingest_bytes([(other_meta, "c-store")], "p")
    assert (summary.stored, summary.duplicates, summary.conflicts) == (0, 1, 0)
    # in one batch as well
    second = write_study(tmp_path / "in2", 1, slices=1)[0].read_bytes()
    summary = archive.ingest_bytes([(second, "a"), (_with_other_meta(second), "b")], "p")
    assert (summary.stored, summary.duplicates, summary.conflicts) == (1, 1, 0)
    assert archive.quarantine("p") == []


def test_other_dataset_same_uid_is_still_a_conflict(archive: Archive, tmp_path: Path) -> None:
    archive.create_project("p")
    original = write_study(tmp_path / "in", 0, slices=1)[0].read_bytes()
    archive.ingest_bytes([(original, "file")], "p")
    summary = archive.ingest_bytes([(_with_other_meta(original, change_dataset=True), "x")],
                                   "p")
    assert summary.conflicts == 1
    assert [q["reason"] for q in archive.quarantine("p")] == ["conflict"]
