"""API fixtures (see apiworld.py for the world they build)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from apiworld import World, build_world, make_client
from fastapi.testclient import TestClient

from imagebank.services.archive import Archive
from imagebank.services.runtime import Runtime


@pytest.fixture
def world(tmp_path: Path, database_url: str) -> Iterator[World]:
    """A populated archive on SQLite and on PostgreSQL (the test runs on both)."""
    archive = Archive.open(tmp_path / "data", database_url=database_url, workers=1)
    runtime = Runtime.for_archive(archive)
    try:
        yield build_world(runtime, tmp_path)
    finally:
        archive.close()


@pytest.fixture
def sqlite_world(tmp_path: Path) -> Iterator[World]:
    """The same world on SQLite only (for slow or many-request tests)."""
    archive = Archive.open(tmp_path / "data", workers=1)
    runtime = Runtime.for_archive(archive)
    try:
        yield build_world(runtime, tmp_path)
    finally:
        archive.close()


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with make_client(world) as test_client:
        yield test_client


@pytest.fixture
def sqlite_client(sqlite_world: World) -> Iterator[TestClient]:
    with make_client(sqlite_world) as test_client:
        yield test_client
