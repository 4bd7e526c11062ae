"""The parse step, run in worker processes: read, validate, derive IDs, stage the bytes.

Workers never touch the index. They return :class:`Parsed` results to the committing process,
which decides what is new, a duplicate, or a conflict.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from multiprocessing.context import BaseContext

from imagebank.dicom.header import read_header
from imagebank.domain.ids import IdDeriver
from imagebank.domain.model import InstanceHeader, QuarantineReason, Rejection, Scalar
from imagebank.ingest.sources import Source
from imagebank.storage.base import ObjectStore, StagedObject
from imagebank.storage.factory import open_store


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    store_location: str
    s3_endpoint_url: str | None
    id_key: bytes
    project_id: str
    max_size: int
    #: The process the workers work for (the ingest's): they end with it, even when they
    #: are a fork server's children (``exit_with_parent``).
    owner: int | None = None


#: ``json.dumps(..., separators=(",", ":"))``, built once (the header is never circular).
_JSON = json.JSONEncoder(separators=(",", ":"), check_circular=False)


@dataclass(slots=True)
class Parsed:
    """One received object after the parse step."""

    label: str
    size: int
    staged: StagedObject | None = None
    rejection: Rejection | None = None
    values: dict[str, Scalar] | None = None
    metadata_json: str = ""
    transfer_syntax_uid: str = ""
    oddities: tuple[str, ...] = ()
    subject_id: str = ""
    study_id: str = ""
    series_id: str = ""
    instance_id: str = ""
    #: The quarantine item whose kept bytes these are, ingested again (a retry): refused
    #: again, that item is updated in place instead of a second one being made.
    retry_of: str | None = None


class Parser:
    """Turns bytes into a :class:`Parsed`, staging them in the store."""

    def __init__(self, config: WorkerConfig, store: ObjectStore | None = None) -> None:
        self.config = config
        self.store = store or open_store(config.store_location,
                                         s3_endpoint_url=config.s3_endpoint_url)
        self.ids = IdDeriver(config.id_key)
        self._reader = SourceReader()

    def parse_source(self, source: Source) -> Parsed:
        if source.size > self.config.max_size:
            return Parsed(source.label, source.size, rejection=Rejection(
                QuarantineReason.TOO_LARGE,
                f"The file is {source.size:,} bytes, over the limit of "
                f"{self.config.max_size:,} bytes (setting IMAGEBANK_MAX_OBJECT_SIZE); "
                "it was not copied.",
            ))
        try:
            data = self._read(source)
        except (OSError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError) as exc:
            return Parsed(source.label, source.size, rejection=Rejection(
                QuarantineReason.UNREADABLE_SOURCE,
                f"The file cannot be read ({type(exc).__name__}).",
            ))
        return self.parse_bytes(data, source.label)

    def _read(self, source: Source) -> bytes:
        return self._reader.read(source, self.config.max_size + 1)

    def parse_bytes(self, data: bytes, label: str) -> Parsed:
        header = read_header(data, max_size=self.config.max_size)
        if isinstance(header, Rejection):
            too_large = header.reason is QuarantineReason.TOO_LARGE
            staged = None if too_large else self.store.stage(data)
            return Parsed(label, len(data), staged=staged, rejection=header)
        return self._accepted(data, label, header)

    def _accepted(self, data: bytes, label: str, header: InstanceHeader) -> Parsed:
        project = self.config.project_id
        ids = self.ids
        staged = self.store.stage(data)
        return Parsed(
            label,
            len(data),
            staged=staged,
            values=header.values,
            metadata_json=_JSON.encode(header.metadata),
            transfer_syntax_uid=header.transfer_syntax_uid,
            oddities=header.oddities,
            subject_id=ids.subject_id(project, header.patient_id, header.issuer_of_patient_id),
            study_id=ids.study_id(project, header.study_instance_uid),
            series_id=ids.series_id(project, header.series_instance_uid),
            instance_id=ids.instance_id(project, header.sop_instance_uid),
        )


class SourceReader:
    """Reads sources, files or zip members, keeping a few zip archives open between reads."""

    #: Archives kept open at most (then all are closed and reopened as needed).
    OPEN_ARCHIVES = 8

    def __init__(self) -> None:
        self._zips: dict[str, zipfile.ZipFile] = {}

    def read(self, source: Source, limit: int) -> bytes:
        """The source's bytes, at most ``limit`` of them."""
        if source.member is None:
            return read_file(source.path, limit)
        archive = self._zips.get(source.path)
        if archive is None:
            if len(self._zips) > self.OPEN_ARCHIVES:
                self.close()
            archive = self._zips[source.path] = zipfile.ZipFile(source.path)
        with archive.open(source.member) as member:
            return member.read(limit)

    def close(self) -> None:
        for archive in self._zips.values():
            archive.close()
        self._zips.clear()


def read_file(path: str, limit: int) -> bytes:
    """The file's bytes, at most ``limit`` of them.

    Sized by ``fstat`` and read unbuffered: one allocation of the file's size, reused by the
    allocator from file to file. (A buffered ``read(limit)`` allocates ``limit`` bytes, 4 GB
    by default, whose fresh pages cost more kernel time than reading the file.)
    """
    with open(path, "rb", buffering=0) as handle:
        size = os.fstat(handle.fileno()).st_size
        first = handle.read(max(1, min(size + 1, limit)))
        parts = [first]
        total = len(first)
        # Until the end of the file (a short read, or a file that grew since it was listed).
        while first and total < limit:
            chunk = handle.read(min(limit - total, _READ_CHUNK))
            if not chunk:
                break
            parts.append(chunk)
            total += len(chunk)
    return first if len(parts) == 1 else b"".join(parts)


_READ_CHUNK = 1 << 20


# -- process-pool entry points -------------------------------------------------------------
_PARSER: Parser | None = None


def init_worker(config: WorkerConfig) -> None:
    global _PARSER  # noqa: PLW0603 - one parser per worker process
    _PARSER = Parser(config)
    exit_with_parent(config.owner)


def pool_context(start_method: str | None) -> BaseContext | None:
    """The multiprocessing context of a pool of workers (None: the default). A fork server
    started from the main thread starts with Ctrl-C ignored, so that every worker it forks
    ignores it from birth, before its initializer runs: a Ctrl-C sent to the whole process
    group (what a terminal does) is the owning process's to handle, never a worker's to die
    of (a broken pool)."""
    if not start_method:
        return None
    context = multiprocessing.get_context(start_method)
    if start_method == "forkserver" and threading.current_thread() is threading.main_thread():
        from multiprocessing import forkserver

        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited across exec
        try:
            forkserver.ensure_running()
        finally:
            signal.signal(signal.SIGINT, previous)
    return context


def exit_with_parent(owner: int | None = None) -> None:
    """End this worker when the ingest process dies, even by SIGKILL.

    Otherwise orphaned workers would linger and hold the ingest's stdout open (a pipe to
    ``tee`` would never close). Linux: the kernel's parent-death signal; elsewhere a thread
    that polls the parent's PID. ``owner``: the process the worker works for, when that is
    not its parent (a forkserver's workers are the fork server's children, and the fork
    server lives as long as they do): a thread polls whether it is still there.
    """
    parent = os.getppid()
    if owner is not None and owner != parent:
        def gone() -> bool:
            try:
                os.kill(owner, 0)
            except ProcessLookupError:
                return True
            except OSError:
                return False  # there, another user's (EPERM)
            return False

        def watch_owner() -> None:
            while not gone():
                time.sleep(0.5)
            os._exit(1)

        threading.Thread(target=watch_owner, name="owner-watch", daemon=True).start()
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        if libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) == 0:
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)
            return
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def parse_many(sources: list[Source]) -> list[Parsed]:
    assert _PARSER is not None, "init_worker was not called"
    return [_PARSER.parse_source(s) for s in sources]


def prefetch(sources: Iterable[object]) -> None:
    """Ask the kernel to start reading these files now (``POSIX_FADV_WILLNEED``), so that
    they are read from disk while others are parsed; anything but a plain file is skipped."""
    if not hasattr(os, "posix_fadvise"):
        return
    for source in sources:
        if not isinstance(source, Source) or source.member is not None or source.size <= 0:
            continue
        try:
            fd = os.open(source.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            continue  # reported when it is read
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)

