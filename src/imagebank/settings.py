"""One typed settings object, built at start-up from the environment (STYLE.md practice 9).

Every setting is an ``IMAGEBANK_*`` environment variable; each is documented in the README
(a test checks that). Unsafe or contradictory values are refused, not warned about.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from imagebank.domain.errors import ConfigurationError

DEFAULT_DATA_DIR = "imagebank-data"
#: The embedded secret key: fine on loopback, refused by ``serve`` on any other address.
DEFAULT_SECRET_KEY = "imagebank-default-secret-key-change-me"  # noqa: S105 - public default
DEFAULT_PORT = 8470
#: Where ``make ohif`` puts the OHIF viewer's built app in a source checkout (decision 0032).
CHECKOUT_OHIF_DIR = Path(__file__).resolve().parents[2] / ".ohif" / "dist"


class Settings(BaseSettings):
    """imagebank's configuration."""

    model_config = SettingsConfigDict(env_prefix="IMAGEBANK_", extra="ignore", frozen=True)

    data: Path = Field(default=Path(DEFAULT_DATA_DIR),
                       description="The data folder: the SQLite index and local objects.")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the index; default SQLite in the data folder. "
        "PostgreSQL: postgresql+psycopg://user:password@host/db",
    )
    store: str | None = Field(
        default=None,
        description="Where objects live: a folder (default DATA/objects) or s3://bucket/prefix.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="Endpoint of an S3-compatible store (MinIO, Ceph, ...)."
    )
    max_object_size: int = Field(
        default=4 * 1024**3, gt=0, description="Largest object accepted, in bytes."
    )
    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1, le=256,
        description="Processes that parse headers during an ingest.",
    )
    batch_size: int = Field(default=256, ge=1, le=100_000,
                            description="Objects committed to the index per transaction.")
    jobs: str | None = Field(
        default=None,
        description="A Dask distributed scheduler (tcp://host:8786) that runs the "
        "de-identification of shares and exports; unset: a pool of local processes.",
    )

    secret_key: SecretStr = Field(
        default=SecretStr(DEFAULT_SECRET_KEY),
        description="Keys the audit chain and the CSRF tokens; set a long random value "
        "before serving beyond loopback.",
    )
    previous_secret_keys: SecretStr = Field(
        default=SecretStr(""),
        description="Earlier secret keys, comma-separated, so that `audit verify` can check "
        "events written before a key change.",
    )
    host: str = Field(default="127.0.0.1", description="Address `imagebank serve` listens on.")
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535,
                      description="Port `imagebank serve` listens on.")
    server_workers: int = Field(
        default=1, ge=1, le=64,
        description="Processes `imagebank serve` runs (each with its threads).")
    dicom_port: int | None = Field(
        default=None, ge=0, le=65535,
        description="Port of the DICOM listener `imagebank serve` also starts (unset: none).")
    dicom_ae_title: str = Field(default="IMAGEBANK", min_length=1, max_length=16,
                                description="The DICOM listener's own AE title.")
    cookie_secure: bool = Field(
        default=True,
        description="Mark the session cookie Secure (browsers still send it to "
        "http://127.0.0.1 and http://localhost).",
    )
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30,
                                 description="How long a browser session lasts.")
    ohif_dir: Path = Field(
        default=CHECKOUT_OHIF_DIR,
        description="The OHIF viewer's built app (the folder of its index.html), served at "
        "/ohif/; `make ohif` puts it in .ohif/dist of the source checkout.")

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("only sqlite:// and postgresql+psycopg:// databases are supported")
        return value

    @property
    def uses_default_secret(self) -> bool:
        return self.secret_key.get_secret_value() == DEFAULT_SECRET_KEY

    @property
    def audit_secrets(self) -> list[str]:
        """The current secret key first, then the previous ones."""
        previous = self.previous_secret_keys.get_secret_value()
        return [self.secret_key.get_secret_value()] + [
            k.strip() for k in previous.split(",") if k.strip()
        ]

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data / 'index.sqlite3').resolve()}"

    @property
    def effective_store(self) -> str:
        return self.store or str((self.data / "objects").resolve())


def load_settings(**overrides: object) -> Settings:
    """Build the settings, turning validation errors into a ConfigurationError."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"IMAGEBANK_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        raise ConfigurationError(f"Invalid configuration: {problems}") from None
