"""The DICOM listener against real DCMTK peers (Debian's ``dcmtk``) on loopback.

The listener runs in this process on 127.0.0.1 (port 0); ``echoscu`` and ``storescu`` are
called by absolute path (the virtualenv's pynetdicom installs scripts of the same names)
with ``TCP_NODELAY=1`` (without it DCMTK waits ~45 ms per file). The core behaviours run on
SQLite and on PostgreSQL through the ``archive`` fixture.

About "the bytes as sent": DIMSE carries the dataset, never the sender's file meta
information, so the receiver writes its own (PS3.10) group 0002. What must be identical is
everything after it: the dataset exactly as encoded by the sender, never decoded and
re-encoded. The stored file meta must still name the same SOP instance and transfer syntax.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from sqlalchemy import select

from imagebank.dicom.synthetic import SyntheticPatient
from imagebank.dimse import tuning
from imagebank.dimse.scp import DicomListener
from imagebank.index.tables import Instance
from imagebank.services.archive import Archive
from imagebank.services.nodes import Nodes
from imagebank.services.runtime import Runtime
from testkit import wait_for, write_study

ECHOSCU = "/usr/bin/echoscu"
STORESCU = "/usr/bin/storescu"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
PROJECT, CALLED, CALLER = "lung", "LUNG_AE", "CT_SCANNER"
ASSOCIATE = "dimse associate"


@dataclass
class Node:
    archive: Archive
    runtime: Runtime
    listener: DicomListener
    nodes: Nodes

    def echo(self, *options: str, called: str = CALLED, calling: str = CALLER
             ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [ECHOSCU, "-aet", calling, "-aec", called, "-ta", "20", *options, "127.0.0.1",
             str(self.listener.port)],
            env=DCMTK_ENV, capture_output=True, text=True, timeout=60, check=False)

    def store(self, files: Sequence[Path], *options: str, called: str = CALLED,
              calling: str = CALLER) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.store_argv(files, *options, called=called, calling=calling),
                              env=DCMTK_ENV, capture_output=True, text=True, timeout=120,
                              check=False)

    def store_argv(self, files: Sequence[Path], *options: str, called: str = CALLED,
                   calling: str = CALLER) -> list[str]:
        return [STORESCU, "-aet", calling, "-aec", called, "-ta", "20", *options, "127.0.0.1",
                str(self.listener.port), *map(str, files)]

    def events(self) -> list[dict[str, Any]]:
        return [e for e in self.runtime.audit.events(limit=1000) if e["route"] == ASSOCIATE]

    def wait_events(self, count: int) -> list[dict[str, Any]]:
        """The association events, once there are ``count`` (an admitted association's is
        written when it ends, just after the peer got the release answer)."""
        assert wait_for(lambda: len(self.events()) >= count, timeout=20), self.events()
        events = self.events()
        assert len(events) == count, events
        return events

    def instances(self) -> list[dict[str, Any]]:
        with self.archive.sessions.begin() as session:
            return [{"id": i.id, "uid": i.sop_instance_uid, "key": i.object_key,
                     "sha256": i.sha256, "project": i.project_id}
                    for i in session.scalars(select(Instance))]


@contextmanager
def listening(archive: Archive) -> Iterator[Node]:
    """Project ``lung`` with called AE ``LUNG_AE`` accepting ``CT_SCANNER`` from anywhere,
    and a listener on a free loopback port."""
    archive.create_project(PROJECT)
    nodes = Nodes(archive.sessions)
    nodes.set_ae_title(PROJECT, CALLED)
    nodes.allow(PROJECT, CALLER)
    runtime = Runtime.for_archive(archive)
    runtime.start(run_jobs=False)
    listener = DicomListener(runtime, host="127.0.0.1", port=0)
    listener.start()
    try:
        assert listener.port != 0
        yield Node(archive, runtime, listener, nodes)
    finally:
        listener.stop()
        runtime.stop()


@pytest.fixture
def node(archive: Archive) -> Iterator[Node]:
    """On SQLite and on PostgreSQL."""
    with listening(archive) as made:
        yield made


@pytest.fixture
def sqlite_node(sqlite_archive: Archive) -> Iterator[Node]:
    with listening(sqlite_archive) as made:
        yield made


# -- helpers --------------------------------------------------------------------------------
def split_part10(data: bytes) -> tuple[bytes, bytes]:
    """(file meta group, dataset) of a Part 10 file, cut at the meta group's length."""
    assert data[128:132] == b"DICM"
    assert data[132:138] == b"\x02\x00\x00\x00UL", "the meta group starts with its length"
    end = 144 + int.from_bytes(data[140:144], "little")
    return data[:end], data[end:]


def uid_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def detail(event: dict[str, Any]) -> dict[str, Any]:
    return json.loads(event["detail"]) if event["detail"] else {}


def patient_words(*patients: int) -> list[str]:
    words = []
    for n in patients:
        patient = SyntheticPatient.make(n)
        words += [patient.patient_id, patient.name, patient.name.split("^")[0]]
    return words


def assert_stored_as_sent(node: Node, files: Sequence[Path]) -> None:
    """One instance per distinct SOPInstanceUID sent, each holding the sent dataset bytes."""
    sent = {uid_of(f): f.read_bytes() for f in files}
    rows = node.instances()
    assert sorted(r["uid"] for r in rows) == sorted(sent)
    for row in rows:
        source = sent[row["uid"]]
        stored = node.archive.store.get(row["key"])
        assert hashlib.sha256(stored).hexdigest() == row["sha256"]
        assert split_part10(stored)[1] == split_part10(source)[1], row["uid"]
        meta = pydicom.dcmread(pydicom.filebase.DicomBytesIO(stored),
                               stop_before_pixels=True).file_meta
        source_meta = pydicom.dcmread(pydicom.filebase.DicomBytesIO(source),
                                      stop_before_pixels=True).file_meta
        assert meta.MediaStorageSOPInstanceUID == row["uid"]
        assert meta.MediaStorageSOPClassUID == source_meta.MediaStorageSOPClassUID
        assert meta.TransferSyntaxUID == source_meta.TransferSyntaxUID


def assert_no_patient_data(events: list[dict[str, Any]], words: list[str]) -> None:
    for event in events:
        for field, value in event.items():
            for word in words:
                assert word not in str(value), (event["seq"], field)


# -- echo and store --------------------------------------------------------------------------
def test_echo_store_and_store_again(node: Node, tmp_path: Path) -> None:
    echo = node.echo()
    assert echo.returncode == 0, echo.stderr
    (event,) = node.wait_events(1)
    assert (event["outcome"], event["actor"], event["client"], event["project_id"]) == (
        "ok", CALLER, "127.0.0.1", PROJECT)
    assert detail(event) == {"stored": 0, "duplicates": 0, "failed": 0, "echoes": 1,
                             "ended": "released"}

    files = write_study(tmp_path / "study", 3, slices=4)
    first = node.store(files)
    assert first.returncode == 0, first.stderr
    assert_stored_as_sent(node, files)
    stored = node.wait_events(2)[-1]
    assert stored["outcome"] == "ok"
    assert detail(stored) == {"stored": 4, "duplicates": 0, "failed": 0, "echoes": 0,
                              "ended": "released"}
    before = {r["uid"]: (r["id"], r["sha256"]) for r in node.instances()}
    assert node.archive.studies(PROJECT)[0]["num_instances"] == 4

    # The same files again: success for each, nothing new, nothing quarantined.
    again = node.store(files, "-v")
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("Received Store Response (Success)") == 4, again.stderr
    resent = node.wait_events(3)[-1]
    assert detail(resent) == {"stored": 0, "duplicates": 4, "failed": 0, "echoes": 0,
                              "ended": "released"}
    assert {r["uid"]: (r["id"], r["sha256"]) for r in node.instances()} == before
    assert node.archive.quarantine(PROJECT) == []
    assert node.archive.stats()["instances"] == 4

    # An aborted association is audited too, with what it did before the abort.
    aborted = node.echo("--repeat", "2", "--abort")
    assert aborted.returncode == 0, aborted.stderr
    last = node.wait_events(4)[-1]
    assert detail(last) == {"stored": 0, "duplicates": 0, "failed": 0, "echoes": 2,
                            "ended": "aborted"}
    assert_no_patient_data(node.runtime.audit.events(limit=1000), patient_words(3))
    assert node.archive.check().ok


# -- admission --------------------------------------------------------------------------------
def test_admission_by_called_and_calling_ae_title_and_address(node: Node, tmp_path: Path
                                                              ) -> None:
    node.archive.create_project("brain")
    node.nodes.set_ae_title("brain", "BRAIN_AE")
    node.nodes.allow("brain", "MR_SCANNER")
    node.nodes.allow(PROJECT, "REMOTE_CT", host="10.9.9.9")
    node.nodes.allow(PROJECT, "LOCAL_CT", host="127.0.0.1")
    files = write_study(tmp_path / "study", 4, slices=2)

    refused = [
        (node.store(files, called="NOBODY"), "Called AE Title Not Recognized"),
        (node.store(files, calling="STRANGER"), "Calling AE Title Not Recognized"),
        # allowed on another project only
        (node.store(files, calling="MR_SCANNER"), "Calling AE Title Not Recognized"),
        # allowed from another address only
        (node.store(files, calling="REMOTE_CT"), "Calling AE Title Not Recognized"),
        (node.echo(calling="STRANGER"), "Calling AE Title Not Recognized"),
    ]
    for result, words in refused:
        assert result.returncode != 0, result.stderr
        assert "Association Rejected" in result.stderr, result.stderr
        assert words in result.stderr, result.stderr
    # Nothing of the refused associations reached the archive.
    assert node.instances() == []
    assert node.archive.quarantine() == []
    assert node.archive.stats()["instances"] == 0

    denied = node.wait_events(5)
    assert [(e["outcome"], e["actor"], e["client"]) for e in denied] == [
        ("denied", calling, "127.0.0.1")
        for calling in (CALLER, "STRANGER", "MR_SCANNER", "REMOTE_CT", "STRANGER")]
    assert [detail(e) for e in denied] == [
        {"reason": "called_unknown", "called": "NOBODY"},
        *[{"reason": "calling_not_allowed", "called": CALLED}] * 4]
    assert denied[0]["project_id"] is None

    # Allowed from this very address: admitted.
    local = node.store(files, calling="LOCAL_CT")
    assert local.returncode == 0, local.stderr
    assert_stored_as_sent(node, files)
    admitted = node.wait_events(6)[-1]
    assert (admitted["outcome"], admitted["actor"], admitted["project_id"]) == (
        "ok", "LOCAL_CT", PROJECT)
    assert detail(admitted)["stored"] == 2

    # Admission is decided per association from the index: a removed caller is refused next.
    node.nodes.disallow(PROJECT, "LOCAL_CT")
    gone = node.echo(calling="LOCAL_CT")
    assert gone.returncode != 0
    assert "Calling AE Title Not Recognized" in gone.stderr
    # ... and a project's AE title routes only to it: brain's sender lands in brain.
    brain = node.store(write_study(tmp_path / "brain", 5, slices=1), called="BRAIN_AE",
                       calling="MR_SCANNER")
    assert brain.returncode == 0, brain.stderr
    assert sorted(r["project"] for r in node.instances()) == ["brain", PROJECT, PROJECT]

    events = node.wait_events(8)
    assert (events[6]["outcome"], detail(events[6])["reason"]) == ("denied",
                                                                   "calling_not_allowed")
    assert (events[7]["project_id"], detail(events[7])["stored"]) == ("brain", 1)
    assert_no_patient_data(node.runtime.audit.events(limit=1000), patient_words(4, 5))


# -- conflicts --------------------------------------------------------------------------------
def test_conflict_is_a_failure_status_and_the_newcomer_is_quarantined(node: Node,
                                                                      tmp_path: Path) -> None:
    files = write_study(tmp_path / "study", 6, slices=3)
    first = node.store(files[:2])
    assert first.returncode == 0, first.stderr
    original = {r["uid"]: r for r in node.instances()}
    target = uid_of(files[0])
    changed = pydicom.dcmread(files[0])
    changed.ImageComments = "the same instance, other bytes"
    other = tmp_path / "changed.dcm"
    changed.save_as(other, enforce_file_format=True)
    assert uid_of(other) == target and other.read_bytes() != files[0].read_bytes()

    # Told not to halt, storescu goes on with the next file; the conflict is a 0xC000
    # status with the reason in ErrorComment.
    going_on = node.store([other, files[2]], "-nh", "-d")
    assert going_on.returncode == 0, going_on.stderr[-2000:]
    statuses = re.findall(r"DIMSE Status\s*:\s*(0x[0-9a-f]{4})", going_on.stderr)
    assert statuses == ["0xc000", "0x0000"], statuses
    assert re.search(r"\(0000,0902\) LO \[conflict\]", going_on.stderr), (
        going_on.stderr[-2000:])
    # By default DCMTK's storescu halts at the first failed store, with a failing exit status.
    halted = node.store([other, files[1]], "-v")
    assert halted.returncode != 0, halted.stderr
    assert "Received Store Response (Error: CannotUnderstand)" in halted.stderr
    assert "Sending file: " + str(files[1]) not in halted.stderr

    # The first copy is kept; each newcomer is in quarantine, with the reason.
    rows = {r["uid"]: r for r in node.instances()}
    assert len(rows) == 3
    assert rows[target] == original[target]
    assert_stored_as_sent(node, files)
    held = node.archive.quarantine(PROJECT)
    assert [q["reason"] for q in held] == ["conflict", "conflict"]
    for item in held:
        assert item["instance_id"] == original[target]["id"]
        assert split_part10(node.archive.store.get(item["object_key"]))[1] == (
            split_part10(other.read_bytes())[1])
    events = node.wait_events(3)
    assert [(e["outcome"], detail(e)["stored"], detail(e)["duplicates"], detail(e)["failed"])
            for e in events] == [("ok", 2, 0, 0), ("rejected", 1, 0, 1),
                                 ("rejected", 0, 0, 1)]
    assert node.archive.check().ok


def test_an_object_imported_from_a_folder_then_sent_by_c_store_is_a_duplicate(
        sqlite_node: Node, tmp_path: Path) -> None:
    """The same object by two ways in (a folder import, then a PACS sending it) is one
    instance and an identical duplicate, not a conflict held in quarantine: the file meta
    the listener writes differs from the file's own, the dataset does not."""
    node = sqlite_node
    files = write_study(tmp_path / "study", 7, slices=2)
    imported = node.archive.ingest(files, PROJECT)
    assert imported.stored == 2
    sent = node.store(files, "-nh", "-v")
    assert sent.returncode == 0, sent.stderr
    events = node.wait_events(1)
    assert node.archive.quarantine(PROJECT) == [], "the re-sent objects were held as conflicts"
    assert sent.stderr.count("Received Store Response (Success)") == 2, sent.stderr
    assert detail(events[0])["duplicates"] == 2
    assert len(node.instances()) == 2


# -- concurrency: the acceptance criterion --------------------------------------------
def test_eight_simultaneous_associations_with_overlapping_studies(node: Node,
                                                                  tmp_path: Path) -> None:
    studies = [write_study(tmp_path / f"study{s}", s % 3, study_number=s, slices=5)
               for s in range(4)]
    senders = [f"SENDER{i}" for i in range(8)]
    for sender in senders:
        node.nodes.allow(PROJECT, sender)
    plans: dict[str, list[Path]] = {}
    for i, sender in enumerate(senders):
        picked = [i % 4, (i + 1) % 4] + ([(i + 2) % 4] if i % 2 else [])
        plans[sender] = [f for s in picked for f in studies[s]]
    processes = {sender: subprocess.Popen(node.store_argv(files, calling=sender),
                                          env=DCMTK_ENV, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True)
                 for sender, files in plans.items()}
    outputs = {sender: proc.communicate(timeout=120) for sender, proc in processes.items()}
    for sender, proc in processes.items():
        assert proc.returncode == 0, (sender, outputs[sender][1])

    every_file = [f for files in studies for f in files]
    distinct = {uid_of(f) for f in every_file}
    assert len(distinct) == 20
    events = node.wait_events(8)
    by_sender = {e["actor"]: detail(e) for e in events}
    assert set(by_sender) == set(senders)
    for sender, counts in by_sender.items():
        assert counts["failed"] == 0, (sender, counts)
        assert counts["stored"] + counts["duplicates"] == len(plans[sender]), (sender, counts)
        assert counts["ended"] == "released"
    assert sum(c["stored"] for c in by_sender.values()) == len(distinct)
    assert sum(c["stored"] + c["duplicates"] for c in by_sender.values()) == sum(
        len(files) for files in plans.values())

    # Every association is counted out again once closed (the reactors' fast polls are for
    # a lone association: dimse.tuning).
    assert wait_for(lambda: tuning.associations.running == 0, timeout=20)

    # Nothing lost, nothing twice, every object as sent, index and store agree.
    assert_stored_as_sent(node, every_file)
    assert len(node.instances()) == len(distinct)
    assert node.archive.quarantine() == []
    stats = node.archive.stats()
    assert (stats["instances"], stats["studies"], stats["series"]) == (20, 4, 4)
    assert sorted(s["num_instances"] for s in node.archive.studies(PROJECT)) == [5] * 4
    report = node.archive.check(verify_checksums=True)
    assert report.ok, report.as_dict()
    assert report.instances_checked == 20
    assert node.runtime.audit.verify().ok


# -- logs -------------------------------------------------------------------------------------
def test_no_patient_data_in_log_records(sqlite_node: Node, tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    node = sqlite_node
    caplog.set_level(logging.DEBUG, logger="pynetdicom")
    caplog.set_level(logging.DEBUG, logger="imagebank")
    files = write_study(tmp_path / "study", 8, slices=2)
    changed = pydicom.dcmread(files[0])
    changed.ImageComments = "other bytes"
    other = tmp_path / "changed.dcm"
    changed.save_as(other, enforce_file_format=True)

    assert node.echo().returncode == 0
    assert node.store(files).returncode == 0
    assert node.store([other], "-nh").returncode == 0
    assert node.store(files, calling="STRANGER").returncode != 0
    assert node.store(files, called="NOBODY").returncode != 0
    node.wait_events(5)
    assert len(node.archive.quarantine(PROJECT)) == 1

    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    lines = [formatter.format(r) for r in caplog.records]
    # The capture works: pynetdicom's debug output of the associations is there.
    assert any(r.name.startswith("pynetdicom") and r.levelno == logging.DEBUG
               for r in caplog.records)
    assert any("C-STORE" in line for line in lines)
    for word in patient_words(8):
        for line in lines:
            assert word not in line
