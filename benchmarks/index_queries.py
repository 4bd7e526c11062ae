"""(c) Study search on an index of 1,000,000 instances (SQLite).

The index is a fixture synthesised as rows (no pixel data, no objects), shaped like the rows
``Committer`` writes, bulk-inserted through SQLAlchemy Core into the schema that
``Archive.open`` creates, and cached under ``benchmarks/.work/``. Shape, for N instances:
N/20 studies over 15 years of StudyDate (2010-2024), each of one subject (N/40 subjects, two
studies each), 1-4 series per study; 30 % of studies are small (1-4 instances, CR/DX), the
rest large (CT/MR); each instance carries a 2.8 kB DICOM JSON header like a synthetic CT's.

Queries go through the public use case ``Archive.studies(project, ...)`` (limit 100), in
this process, after 3 warm-up queries: the median (and p90) of 50, each with other values:
an existing PatientID, and a 30-day StudyDate range (about 270 matching studies at 1M). The
index first gets its planner statistics as an ingest leaves them (``Archive.optimize``);
informative rows repeat the queries without statistics.

Run alone: ``python benchmarks/index_queries.py [--smoke | --instances N]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import WORK, Result, drop_caches, ensure_built, format_table

PROJECT = "bench"
QUERIES = 50
WARMUP = 3
SMALL_MODALITIES = ("CR", "DX")
LARGE_MODALITIES = ("CT", "CT", "MR")
FIRST_DAY = date(2010, 1, 1)
DAYS = 15 * 365


def _id(kind: str, n: int) -> str:
    return hashlib.md5(f"{kind}-{n}".encode(), usedforsecurity=False).hexdigest()


def _uid(kind: str, n: int) -> str:
    return f"1.2.826.0.1.3680043.10.1370.8.{len(kind)}.{n}"


def _metadata_template() -> tuple[str, str]:
    """The DICOM JSON of a synthetic CT header, and its SOPInstanceUID (to substitute)."""
    from imagebank.dicom.header import read_header
    from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
    from imagebank.domain.model import InstanceHeader

    ds = next(make_study(SyntheticPatient.make(0), series=[SeriesSpec(slices=1)]))
    header = read_header(to_bytes(ds))
    assert isinstance(header, InstanceHeader)
    return json.dumps(header.metadata, separators=(",", ":")), header.sop_instance_uid


def index_dir(instances: int) -> Path:
    return WORK / f"index-{instances}"


def ensure_index(instances: int, log: Any = print) -> Path:
    """The data folder of an archive whose index holds ``instances`` synthetic rows."""
    return ensure_built(index_dir(instances), lambda folder: _build(folder, instances),
                        f"an index of {instances:,} instances", log)


def _build(folder: Path, instances: int) -> dict[str, int]:
    from sqlalchemy import insert

    from imagebank.index.tables import Instance
    from imagebank.services.archive import Archive

    rng = random.Random(20240601)
    template, template_uid = _metadata_template()
    n_studies = max(1, instances // 20)
    n_subjects = max(1, n_studies // 2)
    stamp = datetime(2024, 6, 1, tzinfo=UTC)

    # Instances per study: 30 % small studies, the rest large, scaled to add up to N.
    weights = [rng.randint(1, 4) if rng.random() < 0.3 else rng.randint(20, 60)
               for _ in range(n_studies)]
    scale = instances / sum(weights)
    sizes = [max(1, int(w * scale)) for w in weights]
    j = 0
    while sum(sizes) != instances:
        step = 1 if sum(sizes) < instances else -1
        if sizes[j % n_studies] + step >= 1:
            sizes[j % n_studies] += step
        j += 1

    subjects = []
    for k in range(n_subjects):
        subjects.append({
            "id": _id("subject", k), "project_id": PROJECT, "patient_id": f"P{k:08d}",
            "issuer_of_patient_id": "SYNTH-TRUST", "patient_name": f"SYNTHETIC^PATIENT{k}",
            "patient_birth_date": (date(1930, 1, 1) + timedelta(days=rng.randrange(30000))
                                   ).strftime("%Y%m%d"),
            "patient_sex": "MF"[k % 2], "num_studies": 0, "created_at": stamp,
        })
    owners = [s % n_subjects for s in range(n_studies)]
    rng.shuffle(owners)
    for owner in owners:
        subjects[owner]["num_studies"] += 1
    studies, series = [], []
    archive = Archive.open(folder)
    try:
        archive.create_project(PROJECT)
        engine = archive.engine
        with engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA synchronous=OFF")
        pending: list[dict[str, Any]] = []
        instance_no = 0
        series_no = 0

        def flush() -> None:
            with engine.begin() as conn:
                conn.execute(insert(Instance), pending)
            pending.clear()

        for s in range(n_studies):
            subject = subjects[owners[s]]
            study_date = (FIRST_DAY + timedelta(days=rng.randrange(DAYS))).strftime("%Y%m%d")
            small = sizes[s] <= 4
            study_id = _id("study", s)
            n_series = 1 if sizes[s] == 1 else rng.randint(1, min(4, sizes[s]))
            per_series = [sizes[s] // n_series + (1 if i < sizes[s] % n_series else 0)
                          for i in range(n_series)]
            modality = rng.choice(SMALL_MODALITIES if small else LARGE_MODALITIES)
            study_size = 0
            for number, count in enumerate(per_series, start=1):
                series_id = _id("series", series_no)
                series_no += 1
                series_size = 0
                for i in range(count):
                    size = rng.randint(8_000_000, 12_000_000) if small else 526_000
                    instance_id = _id("instance", instance_no)
                    sop = _uid("instance", instance_no)
                    instance_no += 1
                    series_size += size
                    pending.append({
                        "id": instance_id, "project_id": PROJECT, "study_id": study_id,
                        "series_id": series_id, "sop_instance_uid": sop,
                        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "instance_number": i + 1,
                        "acquisition_number": 1, "content_date": study_date,
                        "content_time": "093000", "image_type": "ORIGINAL\\PRIMARY\\AXIAL",
                        "rows": 512, "columns": 512, "number_of_frames": None,
                        "bits_allocated": 16, "photometric_interpretation": "MONOCHROME2",
                        "pixel_spacing": "0.7\\0.7", "slice_thickness": 1.25,
                        "spacing_between_slices": None,
                        "image_position_patient": f"-179.2\\-179.2\\{-1.25 * i}",
                        "image_orientation_patient": "1\\0\\0\\0\\1\\0", "kvp": 120.0,
                        "x_ray_tube_current": 250.0, "convolution_kernel": "STANDARD",
                        "repetition_time": None, "echo_time": None, "inversion_time": None,
                        "flip_angle": None, "sequence_name": None,
                        "burned_in_annotation": "NO",
                        "transfer_syntax_uid": "1.2.840.10008.1.2.1", "size_bytes": size,
                        "sha256": hashlib.sha256(sop.encode()).hexdigest(),
                        "object_key": f"{PROJECT}/dicom/{instance_id[:2]}/{instance_id[2:4]}/"
                                      f"{instance_id}-{instance_id[:16]}.dcm",
                        "metadata_json": template.replace(template_uid, sop),
                        "oddities": "", "created_at": stamp,
                    })
                series.append({
                    "id": series_id, "project_id": PROJECT, "study_id": study_id,
                    "series_instance_uid": _uid("series", series_no), "modality": modality,
                    "series_number": number, "series_description": f"SERIES {number}",
                    "series_date": study_date, "series_time": "093000",
                    "body_part_examined": "CHEST", "protocol_name": "SYNTHETIC",
                    "manufacturer": "SYNTHETIC MEDICAL", "manufacturer_model_name": "Phantom",
                    "station_name": "ST01", "device_serial_number": "SN-0001",
                    "software_versions": "SYN 1.0",
                    "frame_of_reference_uid": _uid("frame", series_no),
                    "num_instances": count, "size_bytes": series_size, "created_at": stamp,
                })
                study_size += series_size
            studies.append({
                "id": study_id, "project_id": PROJECT, "subject_id": subject["id"],
                "study_instance_uid": _uid("study", s), "study_date": study_date,
                "study_time": "093000", "accession_number": f"ACC{s:09d}",
                "referring_physician_name": "REFERRER^SYNTHETIC", "study_id": "1",
                "study_description": f"{modality} SYNTHETIC STUDY",
                "institution_name": "Synthetic General Hospital",
                "modalities_in_study": modality, "num_series": n_series,
                "num_instances": sizes[s], "size_bytes": study_size, "created_at": stamp,
                "updated_at": stamp,
            })
            if len(pending) >= 20_000:
                # Parents first: the index enforces foreign keys.
                _insert_parents(engine, subjects, studies, series)
                flush()
        _insert_parents(engine, subjects, studies, series)
        if pending:
            flush()
        with engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        counts = archive.stats()
    finally:
        archive.close()
    return {k: v for k, v in counts.items() if isinstance(v, int)}


def _insert_parents(engine: Any, subjects: list[dict[str, Any]], studies: list[dict[str, Any]],
                    series: list[dict[str, Any]]) -> None:
    """Insert the subjects, studies and series not yet inserted (tracked by a flag)."""
    from sqlalchemy import insert

    from imagebank.index.tables import Series, Study, Subject

    with engine.begin() as conn:
        for model, rows in ((Subject, subjects), (Study, studies), (Series, series)):
            new = [r for r in rows if not r.get("_in")]
            if not new:
                continue
            conn.execute(insert(model), [{k: v for k, v in r.items() if k != "_in"}
                                         for r in new])
            for r in new:
                r["_in"] = True


def _time_queries(archive: Any, kwargs_list: list[dict[str, Any]]) -> tuple[list[float], int]:
    times = []
    found = 0
    for kwargs in kwargs_list:
        started = time.perf_counter()
        rows = archive.studies(PROJECT, limit=100, **kwargs)
        times.append((time.perf_counter() - started) * 1000)
        found += len(rows)
    return times, found


def measure(instances: int, *, cold_first: bool = False, log: Any = print) -> list[Result]:
    from imagebank.services.archive import Archive

    folder = ensure_index(instances, log)
    counts = json.loads(folder.with_suffix(".json").read_text())
    rng = random.Random(7)
    n_subjects = counts["subjects"]
    patient_queries = [{"patient_id": f"P{rng.randrange(n_subjects):08d}"}
                       for _ in range(WARMUP + QUERIES)]
    date_queries = []
    for _ in range(WARMUP + QUERIES):
        first = FIRST_DAY + timedelta(days=rng.randrange(DAYS - 30))
        date_queries.append({"study_date_from": first.strftime("%Y%m%d"),
                             "study_date_to": (first + timedelta(days=29)).strftime("%Y%m%d")})
    if cold_first:
        drop_caches()
    archive = Archive.open(folder)
    results = []
    try:
        # As an ingest leaves the index: it refreshes the planner's statistics when done.
        _set_statistics(archive, analyzed=True)
        for name, queries, target in (
            ("by PatientID", patient_queries, 20.0),
            ("by StudyDate range (30 days)", date_queries, 50.0),
        ):
            results.append(_measure_one(archive, counts, name, queries, target, log))
        # Without statistics (an index filled otherwise, or before its first refresh):
        # informative rows, no target.
        _set_statistics(archive, analyzed=False)
        for name, queries in (("by PatientID", patient_queries),
                              ("by StudyDate range (30 days)", date_queries)):
            result = _measure_one(archive, counts, f"{name}, no planner statistics", queries,
                                  None, log)
            result.detail += "; informative row"
            results.append(result)
    finally:
        archive.close()
    return results


def _set_statistics(archive: Any, *, analyzed: bool) -> None:
    """Give SQLite's planner its table statistics as an ingest does (``Archive.optimize``,
    or ANALYZE where that is missing), or take them away."""
    if analyzed and hasattr(archive, "optimize"):
        archive.optimize()
    else:
        with archive.engine.begin() as conn:
            if analyzed:
                conn.exec_driver_sql("ANALYZE")
            else:
                for table in ("sqlite_stat1", "sqlite_stat4"):
                    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
    archive.engine.dispose()  # new connections: the planner reloads the statistics


def _measure_one(archive: Any, counts: dict[str, int], name: str,
                 queries: list[dict[str, Any]], target: float | None, log: Any) -> Result:
    warm, _ = _time_queries(archive, queries[:WARMUP])
    times, found = _time_queries(archive, queries[WARMUP:])
    median = statistics.median(times)
    p90 = sorted(times)[int(len(times) * 0.9) - 1]
    log(f"  study search {name}: median {median:.2f} ms, p90 {p90:.2f} ms, "
        f"first {warm[0]:.1f} ms, {found / len(times):.0f} studies/query")
    return Result(
        f"study search, SQLite index of {counts['instances']:,} instances "
        f"({counts['studies']:,} studies)", f"{name}, median of {QUERIES}", median,
        "ms", detail=f"p90 {p90:.2f} ms; first query {warm[0]:.1f} ms; "
                     f"{found / len(times):.0f} studies returned per query",
        target=f"< {target:.0f} ms" if target else "",
        met=median < target if target else None,
        extra={"p90_ms": p90, "first_ms": warm[0], "rows_per_query": found / len(times)},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--instances", type=int, default=1_000_000)
    args = parser.parse_args()
    n = 20_000 if args.smoke else args.instances
    print(format_table(measure(n)))


if __name__ == "__main__":
    main()
