"""Review of issue 4 (DIMSE): a retrieve of more instances than a C-MOVE/C-GET can count is
refused without reading every matching instance from the index (a PATIENT-level retrieve of a
patient with a million instances must not load a million rows)."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

import imagebank.dimse.query_retrieve as qr
from imagebank.dimse.scp import DicomListener
from imagebank.index import query as index_query
from imagebank.services.archive import Archive
from imagebank.services.nodes import Nodes
from imagebank.services.runtime import Runtime
from testkit import write_study

GETSCU = "/usr/bin/getscu"
CALLED = "REVIEW_AE"


@pytest.fixture
def listener(sqlite_archive: Archive, tmp_path: Path) -> Iterator[tuple[DicomListener,
                                                                         list[Path]]]:
    archive = sqlite_archive
    archive.create_project("lung")
    nodes = Nodes(archive.sessions)
    nodes.set_ae_title("lung", CALLED)
    nodes.allow("lung", "GETSCU")
    files = write_study(tmp_path / "lung", 1, slices=4)
    assert archive.ingest(files, "lung").stored == 4
    runtime = Runtime.for_archive(archive)
    runtime.start(run_jobs=False)
    dicom = DicomListener(runtime, host="127.0.0.1", port=0)
    dicom.start()
    try:
        yield dicom, files
    finally:
        dicom.stop()
        runtime.stop()


def _get(port: int, out: Path, *keys: str) -> dict[str, Any]:
    """getscu's final response (status, completed), as it printed it in debug mode."""
    out.mkdir()
    argv = [GETSCU, "-S", "-d", "-aet", "GETSCU", "-aec", CALLED, "-od", str(out)]
    for key in keys:
        argv += ["-k", key]
    result = subprocess.run([*argv, "127.0.0.1", str(port)], capture_output=True, text=True,
                            timeout=120, check=False, env={**os.environ, "TCP_NODELAY": "1"})
    block = result.stderr.rsplit("Received C-GET Response", 1)[-1]  # the last, the final
    found: dict[str, Any] = {}
    status = re.search(r"D: DIMSE Status\s*: 0x([0-9a-f]{4})", block)
    assert status, result.stderr
    found["status"] = int(status.group(1), 16)
    completed = re.search(r"D: Completed Suboperations\s*: (\d+)", block)
    found["completed"] = int(completed.group(1)) if completed else None
    return found


def test_a_retrieve_over_the_limit_reads_one_row_past_it(
        listener: tuple[DicomListener, list[Path]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    dicom, files = listener
    monkeypatch.setattr(qr, "MAX_SUBOPERATIONS", 2)
    read: list[int] = []
    real_find = index_query.find

    def counting_find(*args: Any, **kwargs: Any) -> Any:
        rows = real_find(*args, **kwargs)
        read.append(len(rows))
        return rows

    monkeypatch.setattr(index_query, "find", counting_find)
    first = pydicom.dcmread(files[0], stop_before_pixels=True)

    # Four instances in the study, two allowed: refused, and at most three rows were read.
    answer = _get(dicom.port, tmp_path / "study", "QueryRetrieveLevel=STUDY",
                  f"StudyInstanceUID={first.StudyInstanceUID}")
    assert answer["status"] == 0xC000, answer
    assert list((tmp_path / "study").iterdir()) == []
    assert read and max(read) <= 3, read

    # Two instances: within the limit, both sent.
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
            for f in files[:2]]
    answer = _get(dicom.port, tmp_path / "two", "QueryRetrieveLevel=IMAGE",
                  f"StudyInstanceUID={first.StudyInstanceUID}",
                  f"SeriesInstanceUID={first.SeriesInstanceUID}",
                  f"SOPInstanceUID={chr(92).join(uids)}")
    assert answer == {"status": 0, "completed": 2}
    assert len(list((tmp_path / "two").iterdir())) == 2
