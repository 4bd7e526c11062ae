"""Shared fixtures: real PostgreSQL beside SQLite, archives, synthetic DICOM corpora."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagebank.services.archive import Archive
from testkit import REPO, SHARED_DATA, new_pg_database, wait_for, write_study

__all__ = ["REPO", "SHARED_DATA", "new_pg_database", "wait_for", "write_study"]


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


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A small synthetic corpus: 3 patients, 4 studies, 16 instances."""
    folder = tmp_path / "corpus"
    write_study(folder, 0, study_number=0)
    write_study(folder, 0, study_number=1)
    write_study(folder, 1, study_number=0)
    write_study(folder, 2, study_number=0, modality="MR")
    return folder
