"""In-memory object store, for unit tests of the code that uses a store."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import BinaryIO

from imagebank.domain.errors import NotFoundError, StorageError
from imagebank.storage.base import (
    ObjectInfo,
    StagedObject,
    sha256_hex,
    validate_key,
    validate_prefix,
)


class MemoryObjectStore:
    location = "memory://"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.staged: dict[str, tuple[float, bytes]] = {}

    def stage(self, data: bytes) -> StagedObject:
        token = uuid.uuid4().hex
        self.staged[token] = (time.time(), bytes(data))
        return StagedObject(token=token, sha256=sha256_hex(data), size=len(data))

    def publish(self, items: Sequence[tuple[StagedObject, str]]) -> None:
        for _, key in items:
            validate_key(key)
        for staged, key in items:
            entry = self.staged.pop(staged.token, None)
            if entry is None:
                raise StorageError("A staged object to publish is gone from the staging area.")
            self.objects[key] = entry[1]

    def discard(self, staged: StagedObject) -> None:
        self.staged.pop(staged.token, None)

    def read_staged(self, staged: StagedObject) -> bytes:
        entry = self.staged.get(staged.token)
        if entry is None:
            raise StorageError("A staged object is gone from the staging area.")
        return entry[1]

    def put(self, key: str, data: bytes) -> StagedObject:
        staged = self.stage(data)
        self.publish([(staged, key)])
        return staged

    def get(self, key: str) -> bytes:
        try:
            return self.objects[validate_key(key)]
        except KeyError as exc:
            raise NotFoundError("The object is not in the store.") from exc

    def open(self, key: str) -> BinaryIO:
        return io.BytesIO(self.get(key))

    def stat(self, key: str) -> ObjectInfo | None:
        data = self.objects.get(validate_key(key))
        return None if data is None else ObjectInfo(key=key, size=len(data))

    def delete(self, key: str) -> None:
        self.objects.pop(validate_key(key), None)

    def keys(self, prefix: str = "") -> Iterator[str]:
        validate_prefix(prefix)
        yield from sorted(k for k in self.objects if k.startswith(prefix))

    def discard_stale_staging(self, older_than_seconds: float = 3600.0) -> int:
        cutoff = time.time() - older_than_seconds
        stale = [t for t, (when, _) in self.staged.items() if when < cutoff]
        for token in stale:
            del self.staged[token]
        return len(stale)
