"""imagebank: an imaging research repository for hospital networks.

The public Python API::

    import imagebank

    with imagebank.Archive.open("imagebank-data") as archive:
        archive.create_project("lung-study")
        summary = archive.ingest(["/exports/pacs"], "lung-study")
        for study in archive.studies("lung-study", patient_id="SYN0000001"):
            print(study["id"], study["study_date"], study["num_instances"])

Anything not in ``__all__`` is internal and may change without notice.
"""

from typing import TYPE_CHECKING, Any

from imagebank.domain.errors import (
    ConfigurationError,
    ConflictError,
    ImagebankError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    StorageError,
)
from imagebank.domain.model import IngestSummary, Level, QuarantineReason

if TYPE_CHECKING:
    from imagebank.services.archive import Archive, CheckReport
    from imagebank.settings import Settings

    __version__: str

#: Loaded when first used, so that ``import imagebank.cli`` (the console script) is quick and
#: a Ctrl-C while the command loads is handled like one later (``imagebank.cli.run``).
_LAZY = {"Archive": "imagebank.services.archive", "CheckReport": "imagebank.services.archive",
         "Settings": "imagebank.settings"}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("imagebank")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            found = "0.0.0"
        globals()[name] = found
        return found
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'imagebank' has no attribute {name!r}")


__all__ = [
    "Archive",
    "CheckReport",
    "ConfigurationError",
    "ConflictError",
    "ImagebankError",
    "IngestSummary",
    "IntegrityError",
    "InvalidInputError",
    "Level",
    "NotFoundError",
    "QuarantineReason",
    "Settings",
    "StorageError",
    "__version__",
]
