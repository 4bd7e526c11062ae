"""``imagebank ae``: remote AEs (C-MOVE destinations) added, listed, removed and echoed.

What the commands did is checked through the services (``Nodes``) and the audit trail, not
only through what they print. ``ae echo`` is answered by real peers on loopback: DCMTK's
storescp, and an imagebank listener whose admission rules give each kind of rejection.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from clikit import assert_one_line_error, cli, cli_json, run

from imagebank.dimse.scp import DicomListener
from imagebank.services.archive import Archive
from imagebank.services.nodes import Nodes
from imagebank.services.runtime import Runtime
from testkit import wait_for

STORESCP = "/usr/bin/storescp"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def remotes(data: Path) -> list[dict[str, object]]:
    archive = Archive.open(data, workers=1)
    try:
        return [{k: r[k] for k in ("name", "ae_title", "host", "port")}
                for r in Nodes(archive.sessions).remotes()]
    finally:
        archive.close()


def audit(data: Path) -> list[tuple[str, str | None]]:
    return [(e["action"], e["object_id"]) for e in cli_json("audit", "ls", data=data)
            if e["via"] == "cli"]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    cli("init", data=folder)
    return folder


def test_add_list_remove(data: Path) -> None:
    added = cli("ae", "add", "PACS", "10.1.2.3", "104", data=data)
    assert added.stdout.strip() == "Added remote AE PACS: PACS at 10.1.2.3:104."
    added = cli("ae", "add", "research-ws", "WS7.example.org", "11112", "--ae-title", "WS7",
                data=data)
    assert added.stdout.strip() == (
        "Added remote AE research-ws: WS7 at ws7.example.org:11112.")
    cli("ae", "add", "v6", "fd00::5", "4242", data=data, expect=None)  # name is its AE title
    assert remotes(data) == [
        {"name": "PACS", "ae_title": "PACS", "host": "10.1.2.3", "port": 104},
        {"name": "research-ws", "ae_title": "WS7", "host": "ws7.example.org", "port": 11112},
        {"name": "v6", "ae_title": "v6", "host": "fd00::5", "port": 4242},
    ]
    listed = cli_json("ae", "list", data=data)
    assert [(r["name"], r["ae_title"], r["port"]) for r in listed] == [
        ("PACS", "PACS", 104), ("research-ws", "WS7", 11112), ("v6", "v6", 4242)]
    assert all(r["created_at"] for r in listed)
    table = cli("ae", "list", data=data).stdout
    assert "research-ws" in table and "ws7.example.org" in table and "11112" in table

    removed = run("ae", "remove", "PACS", data=data)
    assert removed.stdout.strip() == "Removed remote AE PACS."
    assert [r["name"] for r in remotes(data)] == ["research-ws", "v6"]
    assert audit(data) == [("add_remote_ae", "PACS"), ("add_remote_ae", "research-ws"),
                           ("add_remote_ae", "v6"), ("remove_remote_ae", "PACS")]


@pytest.mark.parametrize(("argv", "words"), [
    (["SEVENTEEN_CHARS_X", "10.1.2.3", "104"], ["AE title", "16"]),
    (["PACS", "10.1.2.3", "104", "--ae-title", "A\\B"], ["backslash"]),
    (["PACS", "10.1.2", "104"], ["host", "IP address"]),
    (["PACS", "pacs_1.example.org", "104"], ["host"]),
    (["PACS", "10.1.2.3", "0"], ["port", "65535"]),
    (["PACS", "10.1.2.3", "70000"], ["port", "65535"]),
])
def test_invalid_remote_aes_are_refused_in_one_line(data: Path, argv: list[str],
                                                    words: list[str]) -> None:
    assert_one_line_error(cli("ae", "add", *argv, data=data, expect=None), *words)
    assert remotes(data) == []
    assert audit(data) == []


def test_conflicts_and_unknown_names(data: Path) -> None:
    cli("ae", "add", "PACS", "10.1.2.3", "104", data=data)
    assert_one_line_error(run("ae", "add", "PACS", "10.9.9.9", "104", data=data, expect=None),
                          "PACS", "already exists")
    assert_one_line_error(cli("ae", "add", "other", "10.9.9.9", "104", "--ae-title", "PACS",
                              data=data, expect=None), "already has the AE title")
    assert_one_line_error(run("ae", "remove", "NOPE", data=data, expect=None), "NOPE")
    assert_one_line_error(cli("ae", "echo", "NOPE", data=data, expect=None), "NOPE",
                          "ae list")
    assert remotes(data) == [{"name": "PACS", "ae_title": "PACS", "host": "10.1.2.3",
                              "port": 104}]
    assert audit(data) == [("add_remote_ae", "PACS")]


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[list[int]]:
    """Two DCMTK storescp: one accepting (port [0]), one refusing every association ([1])."""
    procs, ports = [], []
    for options in ([], ["--refuse"]):
        port = free_port()
        procs.append(subprocess.Popen(
            [STORESCP, "-aet", "DEST", "-od", str(tmp_path), *options, str(port)],
            env={**os.environ, "TCP_NODELAY": "1"}, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))
        ports.append(port)

    def up(port: int) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    assert wait_for(lambda: all(up(p) for p in ports), timeout=20)
    yield ports
    for proc in procs:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def test_echo_dcmtk_peers(data: Path, storescp: list[int]) -> None:
    accepting, refusing = storescp
    cli("ae", "add", "DEST", "127.0.0.1", str(accepting), data=data)
    cli("ae", "add", "refuser", "127.0.0.1", str(refusing), "--ae-title", "DEST2", data=data)
    closed = free_port()
    cli("ae", "add", "gone", "127.0.0.1", str(closed), "--ae-title", "GONE", data=data)

    ok = run("ae", "echo", "DEST", data=data)
    assert ok.stdout.startswith(f"C-ECHO to DEST (DEST at 127.0.0.1:{accepting}): ok in ")
    assert ok.stdout.strip().endswith(" ms.")
    line = assert_one_line_error(run("ae", "echo", "refuser", data=data, expect=None),
                                 "C-ECHO to refuser", f"(DEST2 at 127.0.0.1:{refusing})",
                                 "failed: ")
    # storescp --refuse sends an A-ASSOCIATE-RJ and closes at once: which one pynetdicom
    # sees first varies.
    assert ("association rejected: no reason given" in line
            or "no association (the remote AE aborted it" in line), line
    assert_one_line_error(cli("ae", "echo", "gone", data=data, expect=None),
                          "C-ECHO to gone", "connection refused")


def test_echo_an_imagebank_listener_and_its_rejections(data: Path) -> None:
    """Another imagebank node as the remote: each admission rule answers in words."""
    archive = Archive.open(data, workers=1)
    runtime = Runtime.for_archive(archive)
    runtime.start(run_jobs=False)
    nodes = Nodes(archive.sessions)
    archive.create_project("lung")
    nodes.set_ae_title("lung", "LUNG_AE")
    nodes.allow("lung", "IMAGEBANK")  # our own calling AE title (IMAGEBANK_DICOM_AE_TITLE)
    listener = DicomListener(runtime, host="127.0.0.1", port=0)
    listener.start()
    try:
        port = str(listener.port)
        cli("ae", "add", "LUNG_AE", "127.0.0.1", port, data=data)
        cli("ae", "add", "wrong", "127.0.0.1", port, "--ae-title", "NOT_HERE", data=data)
        assert "ok in" in cli("ae", "echo", "LUNG_AE", data=data).stdout
        assert_one_line_error(cli("ae", "echo", "wrong", data=data, expect=None),
                              "the remote AE is not called NOT_HERE")
        nodes.disallow("lung", "IMAGEBANK")
        assert_one_line_error(
            cli("ae", "echo", "LUNG_AE", data=data, expect=None),
            "the remote AE does not accept the calling AE title IMAGEBANK")
    finally:
        listener.stop()
        runtime.stop()
        archive.close()
