"""``imagebank check``: the index and the object store, verified against each other.

Finds index rows without their object (or with the wrong size or checksum), and objects no
index row names (orphans, which a crash between publishing and committing can leave). With
``repair``, orphans are indexed again through the ingest pipeline (or removed if they turn
out duplicates), and rows whose object is gone are removed so the index tells the truth.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from imagebank.domain.ids import parse_instance_object_key
from imagebank.index import repo
from imagebank.storage.base import sha256_hex

if TYPE_CHECKING:
    from imagebank.services.archive import Archive, CheckReport


CheckProgress = Callable[[str, int], None]


def check_archive(archive: Archive, *, repair: bool, verify_checksums: bool,
                  staging_age: float, progress: CheckProgress | None = None) -> CheckReport:
    """Verify; ``progress(phase, done)`` is called at the first and every 1,000th object."""
    from imagebank.services.archive import CheckReport

    def tick(phase: str, done: int) -> None:
        if progress is not None and (done == 1 or done % 1000 == 0):
            progress(phase, done)

    report = CheckReport(repaired=repair)
    store = archive.store
    if repair:
        report.stale_staging = store.discard_stale_staging(staging_age)

    indexed: set[str] = set()
    with archive.sessions.begin() as session:
        for key, sha, size in repo.iter_instance_objects(session):
            report.instances_checked += 1
            tick("index", report.instances_checked)
            indexed.add(key)
            info = store.stat(key)
            if info is None:
                report.missing_objects.append(key)
            elif info.size != size:
                report.size_mismatches.append(key)
            elif verify_checksums and sha256_hex(store.get(key)) != sha:
                report.checksum_mismatches.append(key)
        indexed.update(repo.iter_other_object_keys(session))

    for key in store.keys():
        report.objects_seen += 1
        tick("store", report.objects_seen)
        if key not in indexed:
            report.orphans.append(key)

    if repair:
        if report.missing_objects:
            with archive.sessions.begin() as session:
                report.removed_rows = repo.delete_instance_rows(session, report.missing_objects)
        _repair_orphans(archive, report)
    return report


def _repair_orphans(archive: Archive, report: CheckReport) -> None:
    store = archive.store
    for key in report.orphans:
        parsed_key = parse_instance_object_key(key)
        if parsed_key is None:
            # Quarantine or resource bytes whose index row was never committed: the caller
            # was never told they were kept, so they are removed.
            store.delete(key)
            report.removed_objects += 1
            continue
        summary = archive.ingest_bytes([(store.get(key), "orphan")], parsed_key[0])
        if summary.stored:
            report.repaired_orphans += 1
        with archive.sessions.begin() as session:
            still_named = repo.instance_key_exists(session, key)
        if not still_named:
            store.delete(key)
            report.removed_objects += 1
