"""Where received objects come from: files, folders (recursively) and zip archives.

A :class:`Source` names one object to read; reading happens in the parse workers. Folders are
walked lazily so that memory stays flat whatever their size. Zip archives are recognised by
their extension only: a DICOM file whose preamble makes it look like a zip is still a file.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from imagebank.domain.errors import InvalidInputError

ARCHIVE_SUFFIXES = (".zip",)


@dataclass(frozen=True, slots=True)
class Source:
    """One object to read: a file, or a member of a zip archive."""

    path: str
    member: str | None = None
    size: int = 0
    #: How the sender knows the file, when not by its path here (an upload spooled to a
    #: temporary file): the label's first part instead of the path.
    shown: str | None = None

    @property
    def label(self) -> str:
        """How the person who ran the ingest knows this object (shown to them, never logged)."""
        name = self.shown or self.path
        return f"{name}!{self.member}" if self.member else name


@dataclass(frozen=True, slots=True)
class SourceProblem:
    """A source that could not be listed (a damaged archive, an unreadable folder)."""

    label: str
    reason: str
    message: str
    #: The file, when the label is not its path (see ``named``).
    path: str | None = None

    @property
    def file(self) -> str:
        return self.path or self.label


def iter_sources(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Source | SourceProblem]:
    """Every object under ``paths``, in a stable order (sorted within each folder)."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from _walk(path)
        elif path.is_file():
            yield from _file(path)
        else:
            raise InvalidInputError(f"Nothing to ingest at {path}: no such file or folder.")


def named(sources: Iterable[Source | SourceProblem], name: str
          ) -> Iterator[Source | SourceProblem]:
    """The sources of one file that its sender knows as ``name`` (an upload spooled to a
    temporary file), labelled by that name instead of the temporary path."""
    for source in sources:
        if isinstance(source, Source):
            yield replace(source, shown=name)
        else:
            yield SourceProblem(name, source.reason, source.message, path=source.file)


def _walk(root: Path) -> Iterator[Source | SourceProblem]:
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            yield SourceProblem(folder, "unreadable_source",
                                f"The folder cannot be read ({exc.strerror}).")
            continue
        subfolders = []
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    subfolders.append(entry.path)
                elif entry.is_file():
                    yield from _file(Path(entry.path), size=entry.stat().st_size)
                else:
                    # Nothing is skipped silently: a link to a folder (not followed, to avoid
                    # loops), a broken link, a device or a pipe is reported.
                    yield SourceProblem(entry.path, "unreadable_source",
                                        "Not a regular file or folder (a link to a folder, a "
                                        "broken link, a device or a pipe); it was not read.")
            except OSError as exc:
                yield SourceProblem(entry.path, "unreadable_source",
                                    f"The file cannot be read ({exc.strerror}).")
        stack.extend(reversed(subfolders))


def _file(path: Path, size: int | None = None) -> Iterator[Source | SourceProblem]:
    if path.suffix.lower() in ARCHIVE_SUFFIXES:
        yield from _zip_members(path)
        return
    if size is None:
        try:
            size = path.stat().st_size
        except OSError as exc:
            yield SourceProblem(str(path), "unreadable_source",
                                f"The file cannot be read ({exc.strerror}).")
            return
    yield Source(str(path), None, size)


def _zip_members(path: Path) -> Iterator[Source | SourceProblem]:
    try:
        with zipfile.ZipFile(path) as archive:
            infos = [i for i in archive.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        yield SourceProblem(str(path), "bad_archive",
                            f"The zip archive cannot be opened ({type(exc).__name__}); "
                            "it is damaged or not a zip file.")
        return
    for info in sorted(infos, key=lambda i: i.filename):
        yield Source(str(path), info.filename, info.file_size)
