"""Local-files object store: the default.

Atomic and durable writes: the bytes go to a temporary file in ``.staging/``, then, for a whole
batch at once, the file system is flushed (``syncfs``, or ``fsync`` per file where that is
missing), each file is renamed onto its key, and the file system is flushed again so that the
renames are durable too. A reader never sees a partial object.
"""

from __future__ import annotations

import os
import stat
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from imagebank.domain.errors import NotFoundError, StorageError
from imagebank.storage.base import (
    ObjectInfo,
    StagedObject,
    sha256_hex,
    validate_key,
    validate_prefix,
)
from imagebank.storage.durable import HAS_SYNCFS, fsync_path, syncfs

STAGING = ".staging"
#: Folders remembered as existing, so publishing does not call mkdir for every object.
_MADE_DIRS_LIMIT = 4096




#: Publishes of at most this many objects fsync each file and folder instead of syncfs.
SMALL_PUBLISH = 8


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
                if self.durable and not HAS_SYNCFS:
                    handle.flush()
                    os.fsync(handle.fileno())
        except OSError as exc:
            path.unlink(missing_ok=True)
            raise StorageError(f"Cannot write to the object store ({exc.strerror}).") from exc
        return StagedObject(token=token, sha256=sha256_hex(data), size=len(data))

    def publish(self, items: Sequence[tuple[StagedObject, str]]) -> None:
        if not items:
            return
        # A few objects (an upload, a C-STORE): fsync each file and folder. A batch: one
        # syncfs for all, which is far cheaper than thousands of fsyncs.
        small = len(items) <= SMALL_PUBLISH or not HAS_SYNCFS
        try:
            if small and self.durable and HAS_SYNCFS:  # (else fsynced when staged)
                for staged, _ in items:
                    fsync_path(self._staging / staged.token)
            else:
                self._flush()
            parents: set[Path] = set()
            for staged, key in items:
                target = self._path(key)
                parent = target.parent
                if parent not in self._made_dirs:
                    parent.mkdir(parents=True, exist_ok=True)
                    # The folders may be new: their own entries must be durable too.
                    parents.update(p for p in parent.parents if p.is_relative_to(self.root))
                    if len(self._made_dirs) >= _MADE_DIRS_LIMIT:
                        self._made_dirs.clear()  # bounded memory; mkdir is cheap to repeat
                    self._made_dirs.add(parent)
                os.replace(self._staging / staged.token, target)
                parents.add(parent)
            if small and self.durable:
                for parent in parents:
                    fsync_path(parent)
            else:
                self._flush(parents)
        except OSError as exc:
            raise StorageError(f"Cannot publish to the object store ({exc.strerror}).") from exc

    def _flush(self, directories: set[Path] | None = None) -> None:
        """Make everything written so far durable: syncfs, or fsync of ``directories``."""
        if not self.durable:
            return
        if HAS_SYNCFS:
            syncfs(self.root)
            return
        for directory in directories or ():
            fsync_path(directory)

    def read_staged(self, staged: StagedObject) -> bytes:
        try:
            return (self._staging / staged.token).read_bytes()
        except OSError as exc:
            raise StorageError(f"Cannot read a staged object ({exc.strerror}).") from exc

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
        with self.open(key) as handle:
            try:
                return handle.read()
            except OSError as exc:
                raise StorageError(f"Cannot read from the object store ({exc.strerror}).") from exc

    def open(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return open(path, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise NotFoundError("The object is not in the store.") from exc
        except OSError as exc:
            raise StorageError(f"Cannot read from the object store ({exc.strerror}).") from exc

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            info = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StorageError(f"Cannot read from the object store ({exc.strerror}).") from exc
        if not stat.S_ISREG(info.st_mode):
            return None
        return ObjectInfo(key=key, size=info.st_size)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            message = f"The object store refused a removal ({exc.strerror})."
            raise StorageError(message) from exc

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Every published key starting with ``prefix``, in lexicographic order, streamed."""
        validate_prefix(prefix)
        folder = prefix.rpartition("/")[0]
        start = self.root / folder if folder else self.root
        if not start.is_dir():
            return
        yield from (k for k in self._walk(start, f"{folder}/" if folder else "")
                    if k.startswith(prefix))

    def _walk(self, folder: Path, base: str) -> Iterator[str]:
        try:
            with os.scandir(folder) as it:
                entries = [(e.name + ("/" if e.is_dir(follow_symlinks=False) else ""), e)
                           for e in it]
        except FileNotFoundError:
            return
        for name, entry in sorted(entries, key=lambda item: item[0]):
            if not base and name == STAGING + "/":
                continue
            if name.endswith("/"):
                yield from self._walk(Path(entry.path), base + name)
            else:
                yield base + name

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
