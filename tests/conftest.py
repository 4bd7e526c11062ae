"""Shared fixtures: real PostgreSQL beside SQLite, archives, synthetic DICOM corpora."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
from imagebank.services.archive import Archive

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("IMAGEBANK_SHARED_DATA", REPO.parent / "shared" / "data"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin() -> Path:
    base = Path("/usr/lib/postgresql")
    versions = sorted((p for p in base.glob("*/bin/initdb")), reverse=True)
    if not versions:
        raise RuntimeError("PostgreSQL server binaries not found: apt-get install postgresql")
    return versions[0].parent


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server on loopback for the test session (or IMAGEBANK_TEST_PG_URL).

    Started as the ``postgres`` user when running as root (PostgreSQL refuses root).
    """
    given = os.environ.get("IMAGEBANK_TEST_PG_URL")
    if given:
        yield given
        return
    bin_dir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="imagebank-pg-"))
    data = root / "data"
    port = _free_port()
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(root, "postgres", "postgres")
    subprocess.run([*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", "imagebank",
                    "--auth=trust", "-E", "UTF8", "--no-sync"],
                   check=True, capture_output=True)
    options = (f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root}"
               " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
               " -c max_connections=200")
    subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-w",
                    "-l", str(root / "log"), "start"], check=True, capture_output=True)
    url = f"postgresql+psycopg://imagebank@127.0.0.1:{port}/postgres"
    try:
        yield url
    finally:
        subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def new_pg_database(server_url: str) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs twice: on SQLite and on a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'index.sqlite3'}"
    return new_pg_database(request.getfixturevalue("postgres_url"))


@pytest.fixture
def archive(tmp_path: Path, database_url: str) -> Iterator[Archive]:
    arch = Archive.open(tmp_path / "data", database_url=database_url, workers=2)
    try:
        yield arch
    finally:
        arch.close()


@pytest.fixture
def sqlite_archive(tmp_path: Path) -> Iterator[Archive]:
    arch = Archive.open(tmp_path / "data", workers=2)
    try:
        yield arch
    finally:
        arch.close()


def write_study(folder: Path, patient: int = 0, *, study_number: int = 0, slices: int = 4,
                rows: int = 64, columns: int = 64, modality: str = "CT",
                issuer: str = "SYNTH-TRUST") -> list[Path]:
    """Write one synthetic study's files into ``folder``; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    spec = SeriesSpec(modality=modality, slices=slices, rows=rows, columns=columns)
    studies = make_study(SyntheticPatient.make(patient, issuer), study_number=study_number,
                         series=[spec])
    for i, ds in enumerate(studies):
        path = folder / f"p{patient}-s{study_number}-{i:04d}.dcm"
        path.write_bytes(to_bytes(ds))
        paths.append(path)
    return paths


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A small synthetic corpus: 3 patients, 4 studies, 16 instances."""
    folder = tmp_path / "corpus"
    write_study(folder, 0, study_number=0)
    write_study(folder, 0, study_number=1)
    write_study(folder, 1, study_number=0)
    write_study(folder, 2, study_number=0, modality="MR")
    return folder


def wait_for(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False
