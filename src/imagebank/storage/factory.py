"""Choose the object store from its location: a folder, or ``s3://bucket/prefix``."""

from __future__ import annotations

from pathlib import Path

from imagebank.domain.errors import ConfigurationError
from imagebank.storage.base import ObjectStore


def open_store(location: str, *, s3_endpoint_url: str | None = None,
               durable: bool = True) -> ObjectStore:
    """Open the store at ``location`` (a path, ``file://`` URL, or ``s3://bucket/prefix``)."""
    if location.startswith("s3://"):
        from imagebank.storage.s3 import S3ObjectStore

        rest = location[len("s3://"):]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise ConfigurationError(
                "IMAGEBANK_STORE names no bucket: write it as s3://bucket/prefix."
            )
        store: ObjectStore = S3ObjectStore(bucket, prefix.strip("/"),
                                           endpoint_url=s3_endpoint_url)
        return store
    if location.startswith("file://"):
        location = location[len("file://"):]
    if "://" in location:
        raise ConfigurationError(
            "IMAGEBANK_STORE must be a folder or an s3://bucket/prefix URL."
        )
    from imagebank.storage.local import LocalObjectStore

    return LocalObjectStore(Path(location), durable=durable)
