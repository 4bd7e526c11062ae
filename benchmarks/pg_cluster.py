"""A PostgreSQL server for the benchmarks that measure PostgreSQL too.

``--postgres-url URL`` names a server (any database on it: each run creates its own database
and drops it afterwards); ``--postgres-url auto`` starts a throwaway cluster on loopback as
``tests/conftest.py`` does (``initdb`` as the ``postgres`` user when running as root, trust
authentication, a free port), stopped and deleted when the benchmark ends. Unlike the tests'
cluster it keeps ``fsync`` and ``synchronous_commit`` on: a benchmark measures a durable
index.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    if not versions:
        raise RuntimeError("PostgreSQL server binaries not found: apt-get install postgresql")
    return versions[0].parent


@contextmanager
def postgres_server(url: str | None, keep_in: Path | None = None) -> Iterator[str | None]:
    """The server URL to use: ``url`` itself, a throwaway cluster's for ``"auto"``, or None.
    With ``keep_in``, the "auto" cluster's files live (and stay) there: its databases are a
    cache that the next run starts again."""
    if url is None or url != "auto":
        yield url
        return
    bin_dir = _pg_bin()
    root = keep_in if keep_in is not None else Path(tempfile.mkdtemp(prefix="imagebank-bench-pg-"))
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data"
    port = _free_port()
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(root, "postgres", "postgres")
    if not (data / "PG_VERSION").exists():
        shutil.rmtree(data, ignore_errors=True)
        subprocess.run([*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", "imagebank",
                        "--auth=trust", "-E", "UTF8"], check=True, capture_output=True)
    options = (f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root}"
               " -c shared_buffers=1GB -c work_mem=64MB -c maintenance_work_mem=512MB"
               " -c effective_cache_size=8GB -c max_wal_size=8GB")
    subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-w",
                    "-l", str(root / "log"), "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://imagebank@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast",
                        "stop"], check=False, capture_output=True)
        if keep_in is None:
            shutil.rmtree(root, ignore_errors=True)


def database(server_url: str, name: str | None = None, *, fresh: bool = True) -> str:
    """The URL of database ``name`` (default: a new random name) on ``server_url``'s server,
    created (dropped first when ``fresh``) if needed."""
    from sqlalchemy import create_engine, text

    name = name or f"bench_{uuid.uuid4().hex[:12]}"
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                 {"n": name})
            if exists and fresh:
                conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
            if not exists or fresh:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def database_exists(server_url: str, name: str) -> bool:
    from sqlalchemy import create_engine, text

    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            return bool(conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                    {"n": name}))
    finally:
        engine.dispose()


def drop_database(server_url: str, database_url: str) -> None:
    from sqlalchemy import create_engine, text

    name = database_url.rsplit("/", 1)[1]
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()
