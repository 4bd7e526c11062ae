"""The index schema: Alembic migrations match the models, on SQLite and PostgreSQL."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from imagebank.domain.errors import ConfigurationError, StorageError
from imagebank.index.engine import HEAD, alembic_config, has_schema, make_engine, upgrade
from imagebank.index.tables import Base
from testkit import write_study


def _diff(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_migrations_match_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        assert not has_schema(engine)
        upgrade(engine)
        assert has_schema(engine)
    finally:
        engine.dispose()
    assert _diff(database_url) == []


def test_the_comparison_can_fail(database_url: str) -> None:
    """A missing index is reported, so an empty diff above means something."""
    engine = make_engine(database_url)
    try:
        upgrade(engine)
        with engine.begin() as conn:
            conn.execute(text("DROP INDEX ix_studies_study_date"))
    finally:
        engine.dispose()
    diff = _diff(database_url)
    assert any(d[0] == "add_index" and d[1].name == "ix_studies_study_date"  # type: ignore[index]
               for d in diff), diff


def test_upgrade_is_idempotent_and_at_head(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        upgrade(engine)
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO projects (id, name, description, created_at) "
                "VALUES ('kept', 'kept', '', CURRENT_TIMESTAMP)"))
        upgrade(engine)
        upgrade(engine)
        head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
        assert head == HEAD, "engine.HEAD must name the newest migration"
        with engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == head
            assert conn.execute(text("SELECT id FROM projects")).scalars().all() == ["kept"]
    finally:
        engine.dispose()
    assert _diff(database_url) == []


def test_lookup_indexes_exist(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        upgrade(engine)
        inspector = inspect(engine)
        subject_indexes = {tuple(i["column_names"]) for i in inspector.get_indexes("subjects")}
        study_indexes = {tuple(i["column_names"]) for i in inspector.get_indexes("studies")}
        instance_indexes = {tuple(i["column_names"]) for i in inspector.get_indexes("instances")}
    finally:
        engine.dispose()
    assert ("patient_id",) in subject_indexes
    assert ("study_date",) in study_indexes
    assert ("study_instance_uid",) in study_indexes
    assert ("accession_number",) in study_indexes
    assert ("sop_instance_uid",) in instance_indexes
    assert ("series_id",) in instance_indexes


def test_sqlite_runs_in_wal_mode_with_durable_commits(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'sub' / 'index.sqlite3'}")
    try:
        upgrade(engine)
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 1000
    finally:
        engine.dispose()
    assert (tmp_path / "sub" / "index.sqlite3").exists()


@pytest.mark.parametrize("url", ["mysql://user@localhost/db", "oracle://x", "not a url at all"])
def test_unsupported_databases_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        make_engine(url)
    assert "IMAGEBANK_DATABASE_URL" in str(info.value) or "SQLite" in str(info.value)


def test_unreachable_postgresql_is_a_storage_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens on the port now.
    engine = make_engine(f"postgresql+psycopg://nobody@127.0.0.1:{port}/none?connect_timeout=2")
    try:
        with pytest.raises(StorageError, match="IMAGEBANK_DATABASE_URL"):
            upgrade(engine)
    finally:
        engine.dispose()


def test_every_revision_upgrades_an_archive_that_has_data(database_url: str,
                                                           tmp_path: Path) -> None:
    """Each revision after the first runs on a filled index: SQLite's foreign keys forbid
    copying a table that others point at, so a migration that does so (Alembic's batch
    mode) works on an empty database only. Filled at head, each revision is taken down and
    up again, and the data must survive."""
    from alembic import command

    from imagebank.services.archive import Archive

    archive = Archive.open(tmp_path / "data", database_url=database_url, workers=1)
    archive.create_project("filled")
    paths = write_study(tmp_path / "in", 0, slices=2)
    assert archive.ingest_bytes([(p.read_bytes(), p.name) for p in paths], "filled").stored == 2
    engine = archive.engine
    script = ScriptDirectory.from_config(alembic_config(engine))
    revisions = list(script.walk_revisions())  # newest first
    assert len(revisions) >= 3
    for revision in revisions[:-1]:
        command.downgrade(alembic_config(engine), revision.down_revision)
        command.upgrade(alembic_config(engine), "head")
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM instances")).scalar() == 2
            assert connection.execute(text("SELECT count(*) FROM projects")).scalar() == 1
    archive.close()


def test_a_failed_migration_leaves_the_schema_as_it_was(database_url: str) -> None:
    """A migration is all or nothing: here 0003's second step fails (the column exists
    already) after its first created a table, which must not be left behind."""
    from alembic import command

    engine = make_engine(database_url)
    command.upgrade(alembic_config(engine), "0002")
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE projects ADD COLUMN ae_title VARCHAR(16)"))
    with pytest.raises(StorageError):
        upgrade(engine)
    tables = inspect(engine).get_table_names()
    assert "calling_aes" not in tables
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")
                                  ).scalar() == "0002"
    engine.dispose()
