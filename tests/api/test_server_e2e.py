"""The real server over real HTTP on loopback: ``imagebank serve`` in a subprocess.

Users and tokens are made with the command line beforehand, as an administrator would; the
server is stopped by its process ID (terminate, then kill). Everything the server printed is
checked for the synthetic patients' identifiers and for query strings: neither may reach a
log. The main walk runs on SQLite and on PostgreSQL; the rest on SQLite.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from apiworld import PASSWORD, problem

from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes

IMAGEBANK = Path(sys.executable).parent / "imagebank"
API = "/api/v1"
SECRET = "e2e-" + "k" * 60
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEBANK_")}
    env.update(IMAGEBANK_DATA=str(data), IMAGEBANK_WORKERS="1", **extra)
    return env


def imagebank(*args: str, env: dict[str, str], stdin: str = "", expect: int | None = 0
              ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(IMAGEBANK), *args], check=False, capture_output=True,
                          text=True, input=stdin, env=env, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    if expect is not None:
        assert proc.returncode == expect, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def add_admin(env: dict[str, str]) -> str:
    """User "admin" and a full-scope token for it, made with the command line."""
    imagebank("user", "add", "admin", "--admin", "--password-stdin", env=env,
              stdin=PASSWORD + "\n")
    made = imagebank("token", "create", "admin", "--scope", "read", "--scope", "write",
                     "--scope", "admin", env=env)
    token = made.stdout.strip()
    assert re.fullmatch(r"ibt_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", token), made.stdout
    return token


class Server:
    """One ``imagebank serve`` process; its output goes to files (read them with ``log``)."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.env = env
        self.runs = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, *args: str) -> None:
        for _attempt in range(3):
            if self._start(args):
                return
        pytest.fail(f"the server could not get a free port:\n{self.log()}")

    def _start(self, args: tuple[str, ...]) -> bool:
        """Start on a free port; False if another process took the port meanwhile."""
        assert self.proc is None
        self.runs += 1
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        err_path = self.folder / f"server-{self.runs}.err"
        with (self.folder / f"server-{self.runs}.out").open("wb") as out, \
                err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [str(IMAGEBANK), "serve", "--host", "127.0.0.1", "--port", str(port), *args],
                stdout=out, stderr=err, env=self.env)
        # Ours is listening when it says so (a health answer alone could come from another
        # test's server that took the same port first).
        listening = f"Uvicorn running on {self.url}"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                if "address already in use" in err_path.read_text(errors="replace"):
                    return False
                pytest.fail(f"the server exited:\n{self.log()}")
            if listening in err_path.read_text(errors="replace"):
                try:
                    if requests.get(self.url + API + "/health", timeout=2).status_code == 200:
                        return True
                except requests.ConnectionError:
                    pass
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"the server did not answer within {START_TIMEOUT} s:\n{self.log()}")

    def stop(self) -> bool:
        """SIGTERM, then SIGKILL if the server lingers; True if it shut down gracefully
        (uvicorn ends by re-raising the SIGTERM it caught, hence status -15)."""
        assert self.proc is not None
        pid = self.proc.pid
        self.proc.terminate()
        try:
            code = self.proc.wait(timeout=20)
            graceful = code in (0, -signal.SIGTERM)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=20)
            graceful = False
        self.proc = None
        last = (self.folder / f"server-{self.runs}.err").read_text(errors="replace")
        return graceful and f"Finished server process [{pid}]" in last

    def kill(self) -> None:
        """SIGKILL: the server has no chance to finish anything."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=20)
        self.proc = None

    def log(self) -> str:
        return "".join(path.read_text(encoding="utf-8", errors="replace")
                       for path in sorted(self.folder.glob("server-*.*")))

    def get(self, path: str, token: str | None = None, **kwargs: Any) -> requests.Response:
        return requests.get(self.url + API + path, headers=_auth(token, kwargs), timeout=30,
                            **kwargs)

    def post(self, path: str, token: str | None = None, **kwargs: Any) -> requests.Response:
        return requests.post(self.url + API + path, headers=_auth(token, kwargs), timeout=60,
                             **kwargs)


def _auth(token: str | None, kwargs: dict[str, Any] | None = None) -> dict[str, str]:
    headers = dict((kwargs or {}).pop("headers", None) or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Server]]:
    """Servers for the test; any still running at its end is stopped by its PID."""
    servers: list[Server] = []

    def make(env: dict[str, str]) -> Server:
        folder = tmp_path / f"logs-{len(servers)}"
        folder.mkdir()
        servers.append(Server(folder, env))
        return servers[-1]

    yield make
    for server in servers:
        if server.proc is not None:
            server.stop()


def study_files(patient: int, slices: int, modality: str = "CT") -> list[bytes]:
    spec = SeriesSpec(modality=modality, slices=slices, rows=16, columns=16)
    return [to_bytes(ds) for ds in make_study(SyntheticPatient.make(patient), series=[spec])]


def zipped(files: list[bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for i, content in enumerate(files):
            archive.writestr(f"upload/{i:05d}.dcm", content)
    return buffer.getvalue()


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def assert_no_patient_data(log: str, patients: list[int]) -> None:
    for number in patients:
        patient = SyntheticPatient.make(number)
        for value in (patient.patient_id, patient.name, patient.name.replace("^", " ")):
            assert value not in log, f"the server printed patient {number}'s data"
    assert "PatientID" not in log and "?" not in log, "the server printed a query string"


# -- the main walk, on both databases ------------------------------------------------------------
def test_admin_uploads_searches_and_downloads_over_http(
        tmp_path: Path, database_url: str, server_factory: Callable[[dict[str, str]], Server]
) -> None:
    env = server_env(tmp_path / "data", IMAGEBANK_DATABASE_URL=database_url)
    token = add_admin(env)
    server = server_factory(env)
    server.start()

    created = server.post("/projects", token, json={"id": "trial", "name": "Trial"})
    assert created.status_code == 201, created.text
    assert created.json()["id"] == "trial"
    assert problem(server.post("/projects", token, json={"id": "trial"}))["status"] == 409
    again = server.post("/users", token, json={"username": "admin", "password": PASSWORD})
    assert problem(again)["status"] == 409

    ct = study_files(41, 3)
    mr = study_files(42, 2, "MR")
    for content in ct:
        response = server.post("/projects/trial/instances", token, data=content,
                               headers={"Content-Type": "application/dicom"})
        assert response.status_code == 200, response.text
        assert (response.json()["stored"], response.json()["duplicates"]) == (1, 0)
    again = server.post("/projects/trial/instances", token, data=ct[0],
                        headers={"Content-Type": "application/dicom"})
    assert (again.json()["stored"], again.json()["duplicates"]) == (0, 1)
    batch = server.post("/projects/trial/instances", token, data=zipped(mr),
                        headers={"Content-Type": "application/zip"})
    assert batch.status_code == 200, batch.text
    assert (batch.json()["stored"], batch.json()["quarantined"]) == (2, 0)
    # Not DICOM: refused as a problem, kept in quarantine.
    refused = server.post("/projects/trial/instances", token, data=b"not a dicom file",
                          headers={"Content-Type": "application/dicom"})
    assert problem(refused)["status"] == 400

    studies = server.get("/projects/trial/studies", token)
    assert studies.status_code == 200
    counts = sorted((s["modalities_in_study"], s["num_instances"])
                    for s in studies.json()["items"])
    assert counts == [("CT", 3), ("MR", 2)]
    patient = SyntheticPatient.make(41)
    found = server.get("/projects/trial/studies", token,
                       params={"PatientID": patient.patient_id})
    assert [s["patient_id"] for s in found.json()["items"]] == [patient.patient_id]
    study = found.json()["items"][0]
    assert server.get("/projects/trial/studies", token,
                      params={"PatientID": "SYN9999999"}).json()["items"] == []

    download = server.get(f"/projects/trial/studies/{study['id']}/archive", token)
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/zip"
    assert patient.patient_id not in download.headers.get("content-disposition", "")
    with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
        names = archive.namelist()
        assert sorted(sha256(archive.read(n)) for n in names) == sorted(map(sha256, ct))
    assert all(n.startswith(study["id"] + "/") and n.endswith(".dcm") for n in names)
    assert not any(patient.patient_id in n for n in names)

    # Without a token: 401, and nothing about the project.
    assert problem(server.get("/projects/trial/studies"))["status"] == 401
    # A password sign-in sets a Secure, HttpOnly, SameSite=Strict cookie (default settings).
    signed = server.post("/session", json={"username": "admin", "password": PASSWORD})
    assert signed.status_code == 200
    cookie = signed.headers["set-cookie"]
    flags = {part.strip().lower() for part in cookie.split(";")}
    assert {"secure", "httponly", "samesite=strict"} <= flags, cookie
    value = cookie.split(";")[0]
    me = server.get("/me", headers={"Cookie": value})
    assert (me.status_code, me.json()["via"]) == (200, "session")

    assert server.stop()
    log = server.log()
    assert "/api/v1/projects/{project}/studies 200" in log  # requests are logged, as routes
    assert_no_patient_data(log, [41, 42])


# -- sessions and the demo administrator ------------------------------------------------------
def test_demo_admin_password_signs_in_and_the_session_needs_csrf(
        tmp_path: Path, server_factory: Callable[[dict[str, str]], Server]) -> None:
    env = server_env(tmp_path / "data", IMAGEBANK_COOKIE_SECURE="false")
    server = server_factory(env)
    server.start("--demo-admin")
    printed = server.log()
    assert f"{server.url}/" in printed
    match = re.search(r"administrator: admin\s+password: (\S+)", printed)
    assert match, printed
    password = match.group(1)

    session = requests.Session()
    url = server.url + API
    wrong = session.post(url + "/session", json={"username": "admin", "password": "wrong " * 3},
                         timeout=30)
    assert problem(wrong)["code"] == "bad_credentials"
    signed = session.post(url + "/session", json={"username": "admin", "password": password},
                          timeout=30)
    assert signed.status_code == 200, signed.text
    body = signed.json()
    assert (body["username"], body["is_admin"]) == ("admin", True)
    flags = {part.strip().lower() for part in signed.headers["set-cookie"].split(";")}
    assert "httponly" in flags and "samesite=strict" in flags and "secure" not in flags
    assert session.cookies.get("imagebank_session")
    assert session.get(url + "/me", timeout=30).json()["via"] == "session"

    # A change needs the CSRF token given at sign-in; a wrong one is refused too.
    missing = session.post(url + "/projects", json={"id": "csrf"}, timeout=30)
    assert problem(missing)["code"] == "csrf"
    forged = session.post(url + "/projects", json={"id": "csrf"}, timeout=30,
                          headers={"X-CSRF-Token": "0" * 64})
    assert problem(forged)["code"] == "csrf"
    made = session.post(url + "/projects", json={"id": "csrf"}, timeout=30,
                        headers={"X-CSRF-Token": body["csrf_token"]})
    assert made.status_code == 201, made.text

    cookie = session.cookies["imagebank_session"]
    ended = session.delete(url + "/session", timeout=30,
                           headers={"X-CSRF-Token": body["csrf_token"]})
    assert ended.status_code == 204
    assert "imagebank_session" not in session.cookies  # the browser is told to drop it
    assert session.get(url + "/me", timeout=30).status_code == 401
    # and the server has ended it: the old cookie, sent again, is refused.
    replayed = requests.get(url + "/me", headers={"Cookie": f"imagebank_session={cookie}"},
                            timeout=30)
    assert problem(replayed)["code"] == "session_ended"

    # A new server with --demo-admin gives admin a new password: the old one stops working.
    assert server.stop()
    server.start("--demo-admin")
    passwords = re.findall(r"administrator: admin\s+password: (\S+)", server.log())
    assert len(passwords) == 2 and passwords[1] != password
    old = server.post("/session", json={"username": "admin", "password": password})
    assert problem(old)["code"] == "bad_credentials"
    new = server.post("/session", json={"username": "admin", "password": passwords[1]})
    assert new.status_code == 200
    assert server.stop()


# -- jobs survive a killed server -------------------------------------------------------------
def test_import_job_finishes_after_the_server_is_killed(
        tmp_path: Path, server_factory: Callable[[dict[str, str]], Server]) -> None:
    # Small batches: the import commits often and runs long enough to be killed midway.
    env = server_env(tmp_path / "data", IMAGEBANK_BATCH_SIZE="4")
    token = add_admin(env)
    files = [content for patient in range(20) for content in study_files(100 + patient, 60)]
    upload = zipped(files)
    server = server_factory(env)
    server.start()
    assert server.post("/projects", token, json={"id": "bulk"}).status_code == 201

    submitted = server.post("/projects/bulk/imports", token, data=upload,
                            headers={"Content-Type": "application/zip"})
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    seen: dict[str, Any] = submitted.json()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seen = server.get(f"/jobs/{job_id}", token).json()
        if seen["state"] != "queued" and (seen["progress_done"] > 0
                                          or seen["state"] != "running"):
            break
        time.sleep(0.02)
    server.kill()
    killed_while_running = seen["state"] == "running"

    server.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = server.get(f"/jobs/{job_id}", token).json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.2)
    assert job["state"] == "succeeded", job
    result = job["result"]
    assert result["stored"] + result["duplicates"] == len(files)
    assert (result["quarantined"], result["conflicts"]) == (0, 0)
    if killed_while_running:
        # It was claimed twice; the second run found what the first had stored.
        assert job["attempts"] == 2, job
        assert result["duplicates"] > 0 or seen["progress_done"] == 0, (seen, result)
    project = server.get("/projects/bulk", token).json()
    assert project["counts"]["instances"] == len(files), project
    assert project["counts"]["studies"] == 20
    assert not list((tmp_path / "data" / "spool").glob(f"{job_id}*"))
    assert server.stop()
    assert_no_patient_data(server.log(), list(range(100, 120)))


# -- refusing to listen beyond loopback -----------------------------------------------------
def _refused_serve(env: dict[str, str], *args: str) -> str:
    """``serve --host 0.0.0.0`` while the port is taken on 127.0.0.1: a server that tried
    to bind would fail with 'address in use'; a refusal comes first, with exit status 2."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = str(holder.getsockname()[1])
        proc = imagebank("serve", "--host", "0.0.0.0", "--port", port, *args,
                         env=env, expect=2)
    output = proc.stdout + proc.stderr
    assert "Uvicorn running" not in output and "address already in use" not in output
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_serve_beyond_loopback_needs_a_secret_key_and_an_administrator(tmp_path: Path
                                                                       ) -> None:
    env = server_env(tmp_path / "data")
    line = _refused_serve(env)
    assert "IMAGEBANK_SECRET_KEY" in line and "0.0.0.0" in line
    # Even with an administrator, the default secret is refused.
    imagebank("user", "add", "admin", "--admin", "--password-stdin", env=env,
              stdin=PASSWORD + "\n")
    assert "IMAGEBANK_SECRET_KEY" in _refused_serve(env)

    keyed = server_env(tmp_path / "other", IMAGEBANK_SECRET_KEY=SECRET)
    line = _refused_serve(keyed)
    assert "administrator" in line and "imagebank user add" in line
    assert SECRET not in line
    assert "loopback" in _refused_serve(env, "--demo-admin")


def test_the_openapi_document_is_served(tmp_path: Path,
                                        server_factory: Callable[[dict[str, str]], Server]
                                        ) -> None:
    server = server_factory(server_env(tmp_path / "data"))
    server.start()
    document = requests.get(server.url + API + "/openapi.json", timeout=30)
    assert document.status_code == 200
    snapshot = json.loads(Path(__file__).with_name("openapi.snapshot.json").read_text())
    assert document.json()["paths"].keys() == snapshot["paths"].keys()
    docs = requests.get(server.url + "/api/docs", timeout=30)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert server.stop()


def test_two_server_processes_share_one_audit_chain(
        tmp_path: Path, server_factory: Callable[[dict[str, str]], Server]) -> None:
    """`serve --workers 2`: concurrent uploads land in both processes; every request is
    audited once and the chain the two processes wrote together verifies."""
    env = server_env(tmp_path / "data")
    token = add_admin(env)
    server = server_factory(env)
    server.start("--workers", "2")
    assert server.post("/projects", token, json={"id": "multi"}).status_code == 201
    files = [f for patient in range(4) for f in study_files(patient, 5)]
    statuses: list[int] = []

    def upload(part: list[bytes]) -> None:
        with requests.Session() as session:
            for blob in part:
                response = session.post(
                    server.url + API + "/projects/multi/instances", data=blob, timeout=60,
                    headers={"Authorization": f"Bearer {token}",
                             "Content-Type": "application/dicom"})
                statuses.append(response.status_code)

    threads = [threading.Thread(target=upload, args=(files[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * len(files)
    counts = server.get("/projects/multi", token).json()["counts"]
    assert counts["instances"] == len(files)
    server.stop()
    pids = set(re.findall(r"Started server process \[(\d+)\]", server.log()))
    assert len(pids) == 2, server.log()[-2000:]
    verified = imagebank("audit", "verify", "--json", env=env)
    report = json.loads(verified.stdout)
    assert report["ok"] is True
    # project creation, the uploads and the project summary (the CLI adds its own events)
    uploads = [e for e in json.loads(imagebank("audit", "ls", "--project", "multi", "--limit",
                                               "1000", "--json", env=env).stdout)
               if e["route"] == API + "/projects/{project}/instances"]
    assert len(uploads) == len(files)
