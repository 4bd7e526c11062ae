"""Local-files object store: the default.

Atomic and durable writes: the bytes go to a temporary file in ``.staging/``, then, for a whole
batch at once, the file system is flushed (``syncfs``, or ``fsync`` per file where that is
missing), each file is renamed onto its key, and the file system is flushed again so that the
renames are durable too. A reader never sees a partial object.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from imagebank.domain.errors import NotFoundError, StorageError
from imagebank.storage.base import ObjectInfo, StagedObject, sha256_hex, validate_key

STAGING = ".staging"


def _load_syncfs() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        func = libc.syncfs
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int]
    func.restype = ctypes.c_int
    return func


_SYNCFS = _load_syncfs()


class LocalObjectStore:
    """Objects as files under a root folder."""

    def __init__(self, root: Path, *, durable: bool = True) -> None:
        self.root = Path(root)
        self.durable = durable
        self.location = self.root.resolve().as_uri()
        self._staging = self.root / STAGING
        self._staging.mkdir(parents=True, exist_ok=True)
        self._made_dirs: set[Path] = set()

    # -- writing -------------------------------------------------------------------------
    def stage(self, data: bytes) -> StagedObject:
        token = uuid.uuid4().hex
        path = self._staging / token
        try:
            with open(path, "wb") as handle:
                handle.write(data)
                if self.durable and _SYNCFS is None:
                    handle.flush()
                    os.fsync(handle.fileno())
        except OSError as exc:
            path.unlink(missing_ok=True)
            raise StorageError(f"Cannot write to the object store ({exc.strerror}).") from exc
        return StagedObject(token=token, sha256=sha256_hex(data), size=len(data))

    def publish(self, items: Sequence[tuple[StagedObject, str]]) -> None:
        if not items:
            return
        try:
            self._flush()
            parents: set[Path] = set()
            for staged, key in items:
                target = self._path(key)
                parent = target.parent
                if parent not in self._made_dirs:
                    parent.mkdir(parents=True, exist_ok=True)
                    self._made_dirs.add(parent)
                os.replace(self._staging / staged.token, target)
                parents.add(parent)
            self._flush(parents)
        except OSError as exc:
            raise StorageError(f"Cannot publish to the object store ({exc.strerror}).") from exc

    def _flush(self, directories: set[Path] | None = None) -> None:
        if not self.durable:
            return
        if _SYNCFS is not None:
            fd = os.open(self.root, os.O_RDONLY)
            try:
                if _SYNCFS(fd) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))
            finally:
                os.close(fd)
            return
        for directory in directories or ():
            fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def discard(self, staged: StagedObject) -> None:
        (self._staging / staged.token).unlink(missing_ok=True)

    def put(self, key: str, data: bytes) -> StagedObject:
        staged = self.stage(data)
        self.publish([(staged, key)])
        return staged

    # -- reading -------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError("The object is not in the store.") from exc

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError as exc:
            raise NotFoundError("The object is not in the store.") from exc

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            return ObjectInfo(key=key, size=self._path(key).stat().st_size)
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def keys(self, prefix: str = "") -> Iterator[str]:
        start = self.root / prefix if prefix else self.root
        base = len(str(self.root)) + 1
        if not start.exists():
            return
        for dirpath, dirnames, filenames in os.walk(start):
            if dirpath == str(self.root):
                dirnames[:] = [d for d in dirnames if d != STAGING]
            dirnames.sort()
            for name in sorted(filenames):
                key = os.path.join(dirpath, name)[base:]
                if key.startswith(prefix):
                    yield key.replace(os.sep, "/")

    def discard_stale_staging(self, older_than_seconds: float = 3600.0) -> int:
        cutoff = time.time() - older_than_seconds
        removed = 0
        for entry in os.scandir(self._staging):
            try:
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed
