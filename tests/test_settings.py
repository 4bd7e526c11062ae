"""Settings come from IMAGEBANK_* environment variables; bad values are refused clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from imagebank.domain.errors import ConfigurationError, ImagebankError
from imagebank.services.archive import Archive
from imagebank.settings import DEFAULT_DATA_DIR, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("IMAGEBANK_"):
            monkeypatch.delenv(name)


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.data == Path(DEFAULT_DATA_DIR) == Path("imagebank-data")
    assert settings.database_url is None
    assert settings.effective_database_url == (
        f"sqlite:///{tmp_path.resolve() / 'imagebank-data' / 'index.sqlite3'}")
    assert settings.effective_store == str(tmp_path.resolve() / "imagebank-data" / "objects")
    assert settings.workers >= 1
    assert settings.batch_size == 256
    assert settings.max_object_size == 4 * 1024**3


def test_environment_variables_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    monkeypatch.setenv("IMAGEBANK_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("IMAGEBANK_DATABASE_URL", "postgresql+psycopg://u:pw@127.0.0.1/db")
    monkeypatch.setenv("IMAGEBANK_STORE", "s3://bucket/prefix")
    monkeypatch.setenv("IMAGEBANK_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("IMAGEBANK_MAX_OBJECT_SIZE", "12345")
    monkeypatch.setenv("IMAGEBANK_WORKERS", "3")
    monkeypatch.setenv("IMAGEBANK_BATCH_SIZE", "17")
    monkeypatch.setenv("OTHER_WORKERS", "99")  # not ours
    s = load_settings()
    assert s.data == tmp_path / "d"
    assert s.effective_database_url == "postgresql+psycopg://u:pw@127.0.0.1/db"
    assert s.effective_store == "s3://bucket/prefix"
    assert s.s3_endpoint_url == "http://127.0.0.1:9000"
    assert (s.max_object_size, s.workers, s.batch_size) == (12345, 3, 17)


def test_explicit_values_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEBANK_WORKERS", "3")
    assert load_settings(workers=5).workers == 5


def test_settings_are_frozen() -> None:
    settings = load_settings(workers=2)
    with pytest.raises(ValidationError):
        settings.workers = 4  # type: ignore[misc]


@pytest.mark.parametrize("variable,value", [
    ("IMAGEBANK_WORKERS", "0"),
    ("IMAGEBANK_WORKERS", "-1"),
    ("IMAGEBANK_WORKERS", "257"),
    ("IMAGEBANK_WORKERS", "many"),
    ("IMAGEBANK_BATCH_SIZE", "0"),
    ("IMAGEBANK_BATCH_SIZE", "100001"),
    ("IMAGEBANK_MAX_OBJECT_SIZE", "0"),
    ("IMAGEBANK_MAX_OBJECT_SIZE", "4GB"),
    ("IMAGEBANK_DATABASE_URL", "mysql://x"),
    ("IMAGEBANK_DATABASE_URL", "oracle://scott@db/orcl"),
])
def test_invalid_values_are_configuration_errors(monkeypatch: pytest.MonkeyPatch,
                                                 variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith("Invalid configuration: ")
    assert variable in message
    assert "\n" not in message
    assert isinstance(info.value, ImagebankError) and info.value.code == "configuration"


def test_database_url_message_says_what_is_supported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEBANK_DATABASE_URL", "mysql://x")
    with pytest.raises(ConfigurationError, match=r"sqlite.*postgresql"):
        load_settings()


def test_several_problems_are_all_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEBANK_WORKERS", "0")
    monkeypatch.setenv("IMAGEBANK_BATCH_SIZE", "0")
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert "IMAGEBANK_WORKERS" in str(info.value) and "IMAGEBANK_BATCH_SIZE" in str(info.value)


def test_archive_open_refuses_invalid_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    monkeypatch.setenv("IMAGEBANK_WORKERS", "0")
    with pytest.raises(ConfigurationError, match="IMAGEBANK_WORKERS"):
        Archive.open(tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_archive_open_uses_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    monkeypatch.setenv("IMAGEBANK_DATA", str(tmp_path / "from-env"))
    monkeypatch.setenv("IMAGEBANK_BATCH_SIZE", "9")
    with Archive.open() as archive:
        assert archive.settings.batch_size == 9
        assert archive.settings.data == tmp_path / "from-env"
    assert (tmp_path / "from-env" / "index.sqlite3").exists()
