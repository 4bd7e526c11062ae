"""De-identify a folder of DICOM files into another (``imagebank deid IN OUT``, issue 5).

Every file under IN (recursively, zip archives included) is read, de-identified by the engine
(``dicom.deid.deidentify``: the PS3.15 profile with its options, keyed pseudonyms), and
checked by the residual-identifier scan (``dicom.deid.residual_identifiers``) before anything
is written. An output is written only when the scan finds nothing:

* its path is made of pseudonyms only, never of the input's file or folder names:
  ``OUT/<patient pseudonym>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``
  with the new UIDs, and the path itself is scanned too;
* it is written atomically: a temporary file in ``OUT/.imagebank-partial/`` (never named
  ``.dcm``), flushed to disk (one ``syncfs`` for many files), then linked to its name. A
  file already there is never replaced: the same bytes (a run again with the same key) count
  as written, other bytes are a conflict, reported;
* it has a new preamble (zeros) and file meta header (the engine's).

What is not written is reported with a reason and never a value: ``refused`` (the engine's
reasons, such as ``burned_in``; a DICOMDIR), ``blocked`` (the scan found identifying values:
where, and their kind), ``unreadable`` (not DICOM, damaged, truncated, without UIDs, a source
that cannot be read), ``failed`` (a conflict, an output that cannot be written).

The scan does not read pixel data (7FE0,0008/0009/0010): pixel samples hold no text (burned-in
text is the engine's refusal), and reading half a megabyte of samples as text costs some
200 ms a file and finds short identifiers in it by chance. Pixel data that ends the file is
copied as it is, without being parsed (decision 0017).

Work is spread over a process pool (``workers``, 2 by default), in tasks of ``TASK_FILES``
files; results come back in input order, small (no pixel data).
"""

from __future__ import annotations

import io
import os
import re
import signal
import struct
import time
import uuid
import warnings
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from imagebank.dicom.deid import (
    DeidConfig,
    Finding,
    Refused,
    deidentify,
    needs_pixels,
    residual_identifiers,
)
from imagebank.dicom.part10 import (
    Truncated,
    check_deflated_complete,
    check_elements_complete,
    dataset_offset,
    has_part10_magic,
)
from imagebank.dicom.writer import encode_part10
from imagebank.domain.confidentiality import Profile
from imagebank.domain.errors import InvalidInputError, StorageError
from imagebank.domain.policy import MaskingRule, Policy
from imagebank.domain.pseudonyms import Pseudonymiser
from imagebank.ingest.sources import Source, SourceProblem, iter_sources
from imagebank.ingest.worker import SourceReader, pool_context, prefetch
from imagebank.storage.durable import HAS_SYNCFS, fsync_path, link_new, syncfs

#: Files per task sent to a worker.
TASK_FILES = 32
#: Outputs made durable together (one ``syncfs``) before they are given their names.
PUBLISH_FILES = 128
#: The folder of temporary files inside OUT.
PARTIAL = ".imagebank-partial"
#: Temporary files older than this (seconds) are an interrupted run's, removed at the start.
STALE_PARTIAL_SECONDS = 3600.0
#: Problems kept for the summary (the counts are always complete).
MAX_PROBLEMS = 1000
MAX_FILE_BYTES = 4 * 1024**3
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_PSEUDONYM = re.compile(r"^[A-Z0-9]{1,64}$")
#: Where the scan's view holds the output's file name (private tags absent from the output).
_FILE_NAME_TAGS = (0x7FE100FE, 0x7FE300FE, 0x7FE500FE)
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"UN"})


class Status(StrEnum):
    WRITTEN = "written"
    REFUSED = "refused"
    BLOCKED = "blocked"
    UNREADABLE = "unreadable"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class FileOutcome:
    """What became of one input. ``source`` is how the person running the command knows
    the input (its path; shown to them, never logged); nothing else names a value of it."""

    source: str
    status: Status
    reason: str = ""
    message: str = ""
    findings: tuple[Finding, ...] = ()
    bytes_out: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "status": self.status.value, "reason": self.reason,
                "message": self.message,
                "findings": [{"path": f.path, "kind": f.kind} for f in self.findings]}


@dataclass
class DeidSummary:
    files: int = 0
    written: int = 0
    #: Of ``written``: already in OUT with the same bytes (a run again with the same key).
    unchanged: int = 0
    refused: int = 0
    blocked: int = 0
    unreadable: int = 0
    failed: int = 0
    bytes_out: int = 0
    #: Not written, by reason (``burned_in``, ``residual_identifiers``, ``not_dicom`` ...).
    reasons: dict[str, int] = field(default_factory=dict)
    problems: list[FileOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.written == self.files

    def add(self, outcome: FileOutcome) -> None:
        self.files += 1
        if outcome.status is Status.WRITTEN:
            self.written += 1
            self.bytes_out += outcome.bytes_out
            if outcome.reason == "unchanged":
                self.unchanged += 1
            return
        setattr(self, outcome.status.value, getattr(self, outcome.status.value) + 1)
        self.reasons[outcome.reason] = self.reasons.get(outcome.reason, 0) + 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(outcome)

    def as_dict(self) -> dict[str, Any]:
        return {"files": self.files, "written": self.written, "unchanged": self.unchanged,
                "refused": self.refused, "blocked": self.blocked,
                "unreadable": self.unreadable, "failed": self.failed,
                "bytes_out": self.bytes_out, "reasons": dict(sorted(self.reasons.items()))}


@dataclass(frozen=True, slots=True)
class DeidReport:
    """Progress: the outcomes of one task, and the summary so far."""

    outcomes: list[FileOutcome]
    summary: DeidSummary


Progress = Callable[[DeidReport], None]


@dataclass(frozen=True)
class EngineSettings:
    """What the engine is told besides the key: the profile with its options, the
    safe-private allow-list (used with Retain Safe Private) and the masking rules for
    burned-in text, all from a policy when there is one."""

    profile: Profile
    safe_private: frozenset[tuple[str, int]] = frozenset()
    masking: frozenset[MaskingRule] = frozenset()

    def config(self, key: bytes) -> DeidConfig:
        return DeidConfig(self.profile, Pseudonymiser(key), self.safe_private, self.masking)


def engine_settings(options: Iterable[str] = (), policy: Policy | None = None
                    ) -> EngineSettings:
    """The settings for the ``options`` asked for: a policy says which options are allowed
    (``PolicyRefusal`` otherwise) and gives its allow-list and masking rules. Without a
    policy any option may be asked for, no private element is kept and objects that may
    show burned-in text are refused. An unknown or conflicting option is an
    ``InvalidInputError``."""
    if policy is not None:
        from imagebank.domain.policy import deid_settings

        profile, safe_private = deid_settings(policy, list(options))
        return EngineSettings(profile, safe_private, policy.masking)
    try:
        return EngineSettings(Profile.of(options))
    except ValueError as exc:
        raise InvalidInputError(f"Invalid option: {exc}") from None


def choose_profile(options: Iterable[str] = (), policy: str | os.PathLike[str] | None = None
                   ) -> EngineSettings:
    """``engine_settings`` with a site's policy file (``PolicyError`` when invalid)."""
    if policy is None:
        return engine_settings(options)
    from imagebank.services.policies import load_policy

    return engine_settings(options, load_policy(policy))


def make_config(key: bytes, options: Iterable[str] = (),
                safe_private: Iterable[tuple[str, int]] = ()) -> DeidConfig:
    """The engine's configuration under ``key``: the basic profile with ``options``."""
    settings = engine_settings(options)
    return DeidConfig(settings.profile, Pseudonymiser(key), frozenset(safe_private))


# -- the folders ------------------------------------------------------------------------------
def check_folders(source: Path, output: Path) -> None:
    """IN must exist; OUT must be a folder (or not exist yet), neither inside the other: OUT
    inside IN would be read as input, IN inside OUT would mix identifiable files into what is
    released."""
    if not source.exists():
        raise InvalidInputError(f"Nothing to de-identify at {source}: no such file or folder.")
    if output.exists() and not output.is_dir():
        raise InvalidInputError(f"The output {output} exists and is not a folder.")
    src, out = source.resolve(), output.resolve()
    if src == out or (source.is_dir() and out.is_relative_to(src)):
        raise InvalidInputError(
            f"The output folder {output} is inside the input {source}; choose one outside it.")
    if src.is_relative_to(out):
        raise InvalidInputError(
            f"The input {source} is inside the output folder {output}: identifiable files "
            "would sit among the released ones; choose another output folder.")


def _prepare_output(output: Path) -> Path:
    partial = output / PARTIAL
    try:
        partial.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"The output folder {output} cannot be made ({exc.strerror}).") \
            from None
    now = time.time()
    for entry in partial.iterdir():  # an interrupted run's leftovers (never .dcm files)
        try:
            if now - entry.stat().st_mtime > STALE_PARTIAL_SECONDS:
                entry.unlink()
        except OSError:
            continue
    return partial


def deidentify_folder(source: Path, output: Path, config: DeidConfig, *, workers: int = 2,
                      progress: Progress | None = None, durable: bool = True,
                      start_method: str | None = None) -> DeidSummary:
    """De-identify every DICOM file under ``source`` into ``output`` (see the module's
    docstring); the summary counts every input, in input order.

    The workers write temporary files; this process makes them durable (one ``syncfs`` for
    ``PUBLISH_FILES`` of them) and gives them their names, while the workers go on with the
    tasks queued ahead of it."""
    check_folders(source, output)
    partial = _prepare_output(output)
    summary = DeidSummary()
    publisher = Publisher(output, durable)

    def accept(results: list[FileOutcome | Pending], last: bool = False) -> None:
        outcomes = publisher.add(results, last)
        for outcome in outcomes:
            summary.add(outcome)
        if progress is not None and (outcomes or last):
            progress(DeidReport(outcomes, summary))

    tasks = _tasks(iter_sources([source]))
    settings = _WorkerSettings(config, str(output), uuid.uuid4().hex[:12])
    try:
        if workers <= 1:
            worker = _Worker(settings)
            for task in tasks:
                accept([*_problems(task), *worker.run([s for s in task
                                                       if isinstance(s, Source)])])
        else:
            _run_pool(tasks, settings, workers, accept, start_method)
        accept([], last=True)
    except BaseException:
        publisher.discard()
        for leftover in partial.glob(f"{settings.run}-*.tmp"):  # the workers' last files
            leftover.unlink(missing_ok=True)
        raise
    finally:
        try:
            partial.rmdir()
        except OSError:
            pass  # another run's files are in it, or an interrupted one's
    return summary


def _run_pool(tasks: Iterator[list[Source | SourceProblem]], settings: _WorkerSettings,
              workers: int, accept: Callable[[list[FileOutcome | Pending]], None],
              start_method: str | None) -> None:
    window = workers * 4
    context = pool_context(start_method)
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                             initargs=(settings,), mp_context=context) as pool:
        inflight: deque[tuple[list[FileOutcome], Future[list[FileOutcome | Pending]] | None]]
        inflight = deque()

        def take_oldest() -> None:
            problems, future = inflight.popleft()
            accept([*problems, *(future.result() if future is not None else [])])

        try:
            for task in tasks:
                files = [s for s in task if isinstance(s, Source)]
                if files:
                    prefetch(files)
                inflight.append((_problems(task),
                                 pool.submit(_run_task, files) if files else None))
                while len(inflight) >= window:
                    take_oldest()
            while inflight:
                take_oldest()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # the tasks running finish first
            raise


def _tasks(sources: Iterable[Source | SourceProblem]) -> Iterator[list[Source | SourceProblem]]:
    task: list[Source | SourceProblem] = []
    for item in sources:
        task.append(item)
        if len(task) >= TASK_FILES:
            yield task
            task = []
    if task:
        yield task


def _problems(task: list[Source | SourceProblem]) -> list[FileOutcome]:
    return [FileOutcome(p.label, Status.UNREADABLE, p.reason, p.message)
            for p in task if isinstance(p, SourceProblem)]


# -- publishing: durable, then named ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Pending:
    """An output written to a temporary file, to be flushed and named."""

    source: str
    temporary: str
    relative: str
    size: int


class Publisher:
    """Holds results in input order until ``PUBLISH_FILES`` outputs are waiting, then makes
    them durable at once and links each to its name (never replacing a file)."""

    def __init__(self, output: Path, durable: bool) -> None:
        self.output = output
        self.durable = durable
        self._held: list[FileOutcome | Pending] = []
        self._waiting = 0
        self._folders: set[Path] = set()

    def add(self, results: list[FileOutcome | Pending], last: bool) -> list[FileOutcome]:
        self._held.extend(results)
        self._waiting += sum(isinstance(r, Pending) for r in results)
        if self._waiting < PUBLISH_FILES and not last:
            return []
        held, self._held, self._waiting = self._held, [], 0
        outcomes = []
        try:
            error = ""
            if self.durable:
                try:
                    _flush(self.output, [Path(p.temporary) for p in held
                                         if isinstance(p, Pending)])
                except OSError as exc:
                    error = exc.strerror or type(exc).__name__
            for item in held:
                if not isinstance(item, Pending):
                    outcomes.append(item)
                elif error:
                    outcomes.append(FileOutcome(
                        item.source, Status.FAILED, "unwritable",
                        f"The output cannot be flushed to disk ({error})."))
                else:
                    outcomes.append(self._link(item))
        finally:
            for item in held:  # named, or failed: the temporary file goes either way
                if isinstance(item, Pending):
                    Path(item.temporary).unlink(missing_ok=True)
        if last and self.durable:
            try:
                _flush(self.output)  # the new names and folders
            except OSError as exc:
                raise StorageError(f"The output folder cannot be flushed to disk "
                                   f"({exc.strerror}).") from None
        return outcomes

    def _link(self, item: Pending) -> FileOutcome:
        target = self.output / item.relative
        try:
            folder = target.parent
            if folder not in self._folders:
                folder.mkdir(parents=True, exist_ok=True)
                if len(self._folders) > 4096:
                    self._folders.clear()
                self._folders.add(folder)
            if link_new(Path(item.temporary), target):
                return FileOutcome(item.source, Status.WRITTEN, bytes_out=item.size)
            if _same_file_content(Path(item.temporary), target):
                return FileOutcome(item.source, Status.WRITTEN, "unchanged",
                                   bytes_out=item.size)
            return FileOutcome(
                item.source, Status.FAILED, "conflict",
                f"OUT already holds {item.relative} with other content (an earlier run with "
                "other options, or two inputs with one SOP Instance UID); it was kept.")
        except OSError as exc:
            return FileOutcome(item.source, Status.FAILED, "unwritable",
                               f"The output cannot be written ({exc.strerror}).")

    def discard(self) -> None:
        """Remove what was never published (the run stopped early)."""
        for item in self._held:
            if isinstance(item, Pending):
                Path(item.temporary).unlink(missing_ok=True)
        self._held = []


# -- the workers ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _WorkerSettings:
    config: DeidConfig
    output: str
    #: This run's prefix for temporary file names.
    run: str


class _Unreadable(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class _Worker:
    """De-identifies tasks of files into temporary files (in a pool process, or in the
    calling one when there is a single worker)."""

    def __init__(self, settings: _WorkerSettings) -> None:
        self.config = settings.config
        self.partial = Path(settings.output) / PARTIAL
        self.run_prefix = settings.run
        self._reader = SourceReader()

    def run(self, sources: Sequence[Source]) -> list[FileOutcome | Pending]:
        with warnings.catch_warnings():
            # pydicom's warnings quote the values they complain about: patient data.
            warnings.simplefilter("ignore")
            return [self._one(source) for source in sources]

    # -- one file -----------------------------------------------------------------------------
    def _one(self, source: Source) -> FileOutcome | Pending:
        try:
            data = self._read(source)
        except _Unreadable as exc:
            return FileOutcome(source.label, Status.UNREADABLE, exc.reason, exc.message)
        result = deidentify_object(data, self.config, source.label)
        if isinstance(result, FileOutcome):
            return result
        return self._stage(source.label, result.relative, result.parts)

    def _read(self, source: Source) -> bytes:
        if source.size > MAX_FILE_BYTES:
            raise _Unreadable("too_large", f"The file is {source.size:,} bytes, over the limit "
                              f"of {MAX_FILE_BYTES:,}.")
        try:
            return self._reader.read(source, MAX_FILE_BYTES + 1)
        except (OSError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError) as exc:
            raise _Unreadable("unreadable_source",
                              f"The file cannot be read ({type(exc).__name__}).") from None

    def _stage(self, label: str, relative: str, parts: list[bytes | memoryview]
               ) -> FileOutcome | Pending:
        return stage_file(self.partial, self.run_prefix, label, relative, parts)


def stage_file(partial: Path, run: str, label: str, relative: str,
               parts: Sequence[bytes | memoryview]) -> FileOutcome | Pending:
    """Write an output to a temporary file in ``partial`` (named for the ``run``), for a
    ``Publisher`` to flush and name."""
    temporary = partial / f"{run}-{uuid.uuid4().hex}.tmp"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _write_all(fd, parts)
        finally:
            os.close(fd)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        return FileOutcome(label, Status.FAILED, "unwritable",
                           f"The output cannot be written ({exc.strerror}).")
    return Pending(label, str(temporary), relative, sum(len(p) for p in parts))


@dataclass(frozen=True, slots=True)
class Deidentified:
    """One object de-identified and cleared by the scan: its bytes (``parts``, written one
    after the other) and its place, ``<pseudonym>/<study>/<series>/<instance>.dcm`` (new
    UIDs)."""

    relative: str
    parts: list[bytes | memoryview]

    @property
    def size(self) -> int:
        return sum(len(p) for p in self.parts)

    def data(self) -> bytes:
        return b"".join(self.parts)


def deidentify_object(data: bytes, config: DeidConfig, label: str
                      ) -> Deidentified | FileOutcome:
    """De-identify one Part-10 object (``imagebank deid``, ``share``, ``export``): parse it,
    apply the engine, check the output (and its path) with the residual-identifier scan and
    encode it; what cannot be released is a ``FileOutcome`` with its status and reason
    (``label`` is how the caller knows the input; it goes only into that outcome)."""
    try:
        dataset, tail = _parse(data, config)
    except _Unreadable as exc:
        return FileOutcome(label, Status.UNREADABLE, exc.reason, exc.message)
    except _Refusal as exc:
        return FileOutcome(label, Status.REFUSED, exc.reason, exc.message)
    try:
        result = deidentify(dataset, config)
    except Refused as exc:
        return FileOutcome(label, Status.REFUSED, exc.reason, str(exc))
    except Exception as exc:  # noqa: BLE001 - untrusted input: report, never crash the run
        return FileOutcome(label, Status.UNREADABLE, "unreadable",
                           f"The dataset cannot be de-identified ({type(exc).__name__}).")
    out = result.dataset
    relative = _output_path(result.patient_pseudonym, out)
    if isinstance(relative, FileOutcome):
        return FileOutcome(label, relative.status, relative.reason, relative.message)
    findings = _scan(dataset, out, relative, config, result.identifying)
    if findings:
        return FileOutcome(
            label, Status.BLOCKED, "residual_identifiers",
            f"The residual-identifier scan found {len(findings)} identifying value(s) of "
            "the input in the output; it was not written.", tuple(findings))
    try:
        parts = _serialise(out, tail)
    except Exception as exc:  # noqa: BLE001 - a value pydicom cannot encode
        return FileOutcome(label, Status.FAILED, "unwritable",
                           f"The de-identified dataset cannot be encoded "
                           f"({type(exc).__name__}).")
    return Deidentified(relative, parts)


class _Refusal(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _parse(data: bytes, config: DeidConfig) -> tuple[Dataset, memoryview | None]:
    """The dataset, and the pixel data element's bytes when it ends the file (copied to the
    output as they are, never parsed); else the whole dataset is parsed (tail None)."""
    if not data:
        raise _Unreadable("empty", "The file is empty (0 bytes).")
    if not has_part10_magic(data):
        raise _Unreadable("not_dicom", "Not a DICOM Part 10 file: there is no 'DICM' marker "
                          "after the 128-byte preamble.")
    buffer = io.BytesIO(data)
    try:
        dataset = pydicom.dcmread(buffer, stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001 - untrusted input
        raise _Unreadable("unreadable", f"The DICOM header cannot be read "
                          f"({type(exc).__name__}); the file is damaged or not DICOM.") from None
    stop = buffer.tell()
    meta = dataset.file_meta
    if str(meta.get("MediaStorageSOPClassUID", "")) == MEDIA_STORAGE_DIRECTORY:
        raise _Refusal("dicomdir", "A DICOMDIR (a media directory, full of the patients' "
                       "names and IDs) is not copied; the files it lists are.")
    syntax = str(meta.get("TransferSyntaxUID", "") or "")
    implicit, little = (bool(dataset.original_encoding[0]), bool(dataset.original_encoding[1]))
    if syntax != DeflatedExplicitVRLittleEndian:
        try:
            check_elements_complete(data, dataset_offset(data), implicit_vr=implicit,
                                    little_endian=little)
        except Truncated:
            raise _Unreadable("truncated", f"The file is truncated: a data element runs past "
                              f"its end ({len(data):,} bytes). Copy it again from the "
                              "source.") from None
        if _pixels_end_file(data, stop, implicit, little) and not needs_pixels(dataset, config):
            return dataset, memoryview(data)[stop:]
    else:
        try:
            check_deflated_complete(data, dataset_offset(data))
        except Truncated:
            raise _Unreadable("truncated", "The deflated dataset is cut short. Copy it again "
                              "from the source.") from None
    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - untrusted input
        raise _Unreadable("unreadable", f"The DICOM dataset cannot be read "
                          f"({type(exc).__name__}).") from None
    if ("Rows" in dataset and not any(int(t) in _PIXEL_TAGS for t in dataset.keys())):
        raise _Unreadable("truncated", "The file has image attributes but no pixel data: it "
                          "was cut short. Copy it again from the source.")
    return dataset, None


def _pixels_end_file(data: bytes, offset: int, implicit: bool, little: bool) -> bool:
    """Whether a pixel data element of defined length starts at ``offset`` and ends the file
    (then nothing after it escapes de-identification when its bytes are copied)."""
    order = "<" if little else ">"
    if offset + 8 > len(data):
        return False
    group, element = struct.unpack_from(order + "HH", data, offset)
    if (group << 16 | element) not in _PIXEL_TAGS:
        return False
    if implicit:
        length: int = struct.unpack_from(order + "I", data, offset + 4)[0]
        header = 8
    else:
        if data[offset + 4:offset + 6] not in _LONG_VRS or offset + 12 > len(data):
            return False
        length = struct.unpack_from(order + "I", data, offset + 8)[0]
        header = 12
    return length != 0xFFFFFFFF and offset + header + length == len(data)


def _output_path(pseudonym: str, out: Dataset) -> str | FileOutcome:
    uids = [str(out.get(k, "") or "").strip() for k in
            ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
    if not all(uids):
        return FileOutcome("", Status.UNREADABLE, "missing_uid", "The object has no Study, "
                           "Series or SOP Instance UID, so it cannot be placed.")
    if not _PSEUDONYM.fullmatch(pseudonym) or not all(
            _UID.fullmatch(u) and len(u) <= 64 for u in uids):
        return FileOutcome("", Status.REFUSED, "bad_uid", "A UID of the object is not a valid "
                           "UID (digits and dots), so it cannot name the output file.")
    return f"{pseudonym}/{uids[0]}/{uids[1]}/{uids[2]}.dcm"


def _scan(source: Dataset, out: Dataset, relative: str, config: DeidConfig,
          identifying: tuple[str, ...]) -> list[Finding]:
    """The residual-identifier scan of the output and of its file name, in one pass: a
    shallow view of ``out`` without its pixel data, with the file name as one more value."""
    view = Dataset({tag: element for tag, element in out.items()
                    if int(tag) not in _PIXEL_TAGS})
    marker = next(t for t in _FILE_NAME_TAGS if t not in view)
    view.add_new(marker, "LT", relative)
    where = f"({marker >> 16:04X},{marker & 0xFFFF:04X})"
    return [Finding("file name", f.kind) if f.path == where else f
            for f in residual_identifiers(source, view, profile=config.profile,
                                          identifying=identifying)]


def _serialise(out: Dataset, tail: memoryview | None) -> list[bytes | memoryview]:
    data = encode_part10(out)
    return [data] if tail is None else [data, tail]


def _write_all(fd: int, parts: Sequence[bytes | memoryview]) -> None:
    for part in parts:
        view = memoryview(part)
        while view:
            written = os.write(fd, view)
            view = view[written:]


def _same_file_content(a: Path, b: Path) -> bool:
    try:
        with open(a, "rb") as first, open(b, "rb") as second:
            if os.fstat(first.fileno()).st_size != os.fstat(second.fileno()).st_size:
                return False
            while True:
                chunk = first.read(1 << 20)
                if chunk != second.read(1 << 20):
                    return False
                if not chunk:
                    return True
    except OSError:
        return False


def _flush(folder: Path, files: Sequence[Path] = ()) -> None:
    """Make what was written under ``folder`` durable: one ``syncfs`` (or an fsync of each
    file, where there is none)."""
    if HAS_SYNCFS:
        syncfs(folder)
        return
    for path in files:
        fsync_path(path)


# -- process-pool entry points ----------------------------------------------------------------
_WORKER: _Worker | None = None


def _init_worker(settings: _WorkerSettings) -> None:
    global _WORKER  # noqa: PLW0603 - one worker per pool process
    from imagebank.ingest.worker import exit_with_parent

    warnings.simplefilter("ignore")  # pydicom's warnings quote values (patient data)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the calling process
    _WORKER = _Worker(settings)
    exit_with_parent()


def _run_task(sources: list[Source]) -> list[FileOutcome | Pending]:
    assert _WORKER is not None, "_init_worker was not called"
    return _WORKER.run(sources)
