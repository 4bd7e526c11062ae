"""Zip archives of studies and series, written as a stream (nothing is buffered whole).

Entry names are internal IDs only (``{study}/{series}/{instance}.dcm``): a download's file
names must not carry patient data, whatever the viewer on the other side shows.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from imagebank.storage.base import ObjectStore

CHUNK = 1024 * 1024


class _Sink:
    """An unseekable file that hands over what was written (zipfile then writes data
    descriptors instead of seeking back)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.offset = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self.offset

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


def entry_name(row: dict[str, Any]) -> str:
    return f"{row['study_id']}/{row['series_id']}/{row['id']}.dcm"


def iter_zip(store: ObjectStore, rows: Iterable[dict[str, Any]],
             progress: Callable[[int], None] | None = None) -> Iterator[bytes]:
    """The bytes of a zip of the instances ``rows`` (stored, not compressed: DICOM pixel
    data rarely compresses and the CPU is better spent elsewhere)."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED,  # type: ignore[call-overload]
                         allowZip64=True) as archive:
        for count, row in enumerate(rows, 1):
            info = zipfile.ZipInfo(entry_name(row), date_time=(2000, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.file_size = int(row["size_bytes"])
            with archive.open(info, "w", force_zip64=info.file_size > 2**31) as entry:
                with store.open(row["object_key"]) as source:
                    while block := source.read(CHUNK):
                        entry.write(block)
                        if data := sink.take():
                            yield data
            if data := sink.take():
                yield data
            if progress is not None:
                progress(count)
    tail = sink.take()
    if tail:
        yield tail
