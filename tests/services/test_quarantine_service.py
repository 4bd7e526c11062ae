"""Quarantine items retried and discarded (services.quarantine, decision 0030), on SQLite and
PostgreSQL: a retry archives what can be archived now and keeps what is still refused (the
same item, no second copy); a discard removes the row and then the bytes, and a crash between
any two steps leaves nothing reported kept that is not."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
from imagebank.domain.errors import ConflictError, NotFoundError, PermissionDeniedError
from imagebank.domain.ids import quarantine_object_key
from imagebank.domain.model import Outcome
from imagebank.index import repo
from imagebank.services import quarantine as items
from imagebank.services.archive import Archive

LEEDS = "docs/policies/leeds.yaml"


class Crash(BaseException):
    """A process killed at this point (not an Exception: nothing catches it on the way)."""


def _dicom(patient: int, description: str | None = None) -> bytes:
    spec = SeriesSpec(modality="CT", slices=1, rows=8, columns=8)
    ds = next(iter(make_study(SyntheticPatient.make(patient), series=[spec])))
    if description is not None:
        ds.SeriesDescription = description
    return to_bytes(ds)


def _held(archive: Archive, project: str, data: bytes, reason: str = "not_dicom",
          message: str = "Held by an earlier rule.", source: str = "held.dcm") -> str:
    """A quarantine item kept with ``data`` as its bytes, made directly (as an earlier
    version's stricter rule, since relaxed, would have left it)."""
    item_id = uuid.uuid4().hex
    key = quarantine_object_key(project, item_id)
    staged = archive.store.put(key, data)
    with archive.sessions.begin() as session:
        repo.add_quarantine(session, [{
            "id": item_id, "project_id": project, "reason": reason, "message": message,
            "source": source, "size_bytes": staged.size, "sha256": staged.sha256,
            "object_key": key, "instance_id": None}])
    return item_id


def _only_item(archive: Archive, project: str = "p") -> dict[str, Any]:
    rows = items.list_items(archive, project)
    assert len(rows) == 1, rows
    return rows[0]


def _keys(archive: Archive) -> list[str]:
    return sorted(archive.store.keys())


@pytest.fixture
def project(archive: Archive) -> Archive:
    archive.create_project("p")
    return archive


def test_a_retry_of_bytes_still_bad_keeps_the_same_item_and_makes_no_copy(
        project: Archive) -> None:
    archive = project
    assert archive.ingest_bytes([(b"just some text", "notes.txt")], "p").quarantined == 1
    before = _only_item(archive)
    keys = _keys(archive)
    result = items.retry(archive, before["id"], "p")
    assert result.outcome is Outcome.QUARANTINED and not result.archived
    assert result.reason == "not_dicom" and "DICM" in result.message
    after = _only_item(archive)
    assert (after["id"], after["reason"], after["object_key"], after["kept"]) == (
        before["id"], "not_dicom", before["object_key"], True)
    assert _keys(archive) == keys  # the same bytes, kept once
    assert archive.store.discard_stale_staging(0) == 0  # the retry's staged copy is gone
    assert archive.stats()["quarantined"] == 1


def test_a_retry_after_the_cause_is_fixed_archives_it(project: Archive) -> None:
    archive = project
    first, second = _dicom(1), _dicom(1, "another reconstruction")
    assert archive.ingest_bytes([(first, "a.dcm")], "p").stored == 1
    assert archive.ingest_bytes([(second, "b.dcm")], "p").conflicts == 1
    conflict = _only_item(archive)
    assert conflict["reason"] == "conflict"

    # Still in conflict with the archived instance: refused again, the same item.
    again = items.retry(archive, conflict["id"], "p")
    assert again.outcome is Outcome.CONFLICT and again.reason == "conflict"
    assert _only_item(archive)["id"] == conflict["id"]

    # The cause goes (the first copy is lost, and check --repair drops its row): now the
    # retry archives the kept bytes, and the item and its bytes leave the quarantine.
    instance = archive.get("instance", conflict["instance_id"])
    archive.store.delete(instance["object_key"])
    assert archive.check(repair=True).removed_rows == 1
    result = items.retry(archive, conflict["id"], "p")
    assert result.outcome is Outcome.STORED and result.archived
    assert result.instance_id == conflict["instance_id"]
    assert result.study_id == instance["study_id"]
    assert items.list_items(archive, "p") == []
    assert archive.store.stat(conflict["object_key"]) is None
    assert archive.instance_bytes(conflict["instance_id"]) == second
    assert archive.check(verify_checksums=True).ok


def test_a_retry_of_valid_bytes_held_by_an_earlier_rule_stores_them(project: Archive) -> None:
    archive = project
    item_id = _held(archive, "p", _dicom(2))
    result = items.retry(archive, item_id, "p")
    assert (result.outcome, result.reason) == (Outcome.STORED, None)
    study = archive.get("study", result.study_id or "")
    assert study["project_id"] == "p" and study["num_instances"] == 1
    assert items.list_items(archive, "p") == []
    assert [k for k in _keys(archive) if "/quarantine/" in k] == []
    assert items.reason_counts(archive, "p") == {}


def test_a_retry_of_bytes_archived_already_is_a_duplicate_and_the_item_goes(
        project: Archive) -> None:
    archive = project
    data = _dicom(3)
    assert archive.ingest_bytes([(data, "x.dcm")], "p").stored == 1
    item_id = _held(archive, "p", data)
    result = items.retry(archive, item_id, "p")
    assert result.outcome is Outcome.DUPLICATE and result.archived
    assert result.study_id is not None
    assert items.list_items(archive, "p") == []
    assert archive.check().ok and archive.stats()["instances"] == 1


def test_an_item_without_kept_bytes_cannot_be_retried(project: Archive) -> None:
    archive = project
    item_id = uuid.uuid4().hex
    with archive.sessions.begin() as session:
        repo.add_quarantine(session, [{
            "id": item_id, "project_id": "p", "reason": "too_large", "message": "Too big.",
            "source": "big.dcm", "size_bytes": 10**10, "sha256": None, "object_key": None,
            "instance_id": None}])
    assert _only_item(archive)["kept"] is False
    with pytest.raises(ConflictError, match="bytes were not kept"):
        items.retry(archive, item_id, "p")
    # ... and an item whose bytes went missing says so too
    lost = _held(archive, "p", b"gone")
    archive.store.delete(items.get_item(archive, lost)["object_key"])
    with pytest.raises(ConflictError, match="missing from the object store"):
        items.retry(archive, lost, "p")
    assert len(items.list_items(archive, "p")) == 2
    # Discarding either works: no bytes to remove.
    assert items.discard(archive, item_id, "p").bytes == items.NONE_KEPT
    assert items.discard(archive, lost, "p").bytes == items.REMOVED  # (already absent)
    assert items.list_items(archive, "p") == []


def test_a_research_projects_rules_apply_to_a_retry(archive: Archive) -> None:
    from pathlib import Path

    policy = (Path(__file__).resolve().parents[2] / LEEDS).read_text()
    archive.create_project("lab", zone="research", policy=policy)
    item_id = _held(archive, "lab", _dicom(4))
    with pytest.raises(PermissionDeniedError, match="research project"):
        items.retry(archive, item_id, "lab")
    assert _only_item(archive, "lab")["id"] == item_id
    assert archive.stats()["instances"] == 0


def test_an_item_is_found_only_in_its_own_project(project: Archive) -> None:
    archive = project
    archive.create_project("q")
    item_id = _held(archive, "q", b"elsewhere")
    ghost = uuid.uuid4().hex
    for action in (items.retry, items.discard, items.get_item):
        with pytest.raises(NotFoundError) as found:
            action(archive, item_id, "p")
        with pytest.raises(NotFoundError) as missing:
            action(archive, ghost, "p")
        assert str(found.value).replace(item_id, "<id>") == str(missing.value).replace(
            ghost, "<id>")
    assert _only_item(archive, "q")["id"] == item_id


def test_a_discard_removes_the_row_and_the_bytes(project: Archive) -> None:
    archive = project
    archive.ingest_bytes([(b"junk one", "1.bin"), (b"junk two", "2.bin")], "p")
    first, second = items.list_items(archive, "p")
    result = items.discard(archive, first["id"], "p")
    assert result.as_dict() == {"item_id": first["id"], "bytes": "removed"}
    assert [i["id"] for i in items.list_items(archive, "p")] == [second["id"]]
    assert archive.store.stat(first["object_key"]) is None
    assert archive.store.stat(second["object_key"]) is not None
    assert items.reason_counts(archive, "p") == {"not_dicom": 1}
    with pytest.raises(NotFoundError):
        items.discard(archive, first["id"], "p")
    report = archive.check()
    assert report.ok and report.orphans == []


def test_bytes_an_archived_instance_names_too_are_left_to_it(project: Archive) -> None:
    archive = project
    data = _dicom(5)
    assert archive.ingest_bytes([(data, "x.dcm")], "p").stored == 1
    instance = archive.instances(archive.series(archive.studies("p")[0]["id"])[0]["id"])[0]
    item_id = uuid.uuid4().hex  # held at the instance's own key (a race's leftover)
    with archive.sessions.begin() as session:
        repo.add_quarantine(session, [{
            "id": item_id, "project_id": "p", "reason": "conflict", "message": "Raced.",
            "source": "x.dcm", "size_bytes": len(data), "sha256": instance["sha256"],
            "object_key": instance["object_key"], "instance_id": instance["id"]}])
    assert items.discard(archive, item_id, "p").bytes == items.SHARED
    assert archive.instance_bytes(instance["id"]) == data
    assert archive.check(verify_checksums=True).ok


def test_a_crash_between_the_rows_removal_and_the_bytes_leaves_only_an_orphan(
        project: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = project
    archive.ingest_bytes([(b"junk", "junk.bin")], "p")
    item = _only_item(archive)

    def crash(key: str) -> None:
        raise Crash

    monkeypatch.setattr(archive.store, "delete", crash)
    with pytest.raises(Crash):
        items.discard(archive, item["id"], "p")
    monkeypatch.undo()
    # Nothing reports the item kept any more; its bytes are an orphan that check finds and
    # repair removes.
    assert items.list_items(archive, "p") == []
    assert archive.stats()["quarantined"] == 0
    report = archive.check()
    assert report.orphans == [item["object_key"]] and not report.ok
    repaired = archive.check(repair=True)
    assert repaired.removed_objects == 1 and repaired.ok
    assert archive.check().ok


def test_a_store_refusing_the_removal_still_discards_the_item(
        project: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    from imagebank.domain.errors import StorageError

    archive = project
    archive.ingest_bytes([(b"junk", "junk.bin")], "p")
    item = _only_item(archive)

    def refuse(key: str) -> None:
        raise StorageError("The object store refused a removal (Permission denied).")

    monkeypatch.setattr(archive.store, "delete", refuse)
    assert items.discard(archive, item["id"], "p").bytes == items.LEFT_FOR_REPAIR
    monkeypatch.undo()
    assert items.list_items(archive, "p") == []
    assert archive.check(repair=True).removed_objects == 1


def test_a_crash_after_a_retry_archived_it_leaves_only_an_orphan(
        project: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = project
    item_id = _held(archive, "p", _dicom(6))
    key = items.get_item(archive, item_id)["object_key"]

    def crash(key: str) -> None:
        raise Crash

    monkeypatch.setattr(archive.store, "delete", crash)
    with pytest.raises(Crash):
        items.retry(archive, item_id, "p")
    monkeypatch.undo()
    # The instance was archived and the item left the quarantine in one transaction
    # (decision 0030): there is never an archived item still listed. Only the old copy of its
    # bytes is left, an orphan that check finds and repair removes.
    assert archive.stats()["instances"] == 1
    assert items.list_items(archive, "p") == [] and archive.store.stat(key) is not None
    assert archive.check().orphans == [key]
    assert archive.check(repair=True).removed_objects == 1
    assert archive.check().ok and archive.store.stat(key) is None


def test_a_retry_that_loses_a_race_is_held_at_its_instance_key_and_the_old_copy_goes(
        project: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = project
    first, second = _dicom(7), _dicom(7, "reprocessed")
    assert archive.ingest_bytes([(first, "a.dcm")], "p").stored == 1
    item_id = _held(archive, "p", second, reason="conflict")
    old_key = items.get_item(archive, item_id)["object_key"]
    real = repo.get_instance_checksums
    calls: list[int] = []

    def racing(session: Any, ids: Any) -> dict[str, str]:
        # The first look finds nothing (another writer commits the instance just after), so
        # the insert loses and the bytes are held where they were published.
        calls.append(1)
        return {} if len(calls) == 1 else real(session, ids)

    monkeypatch.setattr(repo, "get_instance_checksums", racing)
    result = items.retry(archive, item_id, "p")
    monkeypatch.undo()
    assert result.outcome is Outcome.CONFLICT and result.reason == "conflict"
    item = _only_item(archive)
    assert item["id"] == item_id and item["object_key"] != old_key
    assert "/dicom/" in item["object_key"] and archive.store.get(item["object_key"]) == second
    assert archive.store.stat(old_key) is None
    assert archive.check(verify_checksums=True).ok
    # Discarded, its bytes at the instance's address go too (no instance names them).
    assert items.discard(archive, item_id, "p").bytes == items.REMOVED
    assert archive.check().ok and archive.stats()["instances"] == 1
