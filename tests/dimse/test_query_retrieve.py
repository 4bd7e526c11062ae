"""Query/Retrieve over DIMSE against DCMTK's findscu, movescu and getscu on loopback.

The listener runs in this process (port 0) with project ``lung`` (called AE ``LUNG_AE``) and
project ``other`` (``OTHER_AE``), each holding its own patients. Expected answers are worked
out from the files written, with pydicom and fnmatch, never from the index: findscu's
responses are extracted with ``-X`` and read back; movescu's destination is DCMTK's storescp
in bit-preserving mode (``+B``), so what it writes is what imagebank sent. The core C-FIND and
C-MOVE tests run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode, encode

import imagebank.dimse.query_retrieve as qr
from imagebank.dicom.synthetic import SyntheticPatient
from imagebank.dimse.query_retrieve import (
    Refused,
    RetrieveQuery,
    find_query,
    retrieve_query,
    storage_contexts,
)
from imagebank.dimse.scp import DicomListener
from imagebank.services.archive import Archive
from imagebank.services.nodes import Nodes
from imagebank.services.runtime import Runtime
from testkit import wait_for, write_study

FINDSCU, MOVESCU, GETSCU, STORESCP = ("/usr/bin/findscu", "/usr/bin/movescu",
                                      "/usr/bin/getscu", "/usr/bin/storescp")
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
CALLED, OTHER_CALLED = "LUNG_AE", "OTHER_AE"
DEST = "DEST_AE"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    archive: Archive
    runtime: Runtime
    listener: DicomListener
    nodes: Nodes
    tmp: Path
    #: The files written into each project.
    files: dict[str, list[Path]]

    @property
    def port(self) -> str:
        return str(self.listener.port)

    def run(self, *argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), env=DCMTK_ENV, capture_output=True, text=True,
                              timeout=120, check=False, cwd=cwd)

    def find(self, *keys: str, model: str = "-S", called: str = CALLED,
             calling: str = "FINDSCU", options: Sequence[str] = ()
             ) -> tuple[subprocess.CompletedProcess[str], list[Dataset]]:
        """findscu with ``-k`` keys; its responses extracted (``-X``) and read back."""
        out = self.tmp / f"find-{time.monotonic_ns()}"
        out.mkdir()
        argv = [FINDSCU, model, "-aet", calling, "-aec", called, "-X", "-od", str(out),
                *options]
        for key in keys:
            argv += ["-k", key]
        result = self.run(*argv, "127.0.0.1", self.port)
        return result, [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]

    def events(self, route: str) -> list[dict[str, Any]]:
        return [e for e in self.runtime.audit.events(limit=1000) if e["route"] == route]


def headers(files: Sequence[Path]) -> list[Dataset]:
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in files]


@contextmanager
def listening(archive: Archive, tmp: Path) -> Iterator[Node]:
    archive.create_project("lung")
    archive.create_project("other")
    nodes = Nodes(archive.sessions)
    nodes.set_ae_title("lung", CALLED)
    nodes.set_ae_title("other", OTHER_CALLED)
    for caller in ("FINDSCU", "MOVESCU", "GETSCU"):
        nodes.allow("lung", caller)
    nodes.allow("other", "FINDSCU")
    files = {
        "lung": (write_study(tmp / "lung", 1, study_number=0, slices=3)
                 + write_study(tmp / "lung", 1, study_number=1, slices=2)
                 + write_study(tmp / "lung", 2, study_number=0, slices=2, modality="MR")),
        "other": write_study(tmp / "other", 3, study_number=0, slices=2),
    }
    for project, paths in files.items():
        summary = archive.ingest(paths, project)
        assert summary.stored == len(paths), summary
    runtime = Runtime.for_archive(archive)
    runtime.start(run_jobs=False)
    listener = DicomListener(runtime, host="127.0.0.1", port=0)
    listener.start()
    try:
        yield Node(archive, runtime, listener, nodes, tmp, files)
    finally:
        listener.stop()
        runtime.stop()


@pytest.fixture
def node(archive: Archive, tmp_path: Path) -> Iterator[Node]:
    """On SQLite and on PostgreSQL."""
    with listening(archive, tmp_path) as made:
        yield made


@pytest.fixture
def sqlite_node(sqlite_archive: Archive, tmp_path: Path) -> Iterator[Node]:
    with listening(sqlite_archive, tmp_path) as made:
        yield made


@dataclass
class StoreSCP:
    proc: subprocess.Popen[bytes]
    port: int
    folder: Path

    def received(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file())


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[Callable[..., StoreSCP]]:
    """DCMTK storescp as a C-MOVE destination; stopped by its process ID."""
    started: list[StoreSCP] = []

    def start(*options: str) -> StoreSCP:
        folder = tmp_path / f"received-{len(started)}"
        folder.mkdir()
        port = free_port()
        proc = subprocess.Popen([STORESCP, "-aet", DEST, "-od", str(folder), *options,
                                 str(port)], env=DCMTK_ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        scp = StoreSCP(proc, port, folder)
        started.append(scp)

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        assert wait_for(listening, timeout=20), "storescp did not start"
        return scp

    yield start
    for scp in started:
        if scp.proc.poll() is None:
            os.kill(scp.proc.pid, signal.SIGTERM)
            scp.proc.wait(timeout=20)


def values(datasets: Sequence[Dataset], keyword: str) -> list[str]:
    return sorted(str(ds.get(keyword, "")) for ds in datasets)


def detail(event: dict[str, Any]) -> dict[str, Any]:
    return json.loads(event["detail"]) if event["detail"] else {}


def patient_words(node: Node) -> list[str]:
    words = []
    for n in (1, 2, 3):
        patient = SyntheticPatient.make(n)
        words += [patient.patient_id, patient.name]
    for ds in headers(node.files["lung"] + node.files["other"]):
        words += [str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)]
    return words


def dataset_part(data: bytes) -> bytes:
    """What follows the file meta group of a Part 10 file."""
    assert data[128:132] == b"DICM"
    return data[144 + int.from_bytes(data[140:144], "little"):]


def final_response(stderr: str) -> dict[str, Any]:
    """The final C-MOVE/C-GET/C-FIND response as a DCMTK tool in debug mode (``-d``) printed
    it: status, sub-operation counts and error comment."""
    block = stderr.rsplit("Received Final", 1)[-1]
    found: dict[str, Any] = {}
    for line in block.splitlines():
        counts = re.match(r"D: (Completed|Failed|Warning) Suboperations\s*: (\d+)", line)
        if counts:
            found[counts.group(1).lower()] = int(counts.group(2))
        status = re.match(r"D: DIMSE Status\s*: 0x([0-9a-f]{4})", line)
        if status:
            found["status"] = int(status.group(1), 16)
        comment = re.search(r"LO \[(.*)\]\s+#.*ErrorComment", line)
        if comment:
            found["comment"] = comment.group(1)
    return found


# -- identifiers → queries (no network) ------------------------------------------------------
def _identifier(**elements: Any) -> Dataset:
    ds = Dataset()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


def test_identifier_to_filters() -> None:
    ds = _identifier(QueryRetrieveLevel="SERIES", SpecificCharacterSet="ISO_IR 100",
                     PatientName="SMITH*", StudyDate="20240101-20241231", Modality="CT\\MR",
                     SeriesInstanceUID="", PatientAge="", RetrieveAETitle="",
                     InstanceAvailability="", ReferencedStudySequence=[Dataset()],
                     SOPInstanceUID="")
    ds.add_new(0x00091001, "LO", "private")
    query = find_query(ds, "study")
    assert query.level == "SERIES"
    assert query.filters == {"PatientName": "SMITH*", "StudyDate": "20240101-20241231",
                             "Modality": "CT\\MR", "SeriesInstanceUID": "", "PatientAge": ""}
    # Requested keys in tag order; no sequence, private tag, level, charset or retrieve AE.
    assert query.keys == ("SOPInstanceUID", "StudyDate", "InstanceAvailability", "Modality",
                          "PatientName", "PatientAge", "SeriesInstanceUID")
    # An empty key below the query's level is answered empty, not looked up.
    assert query.below == ("SOPInstanceUID",)
    multi = _identifier(QueryRetrieveLevel="IMAGE", SOPInstanceUID=["1.2.3", "1.2.4"])
    assert find_query(multi, "patient").filters == {"SOPInstanceUID": "1.2.3\\1.2.4"}


@pytest.mark.parametrize(("elements", "model", "status", "words"), [
    ({}, "study", 0xA900, "QueryRetrieveLevel"),
    ({"QueryRetrieveLevel": "FRAME"}, "study", 0xA900, "QueryRetrieveLevel"),
    ({"QueryRetrieveLevel": "PATIENT"}, "study", 0xA900, "Study Root"),
    ({"QueryRetrieveLevel": "STUDY", "SeriesInstanceUID": "1.2.3"}, "study", 0xC000,
     "SeriesInstanceUID"),
    ({"QueryRetrieveLevel": "PATIENT", "Modality": "CT"}, "patient", 0xC000, "Modality"),
])
def test_identifiers_that_are_refused(elements: dict[str, str], model: str, status: int,
                                      words: str) -> None:
    with pytest.raises(Refused) as refused:
        find_query(_identifier(**elements), model)
    assert refused.value.status == status
    assert words in refused.value.comment
    assert "1.2.3" not in refused.value.comment and "CT" not in refused.value.comment.split()
    assert len(refused.value.dataset().ErrorComment) <= 64


def test_answers_hold_exactly_the_keys_in_utf_8() -> None:
    """A response identifier: the requested keys (values from the match, an empty element
    for a key the match lacks or that is below the level), in ISO_IR 192 on the wire."""
    query = find_query(_identifier(QueryRetrieveLevel="STUDY", PatientName="M*",
                                   StudyDescription="", SeriesInstanceUID="",
                                   InstanceAvailability=""), "study")
    match = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller^Jörg"}]},
             "0020000E": {"vr": "UI", "Value": ["1.2.3"]},
             "00100020": {"vr": "LO", "Value": ["not asked for"]},
             "00081030": {"vr": "LO", "Value": ["Thorax – 北京"]}}
    answer = qr._answer(query, match, "LUNG_AE")
    wire = decode(BytesIO(encode(answer, False, True)), False, True)
    assert {e.keyword for e in wire} == {
        "SpecificCharacterSet", "QueryRetrieveLevel", "RetrieveAETitle", "PatientName",
        "StudyDescription", "SeriesInstanceUID", "InstanceAvailability"}
    assert (wire.PatientName, wire.StudyDescription) == ("Müller^Jörg", "Thorax – 北京")
    assert (wire.SeriesInstanceUID, wire.InstanceAvailability) == ("", "ONLINE")
    assert (wire.QueryRetrieveLevel, wire.RetrieveAETitle, wire.SpecificCharacterSet) == (
        "STUDY", "LUNG_AE", "ISO_IR 192")
    # A stored value that cannot be made an element is answered empty, the rest kept.
    odd = {**match, "00081030": {"vr": "LO", "Value": [{"not": "a string"}]}}
    answer = qr._answer(query, odd, "LUNG_AE")
    assert (answer.PatientName, answer.StudyDescription) == ("Müller^Jörg", "")


def test_retrieve_identifiers() -> None:
    study = _identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID=["1.2.3", "1.2.4"],
                        PatientID="P1")
    assert retrieve_query(study, "patient") == RetrieveQuery(
        "STUDY", "P1", ("1.2.3", "1.2.4"), (), ())
    image = _identifier(QueryRetrieveLevel="IMAGE", StudyInstanceUID="1.2",
                        SeriesInstanceUID="1.2.3", SOPInstanceUID="1.2.3.4")
    assert retrieve_query(image, "study") == RetrieveQuery("IMAGE", None, ("1.2",),
                                                           ("1.2.3",), ("1.2.3.4",))
    for elements, keyword in (({"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": "1.2"},
                               "SeriesInstanceUID"),
                              ({"QueryRetrieveLevel": "PATIENT", "PatientID": ""}, "PatientID"),
                              ({"QueryRetrieveLevel": "PATIENT", "PatientID": "P*"},
                               "PatientID")):
        with pytest.raises(Refused) as refused:
            retrieve_query(_identifier(**elements), "patient")
        assert refused.value.keyword == keyword
        assert "P*" not in refused.value.comment


def test_storage_contexts_propose_what_is_stored_then_uncompressed() -> None:
    rows = [{"sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
             "transfer_syntax_uid": "1.2.840.10008.1.2.1"},
            {"sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
             "transfer_syntax_uid": "1.2.840.10008.1.2.4.70"},
            {"sop_class_uid": "1.2.840.10008.5.1.4.1.1.4",
             "transfer_syntax_uid": "1.2.840.10008.1.2.4.90"}]
    proposed = [(c.abstract_syntax, tuple(c.transfer_syntax)) for c in storage_contexts(rows)]
    assert proposed == [
        ("1.2.840.10008.5.1.4.1.1.2", ("1.2.840.10008.1.2.1",)),
        ("1.2.840.10008.5.1.4.1.1.2", ("1.2.840.10008.1.2.4.70",)),
        ("1.2.840.10008.5.1.4.1.1.4", ("1.2.840.10008.1.2.4.90",)),
        ("1.2.840.10008.5.1.4.1.1.2", ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")),
    ]
    many = [{"sop_class_uid": f"1.2.3.{i}", "transfer_syntax_uid": "1.2.840.10008.1.2"}
            for i in range(200)]
    assert len(storage_contexts(many)) == 128


# -- C-FIND ---------------------------------------------------------------------------------
def test_c_find_study_root_levels_match_exactly(node: Node) -> None:
    lung = headers(node.files["lung"])
    # STUDY level, wildcard on PatientName; exactly the requested keys come back.
    result, found = node.find("QueryRetrieveLevel=STUDY", "PatientName=SYNTH*",
                              "StudyInstanceUID", "StudyDate", "PatientID", "PatientAge",
                              "ModalitiesInStudy", "NumberOfStudyRelatedInstances")
    assert result.returncode == 0, result.stderr
    expected = {str(d.StudyInstanceUID): d for d in lung
                if fnmatch.fnmatchcase(str(d.PatientName), "SYNTH*")}
    assert expected and len(expected) < len({d.StudyInstanceUID for d in lung})
    assert values(found, "StudyInstanceUID") == sorted(expected)
    for ds in found:
        source = expected[str(ds.StudyInstanceUID)]
        assert {e.keyword for e in ds} == {
            "SpecificCharacterSet", "QueryRetrieveLevel", "RetrieveAETitle",
            "StudyInstanceUID", "StudyDate", "PatientName", "PatientID", "PatientAge",
            "ModalitiesInStudy", "NumberOfStudyRelatedInstances"}
        assert (ds.QueryRetrieveLevel, ds.RetrieveAETitle, ds.SpecificCharacterSet) == (
            "STUDY", CALLED, "ISO_IR 192")
        assert (ds.StudyDate, ds.PatientID, ds.PatientName, ds.PatientAge) == (
            source.StudyDate, source.PatientID, source.PatientName, source.PatientAge)
        assert ds.ModalitiesInStudy == source.Modality
        assert int(ds.NumberOfStudyRelatedInstances) == sum(
            1 for d in lung if d.StudyInstanceUID == source.StudyInstanceUID)

    # Date range: the studies of the lung project on or after the latest date only.
    dates = sorted({str(d.StudyDate) for d in lung})
    assert len(dates) >= 2
    _, ranged = node.find("QueryRetrieveLevel=STUDY", f"StudyDate={dates[-1]}-",
                          "StudyInstanceUID")
    assert values(ranged, "StudyInstanceUID") == sorted(
        {str(d.StudyInstanceUID) for d in lung if str(d.StudyDate) >= dates[-1]})
    _, closed = node.find("QueryRetrieveLevel=STUDY", f"StudyDate={dates[0]}-{dates[0]}",
                          "StudyInstanceUID")
    assert values(closed, "StudyInstanceUID") == sorted(
        {str(d.StudyInstanceUID) for d in lung if str(d.StudyDate) == dates[0]})

    # SERIES level under one study; IMAGE level under one series.
    study = lung[0]
    _, series = node.find("QueryRetrieveLevel=SERIES", f"StudyInstanceUID={study.StudyInstanceUID}",
                          "SeriesInstanceUID", "Modality", "NumberOfSeriesRelatedInstances")
    assert values(series, "SeriesInstanceUID") == sorted(
        {str(d.SeriesInstanceUID) for d in lung if d.StudyInstanceUID == study.StudyInstanceUID})
    assert all(ds.Modality == study.Modality for ds in series)
    _, images = node.find("QueryRetrieveLevel=IMAGE",
                          f"SeriesInstanceUID={study.SeriesInstanceUID}", "SOPInstanceUID",
                          "SOPClassUID", "InstanceNumber")
    members = [d for d in lung if d.SeriesInstanceUID == study.SeriesInstanceUID]
    assert values(images, "SOPInstanceUID") == sorted(str(d.SOPInstanceUID) for d in members)
    assert values(images, "InstanceNumber") == sorted(str(d.InstanceNumber) for d in members)
    assert {e.keyword for e in images[0]} == {
        "SpecificCharacterSet", "QueryRetrieveLevel", "RetrieveAETitle", "SOPInstanceUID",
        "SOPClassUID", "InstanceNumber", "SeriesInstanceUID"}

    # The other project's data is never seen through this AE title, and vice versa.
    _, everything = node.find("QueryRetrieveLevel=IMAGE", "SOPInstanceUID")
    assert values(everything, "SOPInstanceUID") == sorted(
        str(d.SOPInstanceUID) for d in lung)
    _, theirs = node.find("QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientID",
                          called=OTHER_CALLED)
    assert values(theirs, "PatientID") == [SyntheticPatient.make(3).patient_id]

    events = node.events("dimse c-find")
    assert [(e["action"], e["outcome"], e["project_id"], e["actor"]) for e in events] == [
        ("search", "ok", "lung", "FINDSCU")] * 6 + [("search", "ok", "other", "FINDSCU")]
    first = detail(events[0])
    assert (first["matches"], first["level"], first["model"]) == (
        len(expected), "STUDY", "study_root")
    assert first["keys"] == [e.keyword for e in found[0] if e.keyword not in (
        "SpecificCharacterSet", "QueryRetrieveLevel", "RetrieveAETitle")]
    assert [detail(e)["matches"] for e in events] == [
        len(expected), len(ranged), len(closed), len(series), len(images), len(everything),
        len(theirs)]
    text = json.dumps(events)
    for word in patient_words(node):
        assert word not in text


def test_c_find_patient_root(node: Node) -> None:
    lung = headers(node.files["lung"])
    result, patients = node.find("QueryRetrieveLevel=PATIENT", "PatientID", "PatientName",
                                 "PatientBirthDate", "NumberOfPatientRelatedStudies",
                                 "NumberOfPatientRelatedInstances", model="-P")
    assert result.returncode == 0, result.stderr
    assert values(patients, "PatientID") == sorted({str(d.PatientID) for d in lung})
    for ds in patients:
        mine = [d for d in lung if d.PatientID == ds.PatientID]
        assert ds.PatientName == mine[0].PatientName
        assert ds.PatientBirthDate == mine[0].PatientBirthDate
        assert int(ds.NumberOfPatientRelatedStudies) == len({d.StudyInstanceUID for d in mine})
        assert int(ds.NumberOfPatientRelatedInstances) == len(mine)
    # STUDY level of one patient (patient root: PatientID is the key above).
    patient = SyntheticPatient.make(1).patient_id
    _, studies = node.find("QueryRetrieveLevel=STUDY", f"PatientID={patient}",
                           "StudyInstanceUID", model="-P")
    assert values(studies, "StudyInstanceUID") == sorted(
        {str(d.StudyInstanceUID) for d in lung if d.PatientID == patient})
    assert len(studies) == 2


def test_c_find_unsupported_keys_warn_and_refusals(sqlite_node: Node,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    node = sqlite_node
    # A filter on an attribute that is not indexed is a return key, with status 0xFF01.
    result, found = node.find("QueryRetrieveLevel=STUDY", "PatientAge=099Y",
                              "StudyInstanceUID", options=["-v"])
    assert result.returncode == 0, result.stderr
    assert len(found) == len({d.StudyInstanceUID for d in headers(node.files["lung"])})
    assert result.stderr.count("(Pending: WarningUnsupportedOptionalKeys)") == len(found)
    assert detail(node.events("dimse c-find")[-1])["unsupported"] == ["PatientAge"]

    # A PATIENT level in the Study Root model, a malformed date, a key below the level.
    secret = SyntheticPatient.make(1).patient_id
    for keys, status, words in (
            (["QueryRetrieveLevel=PATIENT", f"PatientID={secret}"], "a900", "Study Root"),
            (["QueryRetrieveLevel=STUDY", "StudyDate=2024-01-01x", f"PatientID={secret}"],
             "c000", "AT (0008,0020)"),
            (["QueryRetrieveLevel=STUDY", "Modality=CT"], "c000", "AT (0008,0060)")):
        refused, nothing = node.find(*keys, options=["-d"])
        assert nothing == []
        answer = refused.stderr.split("Received Final Find Response")[-1]
        assert f"DIMSE Status                  : 0x{status}" in answer, refused.stderr
        assert "ErrorComment" in answer
        # The offending element is named (OffendingElement, an AT), its value never echoed.
        assert words in answer, answer
        assert secret not in answer and "2024-01-01x" not in answer
    events = node.events("dimse c-find")[-3:]
    assert [(e["outcome"], e["status"]) for e in events] == [
        ("rejected", 0xA900), ("rejected", 0xC000), ("rejected", 0xC000)]
    assert secret not in json.dumps(events)
    assert secret not in caplog.text and "2024-01-01x" not in caplog.text


def test_c_find_cancel_and_rejected_callers(sqlite_node: Node,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A C-CANCEL stops the matches (each made slow here, so that the cancel arrives while
    there are still some to send)."""
    answer = qr._answer

    def slow_answer(*args: Any) -> Dataset:
        time.sleep(0.1)
        return answer(*args)

    monkeypatch.setattr(qr, "_answer", slow_answer)
    node = sqlite_node
    total = len(node.files["lung"])
    result, found = node.find("QueryRetrieveLevel=IMAGE", "SOPInstanceUID",
                              options=["--cancel", "2"])
    assert result.returncode == 0, result.stderr
    assert 2 <= len(found) < total
    event = node.events("dimse c-find")[-1]
    assert (event["outcome"], event["status"]) == ("cancelled", 0xFE00)
    assert detail(event)["matches"] == len(found)

    # A caller the project does not accept cannot associate, so cannot query.
    before = len(node.events("dimse c-find"))
    refused, nothing = node.find("QueryRetrieveLevel=STUDY", "StudyInstanceUID",
                                 calling="STRANGER")
    assert refused.returncode != 0 and nothing == []
    assert "Calling AE Title Not Recognized" in refused.stderr, refused.stderr
    unknown, nothing = node.find("QueryRetrieveLevel=STUDY", "StudyInstanceUID",
                                 called="NOBODY")
    assert unknown.returncode != 0 and nothing == []
    assert len(node.events("dimse c-find")) == before
    denied = [e for e in node.events("dimse associate") if e["outcome"] == "denied"]
    assert [e["actor"] for e in denied] == ["STRANGER", "FINDSCU"]


def test_c_find_pages_through_many_matches(sqlite_node: Node, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    """Matches are read a page at a time: with pages of 2, all 7 still come back once."""
    monkeypatch.setattr(qr, "PAGE", 2)
    _, found = sqlite_node.find("QueryRetrieveLevel=IMAGE", "SOPInstanceUID")
    assert values(found, "SOPInstanceUID") == sorted(
        str(d.SOPInstanceUID) for d in headers(sqlite_node.files["lung"]))


# -- C-MOVE ---------------------------------------------------------------------------------
def move(node: Node, *keys: str, destination: str = DEST, model: str = "-S"
         ) -> dict[str, Any]:
    """movescu (in debug mode); its final response."""
    argv = [MOVESCU, model, "-d", "-aet", "MOVESCU", "-aec", CALLED, "--move", destination]
    for key in keys:
        argv += ["-k", key]
    result = node.run(*argv, "127.0.0.1", node.port)
    answer = final_response(result.stderr)
    assert "status" in answer, result.stderr
    return answer


def by_uid(files: Sequence[Path]) -> dict[str, Path]:
    return {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in files}


def received_uids(scp: StoreSCP) -> list[str]:
    return sorted(by_uid(scp.received()))


def test_c_move_sends_the_stored_bytes(node: Node, storescp: Callable[..., StoreSCP]) -> None:
    scp = storescp("+B")  # bit-preserving: it writes the dataset exactly as it came
    node.nodes.add_remote(DEST, "127.0.0.1", scp.port)
    lung = node.files["lung"]
    study = headers(lung)[0].StudyInstanceUID
    sent = {uid: f for uid, f in by_uid(lung).items()
            if pydicom.dcmread(f).StudyInstanceUID == study}
    answer = move(node, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}")
    assert answer == {"status": 0, "completed": len(sent), "failed": 0, "warning": 0}
    assert received_uids(scp) == sorted(sent)
    for path in scp.received():
        ds = pydicom.dcmread(path)
        source = sent[str(ds.SOPInstanceUID)]
        assert dataset_part(path.read_bytes()) == dataset_part(source.read_bytes())
        assert ds.file_meta.TransferSyntaxUID == pydicom.dcmread(
            source).file_meta.TransferSyntaxUID
    event = node.events("dimse c-move")[-1]
    assert (event["action"], event["outcome"], event["status"], event["level"],
            event["project_id"], event["actor"]) == (
        "download", "ok", 0, "study", "lung", "MOVESCU")
    assert {k: detail(event)[k] for k in ("instances", "completed", "failed", "warning",
                                          "destination", "keys")} == {
        "instances": len(sent), "completed": len(sent), "failed": 0, "warning": 0,
        "destination": DEST, "keys": ["StudyInstanceUID"]}

    # Patient root, PATIENT level: every instance of that patient, nothing of the others.
    patient = SyntheticPatient.make(1).patient_id
    mine = sorted(str(h.SOPInstanceUID) for h in headers(lung) if h.PatientID == patient)
    assert len(mine) > len(sent)
    answer = move(node, "QueryRetrieveLevel=PATIENT", f"PatientID={patient}", model="-P")
    assert answer == {"status": 0, "completed": len(mine), "failed": 0, "warning": 0}
    assert received_uids(scp) == mine  # the first study's files again, overwritten

    # Unknown destination: 0xA801, nothing sent, audited.
    answer = move(node, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}",
                  destination="NOWHERE")
    assert answer["status"] == 0xA801
    assert received_uids(scp) == mine
    refused = node.events("dimse c-move")[-1]
    assert (refused["outcome"], refused["status"]) == ("rejected", 0xA801)
    assert detail(refused)["destination"] == "NOWHERE"
    assert [detail(e)["model"] for e in node.events("dimse c-move")] == [
        "study_root", "patient_root", "study_root"]
    text = json.dumps(node.events("dimse c-move"))
    for word in patient_words(node):
        assert word not in text


def test_c_move_series_and_images_other_projects_and_failures(
        sqlite_node: Node, storescp: Callable[..., StoreSCP],
        caplog: pytest.LogCaptureFixture) -> None:
    node = sqlite_node
    scp = storescp("+B")
    node.nodes.add_remote(DEST, "127.0.0.1", scp.port)
    lung = headers(node.files["lung"])
    first = lung[0]
    series = [h for h in lung if h.SeriesInstanceUID == first.SeriesInstanceUID]
    images = sorted(str(h.SOPInstanceUID) for h in series[:2])
    answer = move(node, "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={first.StudyInstanceUID}",
                  f"SeriesInstanceUID={first.SeriesInstanceUID}",
                  "SOPInstanceUID=" + "\\".join(images))
    assert answer == {"status": 0, "completed": 2, "failed": 0, "warning": 0}
    assert received_uids(scp) == images

    # Another project's study is not found through this project's AE title: nothing sent.
    theirs = headers(node.files["other"])[0]
    answer = move(node, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={theirs.StudyInstanceUID}")
    assert answer == {"status": 0, "completed": 0, "failed": 0, "warning": 0}
    assert detail(node.events("dimse c-move")[-1])["instances"] == 0
    assert received_uids(scp) == images

    # A missing unique key: a failure naming it, never the values.
    answer = move(node, "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={first.StudyInstanceUID}")
    assert (answer["status"], answer["comment"]) == (
        0xA900, "A SERIES retrieve needs SeriesInstanceUID")
    event = node.events("dimse c-move")[-1]
    assert (event["outcome"], event["status"]) == ("rejected", 0xA900)
    # A malformed UID: unable to process, the value not quoted.
    answer = move(node, "QueryRetrieveLevel=STUDY", "StudyInstanceUID=1.2.x")
    assert answer["status"] == 0xC000 and "StudyInstanceUID" in answer["comment"]
    assert "1.2.x" not in answer["comment"]

    # An object that cannot be read from the store: one failed sub-operation, the rest sent.
    key = next(row["object_key"] for level, row in node.archive.find(
        str(series[0].SOPInstanceUID)) if level == "instance")
    (Path(node.archive.store.root) / key).write_bytes(b"not DICOM")  # type: ignore[attr-defined]
    answer = move(node, "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={first.StudyInstanceUID}",
                  f"SeriesInstanceUID={first.SeriesInstanceUID}")
    assert answer == {"status": 0xB000, "completed": len(series) - 1, "failed": 1,
                      "warning": 0}
    event = node.events("dimse c-move")[-1]
    assert (event["outcome"], event["status"]) == ("partial", 0xB000)
    assert {k: detail(event)[k] for k in ("instances", "completed", "failed")} == {
        "instances": len(series), "completed": len(series) - 1, "failed": 1}
    # The association events (one per movescu run) sum up what was sent.
    def totals() -> list[dict[str, Any]]:
        return [detail(e) for e in node.events("dimse associate") if e["actor"] == "MOVESCU"]

    assert wait_for(lambda: len(totals()) == 5, timeout=10), totals()
    assert sum(t.get("retrieved", 0) for t in totals()) == 2 + len(series) - 1
    assert sum(t.get("retrieve_failed", 0) for t in totals()) == 1
    # What was logged (the unreadable object, pynetdicom's failed sub-operation) names no
    # patient, study, series or instance.
    assert "could not be read" in caplog.text
    for word in patient_words(node):
        assert word not in caplog.text


def test_c_move_to_a_destination_that_refuses(sqlite_node: Node,
                                              storescp: Callable[..., StoreSCP]) -> None:
    node = sqlite_node
    scp = storescp("--refuse")
    node.nodes.add_remote(DEST, "127.0.0.1", scp.port)
    study = headers(node.files["lung"])[0].StudyInstanceUID
    answer = move(node, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}")
    assert answer["status"] == 0xA801
    assert wait_for(lambda: bool(node.events("dimse c-move")), timeout=10)
    event = node.events("dimse c-move")[-1]
    assert (event["outcome"], event["status"]) == ("failed", 0xA801)
    assert detail(event)["completed"] == 0


def test_c_move_converts_to_implicit_vr_when_that_is_all_the_destination_takes(
        sqlite_node: Node, storescp: Callable[..., StoreSCP]) -> None:
    node = sqlite_node
    scp = storescp("+xi")
    node.nodes.add_remote(DEST, "127.0.0.1", scp.port)
    first = headers(node.files["lung"])[0]
    sources = {uid: f for uid, f in by_uid(node.files["lung"]).items()
               if pydicom.dcmread(f).SeriesInstanceUID == first.SeriesInstanceUID}
    answer = move(node, "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={first.StudyInstanceUID}",
                  f"SeriesInstanceUID={first.SeriesInstanceUID}")
    assert answer == {"status": 0, "completed": len(sources), "failed": 0, "warning": 0}
    assert received_uids(scp) == sorted(sources)
    for path in scp.received():
        ds = pydicom.dcmread(path)
        source = pydicom.dcmread(sources[str(ds.SOPInstanceUID)])
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ImplicitVRLittleEndian
        assert source.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert (ds.PixelData, ds.PatientName, ds.ImagePositionPatient) == (
            source.PixelData, source.PatientName, source.ImagePositionPatient)


# -- C-GET ----------------------------------------------------------------------------------
def get(node: Node, out: Path, *keys: str, model: str = "-S") -> dict[str, Any]:
    out.mkdir()
    argv = [GETSCU, model, "-d", "-aet", "GETSCU", "-aec", CALLED, "-od", str(out)]
    for key in keys:
        argv += ["-k", key]
    result = node.run(*argv, "127.0.0.1", node.port)
    answer = final_response(result.stderr)
    assert "status" in answer, result.stderr
    return answer


def test_c_get_sends_over_the_same_association(sqlite_node: Node) -> None:
    node = sqlite_node
    first = headers(node.files["lung"])[0]
    series = {uid: f for uid, f in by_uid(node.files["lung"]).items()
              if pydicom.dcmread(f).SeriesInstanceUID == first.SeriesInstanceUID}
    out = node.tmp / "got"
    answer = get(node, out, "QueryRetrieveLevel=SERIES",
                 f"StudyInstanceUID={first.StudyInstanceUID}",
                 f"SeriesInstanceUID={first.SeriesInstanceUID}")
    assert answer == {"status": 0, "completed": len(series), "failed": 0, "warning": 0}
    received = by_uid(sorted(out.iterdir()))
    assert sorted(received) == sorted(series)
    for uid, path in received.items():
        ds, source = pydicom.dcmread(path), pydicom.dcmread(series[uid])
        assert (ds.PixelData, ds.PatientID) == (source.PixelData, source.PatientID)
    event = node.events("dimse c-get")[-1]
    assert (event["action"], event["outcome"], event["level"], event["project_id"]) == (
        "download", "ok", "series", "lung")
    assert {k: detail(event)[k] for k in ("instances", "completed", "failed")} == {
        "instances": len(series), "completed": len(series), "failed": 0}
    assert wait_for(lambda: any(detail(e).get("retrieved") == len(series)
                                for e in node.events("dimse associate")), timeout=10)

    # Study root has no PATIENT level: refused, nothing received.
    answer = get(node, node.tmp / "none", "QueryRetrieveLevel=PATIENT", "PatientID=X")
    assert (answer["status"], answer["comment"]) == (0xA900, "The Study Root model has no "
                                                     "PATIENT level")
    assert list((node.tmp / "none").iterdir()) == []
    event = node.events("dimse c-get")[-1]
    assert (event["outcome"], event["status"]) == ("rejected", 0xA900)
