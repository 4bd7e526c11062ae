"""Making files durable on a local file system: syncfs, fsync, and naming without replacing.

Shared by the object store (``local``), the key store (``keys``) and the de-identified
folders ``imagebank deid`` writes (``services.deid``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
from pathlib import Path
from typing import Any


def _load_syncfs() -> Any:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        func = ctypes.CDLL(name, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int]
    func.restype = ctypes.c_int
    return func


_SYNCFS = _load_syncfs()
#: Whether ``syncfs`` is available (Linux): one call makes a whole file system durable.
HAS_SYNCFS = _SYNCFS is not None


def syncfs(folder: Path) -> None:
    """Flush everything written to the file system holding ``folder`` (needs HAS_SYNCFS)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        if _SYNCFS(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (its entries) by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder_quietly(folder: Path) -> None:
    """fsync a folder where the file system allows it (not all let a folder be fsynced)."""
    with contextlib.suppress(OSError):
        fsync_path(folder)


def link_new(source: Path, target: Path) -> bool:
    """Give ``source`` the name ``target`` unless ``target`` exists (never replacing a file):
    True if it did."""
    try:
        os.link(source, target)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
    # A file system without hard links (FAT, some network shares): rename if still absent.
    if target.exists():
        return False
    os.rename(source, target)
    return True
