"""Objects received at once by several callers (C-STORE associations, STOW-RS requests) are
committed in shared batches: every caller gets the outcome of its own objects, and the
archive holds each instance exactly once."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pydicom

from imagebank.domain.model import Outcome
from imagebank.services.archive import Archive
from testkit import write_study


def _edited(data: bytes) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.StudyDescription = "different bytes, same SOPInstanceUID"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _run_at_once(archive: Archive, jobs: list[list[tuple[bytes, str]]]) -> list[object]:
    barrier = threading.Barrier(len(jobs))
    answers: list[object] = [None] * len(jobs)

    def send(i: int) -> None:
        barrier.wait()
        try:
            answers[i] = archive.receive(jobs[i], "p")
        except Exception as exc:  # surfaced by the assertions below
            answers[i] = exc

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return answers


def test_overlapping_senders_store_each_instance_once(archive: Archive, tmp_path: Path) -> None:
    archive.create_project("p")
    blobs = [p.read_bytes() for p in write_study(tmp_path / "in", 0, slices=12)]
    # Eight senders, each a window of six instances: every instance is sent four times.
    jobs = [[(blobs[(i + k) % 12], f"sender{i}") for k in range(6)] for i in range(0, 16, 2)]
    answers = _run_at_once(archive, jobs)
    stored = duplicates = 0
    for job, answer in zip(jobs, answers, strict=True):
        assert not isinstance(answer, Exception), answer
        assert len(answer.objects) == len(job)  # type: ignore[attr-defined]
        for outcome in answer.objects:  # type: ignore[attr-defined]
            assert outcome.outcome in (Outcome.STORED, Outcome.DUPLICATE)
            assert outcome.instance_id
        stored += answer.summary.stored  # type: ignore[attr-defined]
        duplicates += answer.summary.duplicates  # type: ignore[attr-defined]
    assert stored == 12
    assert duplicates == 8 * 6 - 12
    assert archive.stats()["instances"] == 12
    assert archive.check().ok


def test_a_conflict_is_told_to_its_sender_only(archive: Archive, tmp_path: Path) -> None:
    archive.create_project("p")
    first, second = (p.read_bytes() for p in write_study(tmp_path / "in", 1, slices=2))
    answers = _run_at_once(archive, [[(first, "a"), (second, "a")], [(_edited(first), "b")]])
    a, b = answers
    assert not isinstance(a, Exception) and not isinstance(b, Exception)
    outcomes = sorted(o.outcome.value for o in a.objects + b.objects)  # type: ignore[attr-defined]
    # Whichever came first is stored; the other copy of that SOP instance is a conflict.
    assert outcomes == ["conflict", "stored", "stored"]
    conflicted = next(o for o in a.objects + b.objects  # type: ignore[attr-defined]
                      if o.outcome is Outcome.CONFLICT)
    assert conflicted.reason == "conflict" and conflicted.message
    assert archive.stats()["instances"] == 2
    assert [q["reason"] for q in archive.quarantine("p")] == ["conflict"]


def test_unreadable_objects_are_reported_in_order(archive: Archive, tmp_path: Path) -> None:
    archive.create_project("p")
    good = write_study(tmp_path / "in", 2, slices=1)[0].read_bytes()
    received = archive.receive([(b"not dicom at all", "x"), (good, "y"), (good[:300], "z")], "p")
    kinds = [o.outcome for o in received.objects]
    assert kinds == [Outcome.QUARANTINED, Outcome.STORED, Outcome.QUARANTINED]
    assert received.objects[0].instance_id is None
    assert received.objects[0].reason == "not_dicom"
    assert received.objects[2].reason in ("truncated", "unreadable")
    assert received.summary.stored == 1 and received.summary.quarantined == 2
