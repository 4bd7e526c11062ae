"""Review of issue 4 (DICOMweb): server errors are logged without the request's path (a
DICOMweb path holds UIDs), and a frame list names each frame once (PS3.18), so that a
request cannot multiply one frame into a response of gigabytes."""

from __future__ import annotations

import email
import logging
from typing import Any

import pytest
from apiworld import World, problem
from dicomwebkit import ALPHA, GLOBAL, multiframe_rle, multipart_body, uids_of
from fastapi.testclient import TestClient

from imagebank.dicom.synthetic import to_bytes
from imagebank.domain.errors import StorageError

OCTETS = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def _image(world: World) -> dict[str, Any]:
    return next(r for r in uids_of(world) if r.get("rows"))


def _instance_path(row: dict[str, Any]) -> str:
    return (f"/studies/{row['study_instance_uid']}/series/{row['series_instance_uid']}"
            f"/instances/{row['sop_instance_uid']}")


@pytest.mark.parametrize("base", [ALPHA, GLOBAL])
def test_a_server_error_is_logged_without_the_uids_of_its_path(
        sqlite_world: World, sqlite_client: TestClient, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch, base: str) -> None:
    row = _image(sqlite_world)
    store = sqlite_world.runtime.archive.store

    def unavailable(key: str) -> bytes:
        raise StorageError("Cannot read from the object store (Input/output error).")

    monkeypatch.setattr(store, "get", unavailable)
    with caplog.at_level(logging.INFO):
        response = sqlite_client.get(f"{base}{_instance_path(row)}/frames/1",
                                     headers={**sqlite_world.headers("owner"),
                                              "Accept": OCTETS})
    assert response.status_code == 503
    assert problem(response)["code"] == "storage"
    # (the test client's own httpx log line quotes the URL: it is not the server's)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("imagebank")]
    assert any("storage error on" in m for m in messages), messages
    uids = (row["study_instance_uid"], row["series_instance_uid"], row["sop_instance_uid"])
    for message in messages:
        assert not any(uid in message for uid in uids), message
        assert row["object_key"] not in message
    logged = next(m for m in messages if "storage error on" in m)
    assert logged.endswith("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
                           "/frames/{frame_list}"), logged


def test_a_frame_list_names_each_frame_once(sqlite_world: World,
                                            sqlite_client: TestClient) -> None:
    ds, values = multiframe_rle(7, frames=3)
    body, content_type = multipart_body([to_bytes(ds)])
    headers = sqlite_world.headers("owner")
    stored = sqlite_client.post(f"{ALPHA}/studies", content=body,
                                headers={**headers, "Content-Type": content_type,
                                         "Accept": "application/dicom+json"})
    assert stored.status_code == 200, stored.text
    path = (f"{ALPHA}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}/frames")
    uncompressed = {**headers, "Accept": 'multipart/related; type="application/octet-stream"'}

    # Distinct frames in any order: one part each, in the order asked.
    response = sqlite_client.get(f"{path}/3,1", headers=uncompressed)
    assert response.status_code == 200, response.text
    message = email.message_from_bytes(
        b"Content-Type: " + response.headers["content-type"].encode() + b"\r\n\r\n"
        + response.content)
    parts = [p.get_payload(decode=True) for p in message.get_payload()]  # type: ignore[union-attr]
    assert parts == [values[2].tobytes(), values[0].tobytes()]

    # A frame named twice (or a thousand times) is refused before anything is decoded.
    for frames in ("1,1", ",".join(["2"] * 1000), "1,2,3,2"):
        response = sqlite_client.get(f"{path}/{frames}", headers=uncompressed)
        assert response.status_code == 400, (frames, response.status_code)
        assert problem(response)["code"] == "invalid_frame"
