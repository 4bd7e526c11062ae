"""Engines and schema upgrades for SQLite (WAL) and PostgreSQL."""

from __future__ import annotations

import threading
import weakref
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from imagebank.domain.errors import ConfigurationError, StorageError

MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk when it returns, so "stored" survives a power cut too.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.execute("PRAGMA cache_size=-16384")  # 16 MiB a connection: memory stays flat
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.execute("PRAGMA case_sensitive_like=ON")  # DICOM wildcard matching is exact
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for the index at ``url``; SQLite gets WAL and its pragmas."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigurationError("IMAGEBANK_DATABASE_URL is not a valid database URL.") from exc
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=8)
    raise ConfigurationError("Only SQLite and PostgreSQL databases are supported.")


def alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    config.attributes["engine"] = engine
    return config


#: The newest migration (tests/index/test_migrations.py checks it is Alembic's head): an
#: index already there is not handed to Alembic, whose import alone costs 0.15 s of every
#: command's start.
HEAD = "0009"


def _at_head(engine: Engine) -> bool:
    try:
        with engine.connect() as connection:
            version = connection.exec_driver_sql(
                "SELECT version_num FROM alembic_version").scalar()
    except SQLAlchemyError:
        return False  # no index yet, or one from before Alembic
    return version == HEAD


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    if _at_head(engine):
        return
    from alembic import command

    try:
        with engine.begin() as connection:
            if connection.dialect.name == "sqlite":
                # SQLite's DDL is transactional, but the sqlite3 module opens a transaction
                # only before INSERT/UPDATE/DELETE: without this, a migration that fails half
                # way would leave half of its tables behind.
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            config = alembic_config(engine)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except OperationalError as exc:
        raise StorageError(
            "Cannot reach the index database; check IMAGEBANK_DATABASE_URL and that the "
            "server is running."
        ) from exc
    except SQLAlchemyError as exc:
        raise StorageError("The index database schema could not be upgraded.") from exc


def has_schema(engine: Engine) -> bool:
    return inspect(engine).has_table("projects")


_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def write_gate(bind: Any) -> AbstractContextManager[Any]:
    """Serialise this process's write transactions on a SQLite index.

    SQLite has one writer at a time, and a writer that finds the database locked sleeps in
    its busy handler (1, 2, 5, 10 ms ...): two threads committing at once (an upload and the
    audit writer) would each wait milliseconds for nothing. A lock in the process wakes the
    next writer the moment the last one commits. PostgreSQL needs no such thing.
    """
    engine = getattr(bind, "engine", bind)
    if not isinstance(engine, Engine) or engine.dialect.name != "sqlite":
        return nullcontext()
    with _LOCKS_GUARD:
        lock = _WRITE_LOCKS.get(engine)
        if lock is None:
            lock = _WRITE_LOCKS[engine] = threading.Lock()
    return lock
