"""DICOM JSON (PS3.18 Annex F) of a header, without bulk data.

Binary values longer than ``BULK_THRESHOLD`` bytes are replaced by a ``BulkDataURI`` naming
the attribute's tag path, resolved later against the stored instance (PS3.18 F.2.6).
"""

from __future__ import annotations

from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

BULK_THRESHOLD = 1024


def _bulk_uri(element: DataElement) -> str:
    return f"bulkdata/{element.tag:08X}"


def dataset_to_json(ds: Dataset) -> dict[str, Any]:
    """The dataset (not its file meta) as a DICOM JSON object."""
    result: dict[str, Any] = ds.to_json_dict(
        bulk_data_threshold=BULK_THRESHOLD,
        bulk_data_element_handler=_bulk_uri,
        suppress_invalid_tags=True,
    )
    return result
