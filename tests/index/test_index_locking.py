"""Concurrent writers of overlapping batches wait for each other; they never deadlock.

add_instances writes rows in one global order (by ID), so a writer never holds one row of a
batch while waiting for another writer that holds a second row of its own batch.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import func, select, text

from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
from imagebank.index import repo
from imagebank.index.tables import Instance, Series
from imagebank.services.archive import Archive

LOW = "0" * 31 + "1"
HIGH = "f" * 31 + "e"


def _instance_row(instance_id: str, series: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": instance_id, "project_id": series["project_id"], "study_id": series["study_id"],
        "series_id": series["id"], "sop_instance_uid": f"2.25.{int(instance_id, 16)}",
        "transfer_syntax_uid": "1.2.840.10008.1.2.1", "size_bytes": 10, "sha256": "0" * 64,
        "object_key": f"p/dicom/{instance_id[:2]}/{instance_id[2:4]}/{instance_id}-{'0' * 16}.dcm",
        "metadata_json": "{}", "oddities": "",
    }


def _wait_until_blocked(archive: Archive, seconds: float = 10.0) -> None:
    if archive.engine.dialect.name != "postgresql":
        time.sleep(0.5)  # SQLite: the second writer waits on the database lock
        return
    deadline = time.monotonic() + seconds
    with archive.engine.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()")).scalar()
            if waiting:
                return
            # pg_stat_activity is a snapshot per transaction: end it to see the next state.
            conn.rollback()
            time.sleep(0.02)
    raise AssertionError("the second writer never waited for the first")


def _seed_one_series(archive: Archive) -> dict[str, Any]:
    """Project "p" with one ingested instance; return its series row."""
    archive.create_project("p")
    ds = next(make_study(SyntheticPatient.make(1), series=[SeriesSpec(slices=1, rows=32,
                                                                      columns=32)]))
    assert archive.ingest_bytes([(to_bytes(ds), "seed")], "p").stored == 1
    with archive.sessions.begin() as session:
        series = repo.get_level_row(session, Series, session.scalar(select(Series.id)))
    assert series is not None
    return series


def test_overlapping_batches_in_opposite_orders_do_not_deadlock(archive: Archive) -> None:
    series = _seed_one_series(archive)
    low, high = _instance_row(LOW, series), _instance_row(HIGH, series)

    errors: list[BaseException] = []
    second_inserted: list[set[str]] = []

    first = archive.sessions()
    first.begin()
    try:
        # Writer 1 holds the LOW row...
        assert repo.add_instances(first, [], [], [], [low])[0] == {LOW}

        def writer_two() -> None:
            try:
                with archive.sessions.begin() as session:
                    # ...writer 2's batch names both rows, HIGH first.
                    second_inserted.append(repo.add_instances(session, [], [], [], [high, low])[0])
            except BaseException as exc:  # reported below
                errors.append(exc)

        thread = threading.Thread(target=writer_two)
        thread.start()
        _wait_until_blocked(archive)
        # Writer 1 now needs HIGH: had writer 2 taken it before waiting for LOW, this is a
        # deadlock and PostgreSQL aborts one of the two.
        assert repo.add_instances(first, [], [], [], [high])[0] == {HIGH}
        first.commit()
    except BaseException:
        first.rollback()
        raise
    finally:
        first.close()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert errors == []
    assert second_inserted == [set()]  # both rows were the first writer's
    with archive.sessions.begin() as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == 3
        num = session.scalar(select(Series.num_instances).where(Series.id == series["id"]))
    assert num == 3


def test_a_study_created_concurrently_for_another_patient_is_refused(archive: Archive) -> None:
    """Two writers race to create one study for two patients: the loser's instances are
    reported as mismatched and not inserted under the winner's subject."""
    series = _seed_one_series(archive)
    with archive.sessions.begin() as session:
        study = repo.get_study_subjects(session, [series["study_id"]])
    other_subject = {"id": "a" * 32, "project_id": "p", "patient_id": "OTHER",
                     "issuer_of_patient_id": ""}
    study_row = {"id": series["study_id"], "project_id": "p", "subject_id": "a" * 32,
                 "study_instance_uid": "9.9"}
    row = _instance_row(LOW, series)
    with archive.sessions.begin() as session:
        inserted, mismatched = repo.add_instances(session, [other_subject], [study_row],
                                                  [series], [row])
    assert inserted == set()
    assert mismatched == {LOW}
    with archive.sessions.begin() as session:
        assert repo.get_study_subjects(session, [series["study_id"]]) == study
        count = session.scalar(select(func.count()).select_from(Instance))
    assert count == 1
