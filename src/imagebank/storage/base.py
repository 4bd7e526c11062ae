"""The ``ObjectStore`` protocol (STYLE.md practice 5) and what its adapters share.

Writes happen in two steps so that many objects become durable together:

1. ``stage(data)`` writes the bytes somewhere private and returns a :class:`StagedObject` with
   their SHA-256; nothing is visible at any key yet.
2. ``publish([(staged, key), ...])`` makes every staged object durable and visible at its key,
   each atomically: a reader sees the whole object or nothing, never a part.

A crash between the two leaves staged leftovers, which ``discard_stale_staging`` removes.
Keys are built by the caller from internal IDs only (see ``imagebank.domain.ids``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class StagedObject:
    """Bytes written to the store's staging area, not yet published."""

    token: str
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int


@runtime_checkable
class ObjectStore(Protocol):
    """Where objects live, addressed by key."""

    #: A URL-like description without secrets, for messages (``file:///…``, ``s3://…``).
    location: str

    def stage(self, data: bytes) -> StagedObject: ...

    def publish(self, items: Sequence[tuple[StagedObject, str]]) -> None: ...

    def discard(self, staged: StagedObject) -> None: ...

    def read_staged(self, staged: StagedObject) -> bytes:
        """The bytes of a staged (not yet published) object."""
        ...

    def put(self, key: str, data: bytes) -> StagedObject: ...

    def get(self, key: str) -> bytes: ...

    def open(self, key: str) -> BinaryIO: ...

    def stat(self, key: str) -> ObjectInfo | None: ...

    def delete(self, key: str) -> None: ...

    def keys(self, prefix: str = "") -> Iterator[str]: ...

    def discard_stale_staging(self, older_than_seconds: float = 3600.0) -> int: ...


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def validate_key(key: str) -> str:
    """Keys are relative, slash-separated, without '.' or '..' parts, outside '.staging/'."""
    parts = key.split("/")
    if parts[0] == ".staging" or any(p in ("", ".", "..") for p in parts):
        raise ValueError("invalid object key")
    return key


def validate_prefix(prefix: str) -> str:
    """A key prefix: empty, or a relative path that may end in '/' or part of a name."""
    if not prefix:
        return prefix
    parts = prefix.split("/")
    if prefix.startswith("/") or any(p in (".", "..") for p in parts) or "" in parts[:-1]:
        raise ValueError("invalid key prefix")
    return prefix


def put_via_stage(store: ObjectStore, key: str, data: bytes) -> StagedObject:
    staged = store.stage(data)
    store.publish([(staged, key)])
    return staged


def iter_chunks(stream: BinaryIO, size: int = 1 << 20) -> Iterable[bytes]:
    while chunk := stream.read(size):
        yield chunk
