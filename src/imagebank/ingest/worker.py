"""The parse step, run in worker processes: read, validate, derive IDs, stage the bytes.

Workers never touch the index. They return :class:`Parsed` results to the committing process,
which decides what is new, a duplicate, or a conflict.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from typing import Any

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


class Parser:
    """Turns bytes into a :class:`Parsed`, staging them in the store."""

    def __init__(self, config: WorkerConfig, store: ObjectStore | None = None) -> None:
        self.config = config
        self.store = store or open_store(config.store_location,
                                         s3_endpoint_url=config.s3_endpoint_url)
        self.ids = IdDeriver(config.id_key)
        self._zips: dict[str, zipfile.ZipFile] = {}

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
        if source.member is None:
            with open(source.path, "rb") as handle:
                return handle.read(self.config.max_size + 1)
        archive = self._zips.get(source.path)
        if archive is None:
            if len(self._zips) > 8:
                for old in self._zips.values():
                    old.close()
                self._zips.clear()
            archive = self._zips[source.path] = zipfile.ZipFile(source.path)
        with archive.open(source.member) as member:
            return member.read(self.config.max_size + 1)

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
            metadata_json=json.dumps(header.metadata, separators=(",", ":")),
            transfer_syntax_uid=header.transfer_syntax_uid,
            oddities=header.oddities,
            subject_id=ids.subject_id(project, header.patient_id, header.issuer_of_patient_id),
            study_id=ids.study_id(project, header.study_instance_uid),
            series_id=ids.series_id(project, header.series_instance_uid),
            instance_id=ids.instance_id(project, header.sop_instance_uid),
        )


# -- process-pool entry points -------------------------------------------------------------
_PARSER: Parser | None = None


def init_worker(config: WorkerConfig) -> None:
    global _PARSER  # noqa: PLW0603 - one parser per worker process
    _PARSER = Parser(config)


def parse_many(sources: list[Source]) -> list[Parsed]:
    assert _PARSER is not None, "init_worker was not called"
    return [_PARSER.parse_source(s) for s in sources]


def describe(parsed: Parsed) -> dict[str, Any]:
    """A log-safe description (no patient data, no file name)."""
    return {
        "instance_id": parsed.instance_id or None,
        "size": parsed.size,
        "reason": parsed.rejection.reason.value if parsed.rejection else None,
    }
