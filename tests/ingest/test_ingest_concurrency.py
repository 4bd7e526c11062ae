"""Two ingests of overlapping folders at the same time, into the same project.

Counts stay exact and nothing is duplicated, on SQLite and on PostgreSQL: in two threads (each
with its own Archive, as two processes would have) and in two ``imagebank ingest`` processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
from imagebank.domain.model import IngestSummary
from imagebank.index.tables import Instance, Series, Study, Subject
from imagebank.services.archive import Archive

IMAGEBANK = Path(sys.executable).parent / "imagebank"
PATIENTS = 6
SLICES = 6


def _corpus(tmp_path: Path) -> tuple[Path, Path, int]:
    """Folders A (patients 0-3) and B (patients 2-5, same bytes, files in another order)."""
    a, b = tmp_path / "A", tmp_path / "B"
    for n in range(PATIENTS):
        spec = SeriesSpec(modality="CT" if n % 2 else "MR", slices=SLICES, rows=32, columns=32)
        blobs = [to_bytes(ds) for ds in make_study(SyntheticPatient.make(100 + n),
                                                   series=[spec])]
        for i, blob in enumerate(blobs):
            if n <= 3:
                (a / f"p{n}").mkdir(parents=True, exist_ok=True)
                (a / f"p{n}" / f"{i:03d}.dcm").write_bytes(blob)
            if n >= 2:
                # Reverse order in B, so the two ingests meet the shared files in other orders.
                (b / f"q{9 - n}").mkdir(parents=True, exist_ok=True)
                (b / f"q{9 - n}" / f"{SLICES - i:03d}.dcm").write_bytes(blob)
    return a, b, PATIENTS * SLICES


def _assert_exact(archive: Archive, project: str, instances: int) -> None:
    with archive.sessions.begin() as session:
        counts = {
            name: session.scalar(select(func.count()).select_from(model)
                                 .where(model.project_id == project))
            for name, model in (("subjects", Subject), ("studies", Study), ("series", Series),
                                ("instances", Instance))
        }
        distinct_sops = session.scalar(select(func.count(func.distinct(
            Instance.sop_instance_uid))).where(Instance.project_id == project))
        studies = session.execute(select(Study.id, Study.num_instances, Study.num_series,
                                         Study.size_bytes)
                                  .where(Study.project_id == project)).all()
        per_study = dict(session.execute(
            select(Instance.study_id, func.count()).group_by(Instance.study_id)).all())
        size_per_study = dict(session.execute(
            select(Instance.study_id, func.sum(Instance.size_bytes))
            .group_by(Instance.study_id)).all())
        series = session.execute(select(Series.id, Series.num_instances)
                                 .where(Series.project_id == project)).all()
        per_series = dict(session.execute(
            select(Instance.series_id, func.count()).group_by(Instance.series_id)).all())
        subjects = session.execute(select(Subject.num_studies)
                                   .where(Subject.project_id == project)).scalars().all()
    assert counts == {"subjects": PATIENTS, "studies": PATIENTS, "series": PATIENTS,
                      "instances": instances}
    assert distinct_sops == instances
    for study_id, num_instances, num_series, size in studies:
        assert num_instances == per_study[study_id] == SLICES
        assert num_series == 1
        assert size == size_per_study[study_id]
    for series_id, num_instances in series:
        assert num_instances == per_series[series_id]
    assert subjects == [1] * PATIENTS
    dicom_objects = list(archive.store.keys(f"{project}/dicom/"))
    assert len(dicom_objects) == instances
    report = archive.check()
    assert report.ok, report.as_dict()


def test_two_threads_overlapping_folders(tmp_path: Path, database_url: str) -> None:
    a, b, total = _corpus(tmp_path)
    data = tmp_path / "data"
    first = Archive.open(data, database_url=database_url, workers=1)
    second = Archive.open(data, database_url=database_url, workers=1)
    try:
        for round_ in range(3):
            project = f"c{round_}"
            first.create_project(project)
            barrier = threading.Barrier(2)
            results: dict[str, IngestSummary] = {}
            errors: list[BaseException] = []

            def run(name: str, archive: Archive, folder: Path, project: str = project,
                    barrier: threading.Barrier = barrier) -> None:
                try:
                    barrier.wait()
                    results[name] = archive.ingest([folder], project, batch_size=3)
                except BaseException as exc:  # reported below
                    errors.append(exc)

            threads = [threading.Thread(target=run, args=("a", first, a)),
                       threading.Thread(target=run, args=("b", second, b))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
            assert errors == []
            ra, rb = results["a"], results["b"]
            assert ra.total == rb.total == 24
            assert ra.stored + rb.stored == total
            assert ra.duplicates + rb.duplicates == 48 - total
            assert ra.conflicts == rb.conflicts == 0
            assert ra.quarantined == rb.quarantined == 0
            _assert_exact(first, project, total)
    finally:
        first.close()
        second.close()


def _cli(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([str(IMAGEBANK), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True)


def test_two_cli_processes_overlapping_folders(tmp_path: Path, database_url: str) -> None:
    a, b, total = _corpus(tmp_path)
    data = tmp_path / "data"
    env = {**os.environ, "IMAGEBANK_DATA": str(data), "IMAGEBANK_DATABASE_URL": database_url,
           "IMAGEBANK_BATCH_SIZE": "4"}
    created = subprocess.run([str(IMAGEBANK), "project", "create", "p"], check=False, env=env,
                             capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    procs = [_cli(["ingest", str(folder), "--project", "p", "--jsonl", "--workers", "1"], env)
             for folder in (a, b)]
    summaries: list[dict[str, Any]] = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
        lines = [json.loads(line) for line in out.splitlines() if line.strip()]
        assert lines[-1]["event"] == "summary"
        summaries.append(lines[-1])
    assert sum(s["stored"] for s in summaries) == total
    assert sum(s["duplicates"] for s in summaries) == 48 - total
    assert all(s["conflicts"] == 0 and s["quarantined"] == 0 for s in summaries)
    with Archive.open(data, database_url=database_url) as archive:
        _assert_exact(archive, "p", total)
