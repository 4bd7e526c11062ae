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

from importlib.metadata import PackageNotFoundError, version

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
from imagebank.services.archive import Archive, CheckReport
from imagebank.settings import Settings

try:
    __version__ = version("imagebank")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

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
