"""The command line's DICOM set-up (called AE titles, accepted callers) and its listeners.

As in test_cli_server.py, exit codes and one-line errors are checked on the real console
script in a subprocess, and most output checks run ``main()`` in this process; what the
commands did is checked through the services (``Nodes.admit``), not only through what they
print. ``imagebank scp`` and ``imagebank serve --dicom-port`` run as subprocesses answering
real DCMTK peers on loopback, and are stopped by their process ID (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from clikit import IMAGEBANK, assert_one_line_error, cli, cli_json, run

from imagebank.dicom.synthetic import SyntheticPatient
from imagebank.services.archive import Archive
from imagebank.services.nodes import Nodes
from imagebank.services.runtime import Runtime
from testkit import write_study

ECHOSCU = "/usr/bin/echoscu"
STORESCU = "/usr/bin/storescu"
START_TIMEOUT = 60.0
BAD_TITLES = ["SEVENTEEN_CHARS_X", "LUNG\\CT", "   ", "TAB\tTAB"]


def services(data: Path) -> tuple[Archive, Nodes]:
    archive = Archive.open(data, workers=1)
    return archive, Nodes(archive.sessions)


def cli_events(data: Path) -> list[tuple[str, str | None]]:
    return [(e["action"], e["project_id"]) for e in cli_json("audit", "ls", data=data)]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data folder with project "alpha" (AE title ALPHA_AE) and "beta" (none)."""
    folder = tmp_path / "data"
    cli("project", "create", "alpha", "--ae-title", "ALPHA_AE", data=folder)
    cli("project", "create", "beta", data=folder)
    return folder


# -- called AE titles -------------------------------------------------------------------------
def test_create_with_ae_title_then_show_set_and_clear(tmp_path: Path) -> None:
    data = tmp_path / "data"
    made = run("project", "create", "lung", "--ae-title", "LUNG_CT", data=data)
    assert made.stdout.strip() == "Created project lung (AE title LUNG_CT)."
    assert cli("project", "ae", "lung", data=data).stdout.strip() == "lung: AE title LUNG_CT"
    archive, nodes = services(data)
    try:
        assert nodes.ae_title("lung") == "LUNG_CT"
        assert nodes.admit("LUNG_CT", "ANY", "127.0.0.1").reason == "calling_not_allowed"
        assert nodes.admit("LUNG_CT", "ANY", "127.0.0.1").project_id == "lung"

        # Set another (surrounding spaces are not significant in an AE title): the old one
        # no longer routes anywhere.
        changed = cli("project", "ae", "lung", " LUNG_2 ", data=data)
        assert changed.stdout.strip() == "lung: AE title LUNG_2"
        assert nodes.ae_title("lung") == "LUNG_2"
        assert nodes.admit("LUNG_CT", "ANY", "127.0.0.1").reason == "called_unknown"
        assert nodes.admit("LUNG_2", "ANY", "127.0.0.1").project_id == "lung"
        # Setting the title a project already has is not a conflict with itself.
        cli("project", "ae", "lung", "LUNG_2", data=data)

        cleared = cli("project", "ae", "lung", "--clear", data=data)
        assert cleared.stdout.strip() == "lung: AE title (none)"
        assert nodes.ae_title("lung") is None
        assert nodes.admit("LUNG_2", "ANY", "127.0.0.1").reason == "called_unknown"
        # A cleared title is free for another project.
        cli("project", "create", "other", "--ae-title", "LUNG_2", data=data)
        assert nodes.project_of("LUNG_2") == "other"
    finally:
        archive.close()
    assert cli_events(data) == [("set_ae_title", "lung")] * 3
    assert_one_line_error(cli("project", "ae", "nowhere", data=data, expect=None), "nowhere")


@pytest.mark.parametrize("title", BAD_TITLES)
def test_invalid_ae_titles_are_refused_in_one_line(data: Path, title: str) -> None:
    assert_one_line_error(cli("project", "create", "gamma", "--ae-title", title, data=data,
                              expect=None), "AE title")
    assert_one_line_error(cli("project", "ae", "beta", title, data=data, expect=None),
                          "AE title")
    assert_one_line_error(cli("project", "allow", "alpha", title, data=data, expect=None),
                          "AE title")
    # Refused before anything was made or changed.
    assert "gamma" not in [p["id"] for p in cli_json("project", "list", data=data)]
    assert cli("project", "ae", "beta", data=data).stdout.strip() == "beta: AE title (none)"
    assert cli_json("project", "callers", data=data) == []


def test_invalid_ae_title_exit_status_on_the_console_script(data: Path) -> None:
    line = assert_one_line_error(run("project", "ae", "beta", "SEVENTEEN_CHARS_X", data=data,
                                     expect=None), "AE title", "16")
    assert "\\" not in line
    assert_one_line_error(run("project", "create", "gamma", "--ae-title", "A\\B", data=data,
                              expect=None), "backslash")


def test_an_ae_title_belongs_to_one_project(data: Path) -> None:
    taken = run("project", "create", "gamma", "--ae-title", "ALPHA_AE", data=data, expect=None)
    assert_one_line_error(taken, "ALPHA_AE", "already")
    # The refused create made nothing: no half-made project without its AE title.
    assert sorted(p["id"] for p in cli_json("project", "list", data=data)) == ["alpha", "beta"]
    assert_one_line_error(run("project", "ae", "beta", "ALPHA_AE", data=data, expect=None),
                          "ALPHA_AE", "already")
    assert cli("project", "ae", "beta", data=data).stdout.strip() == "beta: AE title (none)"
    assert cli("project", "ae", "alpha", data=data).stdout.strip() == (
        "alpha: AE title ALPHA_AE")
    # AE titles are case-sensitive (PS3.5): another case is another title.
    cli("project", "ae", "beta", "alpha_ae", data=data)
    archive, nodes = services(data)
    try:
        assert (nodes.project_of("ALPHA_AE"), nodes.project_of("alpha_ae")) == ("alpha",
                                                                               "beta")
    finally:
        archive.close()


# -- accepted callers ---------------------------------------------------------------------------
def test_allow_disallow_and_callers(data: Path) -> None:
    assert cli("project", "allow", "alpha", "STORESCU", data=data).stdout.strip() == (
        "alpha accepts STORESCU from any address.")
    assert cli("project", "allow", "alpha", "CT_SCANNER", "--host", "10.1.2.3",
               data=data).stdout.strip() == "alpha accepts CT_SCANNER from 10.1.2.3."
    cli("project", "ae", "beta", "BETA_AE", data=data)
    cli("project", "allow", "beta", "MR_SCANNER", data=data)
    cli("project", "allow", "alpha", "STORESCU", data=data)  # again: no second row
    assert cli_json("project", "callers", data=data) == [
        {"project_id": "alpha", "ae_title": "CT_SCANNER", "host": "10.1.2.3"},
        {"project_id": "alpha", "ae_title": "STORESCU", "host": ""},
        {"project_id": "beta", "ae_title": "MR_SCANNER", "host": ""},
    ]
    assert [c["ae_title"] for c in cli_json("project", "callers", "beta", data=data)] == [
        "MR_SCANNER"]
    table = cli("project", "callers", data=data).stdout
    assert "CT_SCANNER" in table and "10.1.2.3" in table and "MR_SCANNER" in table

    archive, nodes = services(data)
    try:
        def reason(called: str, calling: str, address: str = "127.0.0.1") -> str:
            return nodes.admit(called, calling, address).reason

        assert reason("ALPHA_AE", "STORESCU") == "ok"
        assert reason("ALPHA_AE", "CT_SCANNER", "10.1.2.3") == "ok"
        assert reason("ALPHA_AE", "CT_SCANNER") == "calling_not_allowed"
        assert reason("ALPHA_AE", "MR_SCANNER") == "calling_not_allowed"
        assert reason("BETA_AE", "MR_SCANNER") == "ok"
        assert reason("BETA_AE", "STORESCU") == "calling_not_allowed"

        result = run("project", "disallow", "alpha", "STORESCU", data=data)
        assert result.stdout.strip() == "alpha no longer accepts STORESCU."
        assert reason("ALPHA_AE", "STORESCU") == "calling_not_allowed"
    finally:
        archive.close()
    assert [c["ae_title"] for c in cli_json("project", "callers", "alpha", data=data)] == [
        "CT_SCANNER"]

    assert_one_line_error(run("project", "disallow", "alpha", "STORESCU", data=data,
                              expect=None), "STORESCU")
    assert_one_line_error(cli("project", "disallow", "beta", "CT_SCANNER", data=data,
                              expect=None), "CT_SCANNER")
    assert_one_line_error(cli("project", "allow", "nowhere", "STORESCU", data=data,
                              expect=None), "nowhere")
    assert_one_line_error(cli("project", "allow", "alpha", "X", "--host", "h" * 65,
                              data=data, expect=None), "host")
    assert len(cli_json("project", "callers", data=data)) == 2
    assert [a for a, _ in cli_events(data)] == [
        "allow_ae", "allow_ae", "set_ae_title", "allow_ae", "allow_ae", "disallow_ae"]


# -- the listeners ----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dcmtk(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*argv], env={**os.environ, "TCP_NODELAY": "1"},
                          capture_output=True, text=True, timeout=60, check=False)


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    log: Path
    port: int

    def output(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(
            self.log.parent.glob(self.log.name + ".*")))


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Start ``imagebank`` subprocesses; any still running at the end is killed by PID."""
    started: list[Process] = []

    def start(data: Path, ready: Callable[[int, int], list[str]],
              argv: Callable[[int, int], list[str]]) -> Process:
        for attempt in range(3):
            port, other = free_port(), free_port()
            log = tmp_path / f"imagebank-{len(started)}-{attempt}"
            env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEBANK_")}
            env.update(IMAGEBANK_DATA=str(data), IMAGEBANK_WORKERS="1", COLUMNS="200")
            with log.with_suffix(".out").open("wb") as out, \
                    log.with_suffix(".err").open("wb") as err:
                proc = subprocess.Popen([str(IMAGEBANK), *argv(port, other)], stdout=out,
                                        stderr=err, env=env)
            process = Process(proc, log, port)
            started.append(process)
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                text = process.output()
                if proc.poll() is not None:
                    if "in use" in text or "cannot listen" in text:
                        break  # another process took the port meanwhile: try others
                    pytest.fail(f"imagebank exited ({proc.returncode}):\n{text}")
                if all(line in text for line in ready(port, other)):
                    return process
                time.sleep(0.1)
            else:
                pytest.fail(f"imagebank was not ready in {START_TIMEOUT} s:\n{process.output()}")
        pytest.fail("no free port")

    yield start
    for process in started:
        if process.proc.poll() is None:
            os.kill(process.proc.pid, signal.SIGKILL)
            process.proc.wait(timeout=20)


def stop(process: Process) -> int:
    """SIGTERM by PID, then SIGKILL if it lingers; returns the exit status of the SIGTERM."""
    os.kill(process.proc.pid, signal.SIGTERM)
    try:
        return process.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.kill(process.proc.pid, signal.SIGKILL)
        process.proc.wait(timeout=20)
        pytest.fail(f"SIGTERM did not stop it:\n{process.output()}")


def dicom_events(data: Path) -> list[dict[str, Any]]:
    archive = Archive.open(data, workers=1)
    try:
        return [e for e in Runtime.for_archive(archive).audit.events(limit=1000)
                if e["route"] == "dimse associate"]
    finally:
        archive.close()


def assert_no_patient_data(text: str, patient: int) -> None:
    person = SyntheticPatient.make(patient)
    for word in (person.patient_id, person.name, person.name.split("^")[0]):
        assert word not in text


def test_scp_command_receives_and_stops_on_sigterm(data: Path, tmp_path: Path,
                                                   launch: Callable[..., Process]) -> None:
    # DCMTK's own default calling AE titles.
    cli("project", "allow", "alpha", "ECHOSCU", data=data)
    cli("project", "allow", "alpha", "STORESCU", data=data)
    scp = launch(data, lambda port, _: [f"DICOM listener IMAGEBANK on 127.0.0.1:{port}"],
                 lambda port, _: ["scp", "--host", "127.0.0.1", "--port", str(port)])
    port = str(scp.port)
    files = write_study(tmp_path / "study", 11, slices=3)
    refused = dcmtk(ECHOSCU, "-aec", "BETA_AE", "127.0.0.1", port)
    assert "Called AE Title Not Recognized" in refused.stderr, refused.stderr
    echo = dcmtk(ECHOSCU, "-aec", "ALPHA_AE", "127.0.0.1", port)
    assert echo.returncode == 0, echo.stderr
    sent = dcmtk(STORESCU, "-aec", "ALPHA_AE", "127.0.0.1", port, *map(str, files))
    assert sent.returncode == 0, sent.stderr
    # Stopped at once (storescu had its answer before the listener wrote the association's
    # audit event): what the peers were told is recorded, their audit events included.
    assert stop(scp) == 0, scp.output()
    assert "Traceback" not in scp.output()
    assert_no_patient_data(scp.output(), 11)

    archive = Archive.open(data, workers=1)
    try:
        assert archive.stats()["instances"] == 3
        assert archive.check().ok
    finally:
        archive.close()
    events = dicom_events(data)
    assert [(e["actor"], e["outcome"]) for e in events] == [
        ("ECHOSCU", "denied"), ("ECHOSCU", "ok"), ("STORESCU", "ok")]
    assert (json.loads(events[1]["detail"])["echoes"],
            json.loads(events[2]["detail"])["stored"]) == (1, 3)
    # Nothing listens on the port any more (closed connections may linger in TIME_WAIT).
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", scp.port))


def test_serve_with_a_dicom_port_answers_http_and_dicom(data: Path, tmp_path: Path,
                                                         launch: Callable[..., Process]
                                                         ) -> None:
    cli("project", "allow", "alpha", "ECHOSCU", data=data)
    server = launch(
        data,
        lambda port, dicom: [f"Uvicorn running on http://127.0.0.1:{port}",
                             f"DICOM listener IMAGEBANK on 127.0.0.1:{dicom}"],
        lambda port, dicom: ["serve", "--host", "127.0.0.1", "--port", str(port),
                             "--dicom-port", str(dicom)])
    text = server.output()
    dicom_port = int(text.split("DICOM listener IMAGEBANK on 127.0.0.1:")[1].split()[0])
    assert dicom_port != server.port
    health = requests.get(f"http://127.0.0.1:{server.port}/api/v1/health", timeout=10)
    assert health.status_code == 200, health.text
    echo = dcmtk(ECHOSCU, "-aec", "ALPHA_AE", "127.0.0.1", str(dicom_port))
    assert echo.returncode == 0, echo.stderr
    refused = dcmtk(ECHOSCU, "-aet", "STRANGER", "-aec", "ALPHA_AE", "127.0.0.1",
                    str(dicom_port))
    assert "Calling AE Title Not Recognized" in refused.stderr, refused.stderr
    assert stop(server) in (0, -signal.SIGTERM), server.output()
    assert "Traceback" not in server.output()
    events = dicom_events(data)
    assert [(e["actor"], e["outcome"]) for e in events] == [("ECHOSCU", "ok"),
                                                           ("STRANGER", "denied")]
