"""The audit trail's hash chain on a real database: verify finds every kind of tampering done
with SQL, key rotation is told apart from tampering, concurrent writers keep the chain whole,
and ``imagebank audit verify`` says so in its exit status."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from sqlalchemy import text

from imagebank.cli.main import main
from imagebank.domain.audit import ChainReport
from imagebank.services.archive import Archive
from imagebank.services.audit import make_event
from imagebank.services.runtime import Runtime

OLD_KEY = "first-secret-key-0123456789abcdef"
NEW_KEY = "second-secret-key-fedcba9876543210"


@pytest.fixture
def runtime(archive: Archive) -> Runtime:
    return Runtime.for_archive(archive)


def event(n: int, **values: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "actor_id": f"{n:032x}", "actor": f"user{n % 3}", "via": "token", "method": "GET",
        "route": "/api/v1/projects/{project}/studies", "action": "search",
        "project_id": "alpha", "status": 200, "outcome": "ok",
        "detail": json.dumps({"filters": ["StudyDate"]})}
    fields.update(values)
    return make_event(**fields)


def write_events(runtime: Runtime, count: int, batch: int = 3) -> None:
    """``count`` events in batches (each batch is one transaction, as the writer does)."""
    items = [event(n) for n in range(count)]
    for start in range(0, count, batch):
        runtime.audit.write(items[start:start + batch])


def sql(runtime: Runtime, statement: str, **params: Any) -> Any:
    with runtime.archive.engine.begin() as conn:
        return conn.execute(text(statement), params)


def row(runtime: Runtime, seq: int) -> dict[str, Any]:
    with runtime.archive.engine.begin() as conn:
        return dict(conn.execute(text("SELECT * FROM audit_events WHERE seq = :s"),
                                 {"s": seq}).mappings().one())


def mentions(report: ChainReport, *words: str) -> list[str]:
    return [p for p in report.problems if all(w in p for w in words)]


def reopened(archive: Archive, **overrides: Any) -> Archive:
    return Archive.open(archive.settings.data, database_url=archive.settings.database_url,
                        workers=1, **overrides)


# -- an intact chain --------------------------------------------------------------------------
def test_an_intact_chain_verifies(runtime: Runtime) -> None:
    empty = runtime.audit.verify()
    assert empty.ok and empty.events == 0
    write_events(runtime, 10)
    single = runtime.audit.record(event(99)).result(timeout=10)  # no writer thread: at once
    assert single == 11
    report = runtime.audit.verify()
    assert report.ok, report.problems
    assert (report.events, report.head_seq, report.unknown_key_events) == (11, 11, 0)
    seqs = [e["seq"] for e in runtime.audit.events(limit=100)]
    assert seqs == list(range(1, 12))
    assert row(runtime, 1)["prev_hash"] == "0" * 64
    for seq in range(2, 12):
        assert row(runtime, seq)["prev_hash"] == row(runtime, seq - 1)["hash"]


# -- tampering --------------------------------------------------------------------------------
EDITS = [("status", 403), ("outcome", "denied"), ("actor", "someone-else"),
         ("project_id", "beta"), ("at", "2001-01-01T00:00:00.000000+00:00"), ("detail", None),
         ("object_id", "f" * 32), ("route", "/api/v1/audit"), ("key_id", "0" * 12)]


def test_an_edited_field_is_found(runtime: Runtime) -> None:
    """Each field in turn: edited, found (and only that event), put back, intact again."""
    write_events(runtime, 9)
    original = row(runtime, 5)
    for column, value in EDITS:
        sql(runtime, f"UPDATE audit_events SET {column} = :v WHERE seq = 5", v=value)
        report = runtime.audit.verify()
        assert not report.ok, column
        assert mentions(report, "event 5"), (column, report.problems)
        assert not [p for p in report.problems if "event 5" not in p], report.problems
        sql(runtime, f"UPDATE audit_events SET {column} = :v WHERE seq = 5",
            v=original[column])
        assert runtime.audit.verify().ok, column


def test_an_edit_with_a_recomputed_plain_hash_is_found(runtime: Runtime) -> None:
    """Without the key, a forger cannot make a hash that verifies (nor one that chains)."""
    write_events(runtime, 9)
    forged = hashlib.sha256(b"forged event 5").hexdigest()
    sql(runtime, "UPDATE audit_events SET status = 500, hash = :h WHERE seq = 5", h=forged)
    sql(runtime, "UPDATE audit_events SET prev_hash = :h WHERE seq = 6", h=forged)
    report = runtime.audit.verify()
    assert mentions(report, "event 5", "edited")
    assert mentions(report, "event 6", "edited")  # its prev_hash is hashed too


def test_a_deleted_middle_event_is_found(runtime: Runtime) -> None:
    write_events(runtime, 9)
    sql(runtime, "DELETE FROM audit_events WHERE seq = 5")
    report = runtime.audit.verify()
    assert not report.ok
    assert mentions(report, "5", "missing")
    assert mentions(report, "event 6")
    assert report.events == 8


def test_an_inserted_event_is_found_even_with_renumbering(runtime: Runtime) -> None:
    write_events(runtime, 8)
    forged = row(runtime, 4)
    forged.update(actor="intruder", detail=None)
    # Make room at 5 (renumber 5..8 to 6..9, highest first) and move the head along.
    for seq in range(8, 4, -1):
        sql(runtime, "UPDATE audit_events SET seq = :new WHERE seq = :old", new=seq + 1,
            old=seq)
    forged.update(seq=5, prev_hash=row(runtime, 4)["hash"],
                  hash=hashlib.sha256(b"made up").hexdigest())
    columns = ", ".join(forged)
    values = ", ".join(f":{c}" for c in forged)
    sql(runtime, f"INSERT INTO audit_events ({columns}) VALUES ({values})", **forged)
    sql(runtime, "UPDATE audit_head SET seq = 9, hash = :h WHERE id = 1",
        h=row(runtime, 9)["hash"])
    report = runtime.audit.verify()
    assert not report.ok
    assert mentions(report, "event 5")
    assert mentions(report, "event 6")  # follows the forged event, not its real predecessor
    assert report.events == 9


def test_deleting_the_last_events_is_found_by_the_head(runtime: Runtime) -> None:
    write_events(runtime, 10)
    sql(runtime, "DELETE FROM audit_events WHERE seq > 7")
    report = runtime.audit.verify()
    assert not report.ok
    assert report.events == 7
    assert mentions(report, "7", "10")  # the chain ends at 7, the head says 10


def test_a_deleted_head_is_found(runtime: Runtime) -> None:
    """Deleting the head record must not hide the events from verification."""
    write_events(runtime, 6)
    sql(runtime, "DELETE FROM audit_head")
    report = runtime.audit.verify()
    assert not report.ok, "a trail without its head record verified as intact"
    assert mentions(report, "head")
    assert report.events == 6  # the events are still checked
    sql(runtime, "UPDATE audit_events SET actor = 'x' WHERE seq = 2")
    assert mentions(runtime.audit.verify(), "event 2", "edited")


def test_an_edited_last_event_is_found(runtime: Runtime) -> None:
    write_events(runtime, 6)
    sql(runtime, "UPDATE audit_events SET outcome = 'denied', status = 403 WHERE seq = 6")
    report = runtime.audit.verify()
    assert mentions(report, "event 6", "edited")


# -- keys -------------------------------------------------------------------------------------
def test_a_changed_secret_key_is_reported_as_unknown_key_and_previous_keys_verify(
        archive: Archive) -> None:
    first = reopened(archive, secret_key=OLD_KEY)
    try:
        Runtime.for_archive(first).audit.write([event(n) for n in range(5)])
    finally:
        first.close()

    second = reopened(archive, secret_key=NEW_KEY)
    try:
        report = Runtime.for_archive(second).audit.verify()
        assert not report.ok
        assert report.unknown_key_events == 5 == report.events
        assert len(mentions(report, "key")) == 5
        assert not mentions(report, "edited") and not mentions(report, "missing")
    finally:
        second.close()

    rotated = reopened(archive, secret_key=NEW_KEY, previous_secret_keys=f"spare-key, {OLD_KEY}")
    try:
        audit = Runtime.for_archive(rotated).audit
        report = audit.verify()
        assert report.ok, report.problems
        audit.write([event(n) for n in range(3)])  # the chain goes on under the new key
        report = audit.verify()
        assert report.ok and report.events == 8
        sql_keys = {r["key_id"] for r in audit.events(limit=100)}
        assert len(sql_keys) == 2
    finally:
        rotated.close()

    # Events written under the new key are unknown to a server that only has the old one.
    old_only = reopened(archive, secret_key=OLD_KEY)
    try:
        report = Runtime.for_archive(old_only).audit.verify()
        assert report.unknown_key_events == 3
    finally:
        old_only.close()


# -- concurrency ------------------------------------------------------------------------------
def test_concurrent_writers_through_the_writer_thread(runtime: Runtime) -> None:
    audit = runtime.audit
    audit.start()
    seqs: list[list[int]] = [[] for _ in range(4)]
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        try:
            for n in range(200):
                future = audit.record(event(n, actor=f"writer{index}"))
                seqs[index].append(future.result(timeout=60))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        audit.stop()
    assert not errors, errors
    every = sorted(s for chunk in seqs for s in chunk)
    assert every == list(range(1, 801))
    for chunk in seqs:
        assert chunk == sorted(chunk)  # one writer's events keep their order
    rows = audit.events(limit=1000)
    assert [r["seq"] for r in rows] == list(range(1, 801))
    by_actor = {f"writer{i}": 0 for i in range(4)}
    for r in rows:
        by_actor[r["actor"]] += 1
    assert set(by_actor.values()) == {200}
    report = audit.verify()
    assert report.ok, report.problems[:5]
    assert report.events == 800


# -- the command line -------------------------------------------------------------------------
def run_cli(*args: str) -> tuple[int, str, str]:
    """``main()`` in this process, as the console script calls it."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with mock.patch.object(sys, "argv", ["imagebank", *args]), redirect_stdout(out), \
            redirect_stderr(err):
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    assert "Traceback" not in err.getvalue()
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("IMAGEBANK_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "200")
    yield


def test_cli_audit_verify_exit_status(tmp_path: Path, clean_env: None) -> None:
    data = tmp_path / "data"
    archive = Archive.open(data, workers=1)
    try:
        runtime = Runtime.for_archive(archive)
        write_events(runtime, 12)
        code, out, _ = run_cli("--data", str(data), "audit", "verify")
        assert code == 0, out
        assert "12" in out and "intact" in out
        code, out, _ = run_cli("--data", str(data), "audit", "verify", "--json")
        assert code == 0
        assert json.loads(out) == {"ok": True, "events": 12, "problems": []}

        sql(runtime, "UPDATE audit_events SET actor = 'nobody' WHERE seq = 4")
        code, out, _ = run_cli("--data", str(data), "audit", "verify")
        assert code == 1
        assert "event 4" in out
        code, out, _ = run_cli("--data", str(data), "audit", "verify", "--json")
        assert code == 1
        body = json.loads(out)
        assert body["ok"] is False and body["events"] == 12
        assert any("event 4" in p for p in body["problems"])
    finally:
        archive.close()
