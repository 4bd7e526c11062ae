"""An object that vanishes from the store while a study is being streamed: the response,
already started, is cut short (no closing boundary or bracket, so the client sees a broken
body, never a complete-looking one), with one log line and no traceback or object key."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from apiworld import World
from dicomwebkit import ALPHA, uids_of
from fastapi.testclient import TestClient
from sqlalchemy import text


def _study_rows(world: World) -> list[dict[str, str]]:
    rows = uids_of(world)
    study = rows[0]["study_instance_uid"]
    return [r for r in rows if r["study_instance_uid"] == study]


def test_a_missing_object_cuts_the_stream_short(sqlite_world: World,
                                                sqlite_client: TestClient,
                                                caplog: pytest.LogCaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _study_rows(sqlite_world)
    assert len(rows) >= 2
    study = rows[0]["study_instance_uid"]
    archive = sqlite_world.runtime.archive
    with archive.sessions.begin() as session:
        keys = [k for (k,) in session.execute(text(
            "SELECT object_key FROM instances WHERE study_id = "
            "(SELECT study_id FROM instances WHERE sop_instance_uid = :uid)"
            " ORDER BY instance_number DESC"), {"uid": rows[0]["sop_instance_uid"]})]
    # The last object sent goes missing after the response was planned.
    victim = Path(archive.store.root) / keys[0]  # type: ignore[attr-defined]
    victim.unlink()
    headers = {**sqlite_world.headers("owner"),
               "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    with caplog.at_level(logging.ERROR, logger="imagebank.api"):
        response = sqlite_client.get(f"{ALPHA}/studies/{study}", headers=headers)
    assert response.status_code == 200
    boundary = response.headers["content-type"].split("boundary=")[1].strip('"')
    body = response.content
    # Every part was begun, the missing one's content never came, and there is no closing
    # delimiter: a multipart parser refuses this body.
    assert body.count(f"--{boundary}".encode()) == len(keys)
    assert f"--{boundary}--".encode() not in body
    assert body.endswith(b"\r\n\r\n")
    messages = [r.getMessage() for r in caplog.records if r.name == "imagebank.api"]
    assert any("WADO-RS retrieve stopped part way" in m for m in messages), messages
    for record in caplog.records:
        assert record.exc_info is None
        assert keys[0] not in record.getMessage() and study not in record.getMessage()
