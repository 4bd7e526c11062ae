"""The object store: where the bytes live. Local files by default, S3-compatible for scale."""

from imagebank.storage.base import ObjectInfo, ObjectStore, StagedObject
from imagebank.storage.factory import open_store

__all__ = ["ObjectInfo", "ObjectStore", "StagedObject", "open_store"]
